"""Measure the local classifier on requests it was not trained on: `make routes`.

Three measurements, each printed with route accuracy, the share of requests handled automatically (confidence at or
above the routing policy's `min_confidence`), the precision of those automatic routes and the calibration error:

- the held-out split of the packaged examples (a model trained on the other 80%);
- the cross-industry set `evals/datasets/cross_industry.jsonl`, written for measuring only and never trained on;
- the shared Bitext file (`../shared/datasets/bitext-support-routes.csv`), skipped when absent.

The external sets are classified by the packaged model trained on all packaged examples. The bars the local tier
must clear on unseen requests: automatic precision >= 0.95 while handling >= half of them automatically.
Run as `python -m triage.evals.route_check [--csv PATH] [--cross PATH]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from triage.evals.metrics import accuracy, macro_f1, per_label_scores
from triage.taxonomy import ROUTES, Route

__all__ = [
    "AUTOMATIC_PRECISION_BAR",
    "AUTOMATIC_SHARE_BAR",
    "accuracy",
    "format_confusion",
    "macro_f1",
    "main",
    "per_label_scores",
    "read_labelled_csv",
]

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bitext-support-routes.csv"
"""The external check file, in `../shared/` beside the project root (absent elsewhere: then it is skipped)."""
DEFAULT_CROSS = Path(__file__).resolve().parent / "datasets" / "cross_industry.jsonl"
AUTOMATIC_PRECISION_BAR = 0.95
AUTOMATIC_SHARE_BAR = 0.5


def format_confusion(expected: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> str:
    """Render a confusion matrix with gold labels as rows and predictions as columns.

    Args:
        expected: Gold labels.
        predicted: Predicted labels, same length.
        labels: Row and column order.

    Returns:
        The matrix as aligned text.
    """
    width = max(len(label) for label in labels) + 2
    lines = ["gold \\ pred".ljust(width) + "".join(label.rjust(width) for label in labels)]
    for gold in labels:
        cells = [sum(e == gold and p == pred for e, p in zip(expected, predicted, strict=True)) for pred in labels]
        lines.append(gold.ljust(width) + "".join(str(cell).rjust(width) for cell in cells))
    return "\n".join(lines)


def read_labelled_csv(path: Path) -> tuple[list[str], list[str], list[str]]:
    """Read texts, routes and intents from a CSV with the columns `text,route,intent`.

    Args:
        path: The CSV file.

    Returns:
        Texts, routes and intents, row by row.

    Raises:
        ValueError: A required column is missing.
    """
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"text", "route"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected text,route,intent.")
        rows = list(reader)
    return [row["text"] for row in rows], [row["route"] for row in rows], [row.get("intent") or "" for row in rows]


def _read_jsonl(path: Path) -> tuple[list[str], list[str], list[str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows], [r["route"] for r in rows], [r.get("intent") or "" for r in rows]


def _measure(name: str, classifier: Any, texts: list[str], routes: list[str], threshold: float) -> dict[str, Any]:
    from triage.models.local import Example
    from triage.models.training import held_out_figures

    started = time.perf_counter()
    figures = held_out_figures(
        classifier,
        [Example(text=t, route=_route(r)) for t, r in zip(texts, routes, strict=True)],
        threshold,
    )
    per_ticket_ms = (time.perf_counter() - started) * 1000 / max(1, len(texts))
    share, precision = figures["automatic_share"], figures["automatic_precision"]
    passed = share >= AUTOMATIC_SHARE_BAR and (precision or 0.0) >= AUTOMATIC_PRECISION_BAR
    print(f"\n== {name}: {len(texts)} requests ({per_ticket_ms:.2f} ms per ticket) ==")
    print(f"route accuracy            {figures['accuracy']:.3f} (macro F1 {figures['macro_f1']:.3f})")
    print(f"automatic share           {share:.3f} (confidence >= {threshold:.2f})")
    print(f"automatic precision       {precision if precision is None else f'{precision:.3f}'}")
    print(f"calibration error (ECE)   {figures['expected_calibration_error']:.3f}")
    print(
        f"bars (precision >= {AUTOMATIC_PRECISION_BAR}, share >= {AUTOMATIC_SHARE_BAR}): "
        + ("PASS" if passed else "FAIL")
    )
    print(f"{'route':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for label, scores in figures["per_route"].items():
        print(
            f"{label:<12}{scores['precision']:>10.3f}{scores['recall']:>10.3f}{scores['f1']:>10.3f}"
            f"{scores['support']:>10}"
        )
    return {**figures, "passed": passed}


def _route(label: str) -> Route:
    for route in ROUTES:
        if route == label:
            return route
    raise ValueError(f"unknown route {label!r}; expected one of {', '.join(ROUTES)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Train on the packaged split and on all packaged examples, then measure held-out and external sets.

    Args:
        argv: Command-line arguments (defaults to `sys.argv[1:]`).

    Returns:
        The process exit code: 0, or 1 when `--strict` is given and a set misses the bars.
    """
    from triage.models.local import LocalClassifier, load_examples, split_examples
    from triage.policies import load_policy_bundle

    parser = argparse.ArgumentParser(prog="python -m triage.evals.route_check", description=__doc__)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="external CSV with text,route,intent")
    parser.add_argument("--cross", type=Path, default=DEFAULT_CROSS, help="cross-industry JSONL (measuring only)")
    parser.add_argument("--confusion", action="store_true", help="print confusion matrices of the external sets")
    parser.add_argument("--strict", action="store_true", help="exit 1 when an unseen set misses the bars")
    args = parser.parse_args(argv)
    threshold = load_policy_bundle().support.routing.min_confidence

    examples = load_examples()
    train, test = split_examples(examples)
    started = time.perf_counter()
    split_model = LocalClassifier.train(train)
    print(f"trained on {len(train)} examples in {time.perf_counter() - started:.2f}s; held-out: {len(test)} examples")
    results = {
        "held-out": _measure("held-out split", split_model, [e.text for e in test], [e.route for e in test], threshold)
    }

    started = time.perf_counter()
    model = LocalClassifier.train(examples)
    seconds = time.perf_counter() - started
    print(f"\npackaged model {model.fingerprint}: {len(examples)} examples, trained in {seconds:.2f}s")
    external: list[tuple[str, Path, tuple[list[str], list[str], list[str]] | None]] = []
    cross_path: Path = args.cross
    external.append(("cross-industry", cross_path, _read_jsonl(cross_path) if cross_path.is_file() else None))
    csv_path: Path = args.csv
    external.append(("bitext", csv_path, read_labelled_csv(csv_path) if csv_path.is_file() else None))
    for name, path, data in external:
        if data is None:
            print(f"\n{name}: {path} not found; skipping it.")
            continue
        texts, routes, _ = data
        results[name] = _measure(f"{name} ({path.name})", model, texts, routes, threshold)
        if args.confusion:
            predicted = [p.route for p in model.predict_many(texts)]
            labels = [route for route in ROUTES if route in set(routes) | set(predicted)]
            print("confusion matrix:\n" + format_confusion(routes, predicted, labels))
    failed = [name for name, figures in results.items() if name != "held-out" and not figures["passed"]]
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
