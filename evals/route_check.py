"""Measure the local classifier: held-out split of the project's own data, then an optional external CSV.

Run as `python -m triage.evals.route_check [--csv PATH]`. The external CSV needs the columns `text,route,intent`;
it is only read, never trained on.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Sequence
from pathlib import Path

from triage.evals.metrics import accuracy, macro_f1, per_label_scores
from triage.taxonomy import ROUTES

__all__ = ["accuracy", "format_confusion", "macro_f1", "main", "per_label_scores", "read_labelled_csv"]

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bitext-support-routes.csv"
"""The external check file, in `../shared/` beside the project root (absent elsewhere: then it is skipped)."""
CONFIDENCE_THRESHOLD = 0.5


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
    return [row["text"] for row in rows], [row["route"] for row in rows], [row.get("intent", "") for row in rows]


def main(argv: Sequence[str] | None = None) -> int:
    """Train on the project's split, report held-out and external scores.

    Args:
        argv: Command-line arguments (defaults to `sys.argv[1:]`).

    Returns:
        The process exit code.
    """
    from triage.models.local import LocalClassifier, load_examples, split_examples

    parser = argparse.ArgumentParser(prog="python -m triage.evals.route_check", description=__doc__)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="external CSV with text,route,intent")
    args = parser.parse_args(argv)

    examples = load_examples()
    train, test = split_examples(examples)
    started = time.perf_counter()
    classifier = LocalClassifier.train(train)
    train_seconds = time.perf_counter() - started
    print(f"trained on {len(train)} examples in {train_seconds:.2f}s; held-out: {len(test)} examples")

    predictions = classifier.predict_many([example.text for example in test])
    gold_routes = [example.route for example in test]
    predicted_routes = [prediction.route for prediction in predictions]
    print(f"held-out route accuracy:  {accuracy(gold_routes, predicted_routes):.3f}")
    print(f"held-out route macro-F1:  {macro_f1(gold_routes, predicted_routes, ROUTES):.3f}")
    print(f"held-out intent accuracy: {accuracy([e.intent for e in test], [p.intent for p in predictions]):.3f}")

    csv_path: Path = args.csv
    if not csv_path.is_file():
        print(f"external CSV {csv_path} not found; skipping the external check.")
        return 0
    texts, routes, _ = read_labelled_csv(csv_path)
    started = time.perf_counter()
    external = classifier.predict_many(texts)
    predict_seconds = time.perf_counter() - started
    predicted = [prediction.route for prediction in external]
    labels = [route for route in ROUTES if route in set(routes) | set(predicted)]
    print(f"\nexternal: {csv_path} ({len(texts)} rows, predicted in {predict_seconds:.2f}s)")
    print(f"route accuracy: {accuracy(routes, predicted):.3f}")
    print(f"{'route':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for label, (precision, recall, f1, support) in per_label_scores(routes, predicted, labels).items():
        print(f"{label:<12}{precision:>10.3f}{recall:>10.3f}{f1:>10.3f}{support:>10}")
    print("\nconfusion matrix:")
    print(format_confusion(routes, predicted, labels))
    confident = [
        (gold, prediction.route)
        for gold, prediction in zip(routes, external, strict=True)
        if prediction.confidence >= CONFIDENCE_THRESHOLD
    ]
    below = 1 - len(confident) / len(texts) if texts else 0.0
    print(f"\nbelow confidence {CONFIDENCE_THRESHOLD}: {below:.3f} of rows")
    print(
        f"route accuracy at confidence >= {CONFIDENCE_THRESHOLD}: "
        f"{accuracy([g for g, _ in confident], [p for _, p in confident]):.3f} ({len(confident)} rows)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
