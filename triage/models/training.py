"""Teach the local tier a team's own tickets: read labelled data, check it, hold out a split, train, measure, activate.

`triage train DATA` calls `train_and_activate`. The data is a CSV or JSON Lines file with a text column, a route
column and optionally an intent column. It extends the packaged examples unless `replace` is set. Everything is
checked before any training starts, and the active model changes only after the new one is written in full.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triage.errors import TriageError
from triage.models.local import Example, LocalClassifier, load_examples, split_examples
from triage.taxonomy import INTENTS, ROUTE_OF_INTENT, ROUTES, Route

__all__ = [
    "MIN_EXAMPLES_PER_INTENT",
    "MIN_EXAMPLES_PER_ROUTE",
    "TrainingDataError",
    "TrainingReport",
    "held_out_figures",
    "read_labelled_file",
    "train_and_activate",
]

MIN_EXAMPLES_PER_ROUTE = 5
"""A route with fewer examples than this (packaged ones included) cannot be learned or measured."""
MIN_EXAMPLES_PER_INTENT = 3
HOLD_OUT_FRACTION = 0.2
_MAX_LISTED = 5


class TrainingDataError(TriageError):
    """Labelled data that cannot be trained on; the message names the file, the rows and the fix."""


@dataclass(frozen=True)
class TrainingReport:
    """What one `triage train` produced.

    Attributes:
        fingerprint: The new active model's fingerprint.
        data_fingerprint: Hash of the examples it was trained on.
        examples: How many examples it was trained on (packaged ones included unless replaced).
        added: How many came from the file.
        held_out: Figures on the stratified hold-out (see `held_out_figures`).
        seconds: Wall time of the whole training.
        artifact: Where the model was written.
    """

    fingerprint: str
    data_fingerprint: str
    examples: int
    added: int
    held_out: dict[str, Any]
    seconds: float
    artifact: str


def read_labelled_file(
    path: Path, *, text_col: str = "text", route_col: str = "route", intent_col: str | None = None
) -> list[Example]:
    """Read and check labelled examples from a CSV or JSONL file.

    Args:
        path: A `.csv` file with a header row, or a `.jsonl`/`.json` file with one object per line.
        text_col: The column with the ticket text.
        route_col: The column with the route (one of the routes the policy routes to).
        intent_col: The column with the intent; when None, the column `intent` is used if the file has one.

    Returns:
        The examples in file order.

    Raises:
        TrainingDataError: the file is missing, is not what its extension says, lacks a column, or has empty
            texts, unknown routes or intents that do not belong to their route (rows are named).
    """
    rows, columns = _read_rows(path)
    wanted_intent = intent_col or ("intent" if "intent" in columns else None)
    missing = [c for c in (text_col, route_col, wanted_intent) if c is not None and c not in columns]
    if missing:
        raise TrainingDataError(
            f"{path}: no column {', '.join(map(repr, missing))}; the columns are {', '.join(map(repr, columns))}. "
            "Name yours with --text-col, --route-col and --intent-col"
        )
    problems: dict[str, list[str]] = {"empty": [], "route": [], "intent": []}
    examples: list[Example] = []
    for where, row in rows:
        text = row.get(text_col)
        route = str(row.get(route_col) or "").strip()
        intent = str(row.get(wanted_intent) or "").strip() if wanted_intent else ""
        if not isinstance(text, str) or not text.strip():
            problems["empty"].append(where)
            continue
        if route not in ROUTES:
            problems["route"].append(f"{where} ({route!r})")
            continue
        checked: Route = route
        if intent and intent not in INTENTS[checked]:
            owner = ROUTE_OF_INTENT.get(intent)
            problems["intent"].append(f"{where} ({intent!r}" + (f" belongs to {owner})" if owner else " is unknown)"))
            continue
        examples.append(Example(text=text.strip(), route=checked, intent=intent or None))
    messages = []
    if problems["empty"]:
        messages.append(f"empty {text_col!r} on {_listing(problems['empty'])}")
    if problems["route"]:
        messages.append(f"unknown route on {_listing(problems['route'])}; the policy routes to {', '.join(ROUTES)}")
    if problems["intent"]:
        messages.append(f"intent not of its route on {_listing(problems['intent'])}")
    if messages:
        raise TrainingDataError(f"{path}: " + "; ".join(messages) + ". Fix or remove those rows")
    if not examples:
        raise TrainingDataError(f"{path}: no labelled rows")
    return examples


def _listing(places: list[str]) -> str:
    shown = ", ".join(places[:_MAX_LISTED])
    return shown + (f" and {len(places) - _MAX_LISTED} more" if len(places) > _MAX_LISTED else "")


def _read_rows(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json", ".ndjson"):
        raise TrainingDataError(f"{path}: expected a .csv or .jsonl file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TrainingDataError(f"{path}: no such file") from None
    except OSError as exc:
        raise TrainingDataError(f"{path}: cannot read ({exc.strerror})") from None
    kind = "CSV" if suffix == ".csv" else "JSON Lines"
    if b"\0" in data[:4096]:
        raise TrainingDataError(f"{path}: this is a binary file, not {kind}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TrainingDataError(f"{path}: not UTF-8 text, so not {kind}; save it as UTF-8") from None
    return _csv_rows(path, text) if suffix == ".csv" else _jsonl_rows(path, text)


def _csv_rows(path: Path, text: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    if text.lstrip().startswith(("{", "[")):
        raise TrainingDataError(f"{path}: this looks like JSON, not CSV; name it .jsonl or convert it")
    reader = csv.DictReader(io.StringIO(text))
    columns = [c for c in (reader.fieldnames or []) if c is not None]
    if not columns:
        raise TrainingDataError(f"{path}: empty file; expected a CSV header row such as text,route,intent")
    try:
        rows = [(f"line {reader.line_num}", dict(row)) for row in reader]
    except csv.Error as exc:
        raise TrainingDataError(f"{path}: not valid CSV ({exc})") from None
    if len(columns) == 1 and rows and all(None in row for _, row in rows[:20]):
        raise TrainingDataError(f"{path}: the rows have more fields than the header; is this really CSV?")
    return rows, columns


def _jsonl_rows(path: Path, text: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    rows: list[tuple[str, dict[str, Any]]] = []
    columns: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            hint = " (it looks like CSV: name it .csv)" if number == 1 and "," in line else ""
            raise TrainingDataError(f"{path}: line {number} is not JSON, so this is not JSON Lines{hint}") from None
        if not isinstance(data, dict):
            raise TrainingDataError(f"{path}: line {number} is not a JSON object")
        columns.update(dict.fromkeys(data))
        rows.append((f"line {number}", data))
    if not rows:
        raise TrainingDataError(f"{path}: empty file; expected one JSON object per line")
    return rows, list(columns)


def check_class_sizes(examples: Sequence[Example], source: str) -> None:
    """Refuse routes or intents with too few examples to learn and measure.

    Raises:
        TrainingDataError: naming each class and its count.
    """
    routes = Counter(example.route for example in examples)
    intents = Counter(example.intent for example in examples if example.intent)
    small = [f"route {r!r} has {n}" for r, n in sorted(routes.items()) if n < MIN_EXAMPLES_PER_ROUTE]
    small += [f"intent {i!r} has {n}" for i, n in sorted(intents.items()) if n < MIN_EXAMPLES_PER_INTENT]
    if small:
        raise TrainingDataError(
            f"{source}: too few examples: {'; '.join(small)} (at least {MIN_EXAMPLES_PER_ROUTE} per route and "
            f"{MIN_EXAMPLES_PER_INTENT} per intent). Add examples or relabel those rows"
        )
    if len(routes) < 2:
        raise TrainingDataError(f"{source}: examples of at least two routes are needed, found {', '.join(routes)}")


def held_out_figures(classifier: LocalClassifier, test: Sequence[Example], threshold: float) -> dict[str, Any]:
    """Measure a classifier on examples it was not trained on.

    Args:
        classifier: The trained classifier.
        test: Held-out examples.
        threshold: The routing policy's `min_confidence`: at or above it a route is automatic.

    Returns:
        `examples`, `accuracy`, `macro_f1`, `intent_accuracy` (None without intents), `per_route`
        ({route: {precision, recall, f1, support}}), `threshold`, `automatic_share`, `automatic_precision` (route
        accuracy of the automatic routes; None when none is automatic) and `expected_calibration_error`.
    """
    from triage.evals.metrics import accuracy, macro_f1, per_label_scores

    predictions = classifier.predict_many([example.text for example in test])
    gold = [example.route for example in test]
    predicted = [prediction.route for prediction in predictions]
    labels = [route for route in ROUTES if route in set(gold) | set(predicted)]
    with_intent = [(e, p) for e, p in zip(test, predictions, strict=True) if e.intent]
    automatic = [(e, p) for e, p in zip(test, predictions, strict=True) if p.confidence >= threshold]
    return {
        "examples": len(test),
        "accuracy": round(accuracy(gold, predicted), 4),
        "macro_f1": round(macro_f1(gold, predicted, labels), 4),
        "intent_accuracy": round(sum(e.intent == p.intent for e, p in with_intent) / len(with_intent), 4)
        if with_intent
        else None,
        "per_route": {
            label: {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "support": s}
            for label, (p, r, f, s) in per_label_scores(gold, predicted, labels).items()
        },
        "threshold": threshold,
        "automatic_share": round(len(automatic) / len(test), 4) if test else 0.0,
        "automatic_precision": round(sum(e.route == p.route for e, p in automatic) / len(automatic), 4)
        if automatic
        else None,
        "expected_calibration_error": round(_calibration_error(gold, predictions), 4),
    }


def _calibration_error(gold: Sequence[str], predictions: Sequence[Any], bins: int = 10) -> float:
    """Mean gap between confidence and accuracy over equal-width confidence bins, weighted by bin size."""
    total = 0.0
    for index in range(bins):
        low, high = index / bins, (index + 1) / bins
        members = [
            (g, p)
            for g, p in zip(gold, predictions, strict=True)
            if low <= p.confidence < high or (index == bins - 1 and p.confidence == 1.0)
        ]
        if members:
            right = sum(g == p.route for g, p in members) / len(members)
            mean = sum(p.confidence for _, p in members) / len(members)
            total += len(members) * abs(right - mean)
    return total / len(gold) if gold else 0.0


def train_and_activate(
    data: Path,
    *,
    models_dir: Path,
    cache_dir: Path,
    threshold: float,
    text_col: str = "text",
    route_col: str = "route",
    intent_col: str | None = None,
    replace: bool = False,
    progress: Callable[[str, float], None] | None = None,
) -> TrainingReport:
    """Train the local tier on a labelled file and make the result the active model of the app home.

    The examples are checked first; then a model trained on a stratified 80% is measured on the other 20%, and
    the model that is activated is trained on everything. The previous model stays active until the new one is
    completely written.

    Args:
        data: Labelled CSV or JSONL.
        models_dir: The app home's model folder.
        cache_dir: Where the packaged model is cached (not changed here).
        threshold: The routing policy's `min_confidence`, for the automatic share and precision.
        text_col: Text column.
        route_col: Route column.
        intent_col: Intent column (default: `intent` when present).
        replace: Train on the file alone instead of the packaged examples plus the file.
        progress: Told each step and the share of the work done before it (0..1).

    Returns:
        The report.

    Raises:
        TrainingDataError: the data cannot be trained on; nothing was changed.
    """
    from triage.models.registry import ModelRegistry

    started = time.perf_counter()
    tell = progress or (lambda _step, _done: None)
    tell("reading and checking the data", 0.0)
    added = read_labelled_file(data, text_col=text_col, route_col=route_col, intent_col=intent_col)
    examples = added if replace else [*load_examples(), *added]
    check_class_sizes(examples, str(data))
    train_part, test_part = split_examples(examples, test_fraction=HOLD_OUT_FRACTION)
    steps = 2 * (4 + 1)  # calibration folds and a final fit, for the held-out model and the final one
    done = [0]

    def step(name: str, phase: str) -> None:
        tell(f"{phase}: {name}", min(done[0] / steps, 0.99))
        done[0] += 1

    held_model = LocalClassifier.train(train_part, progress=lambda name: step(name, "held-out model"))
    tell("measuring on the held-out split", done[0] / steps)
    figures = held_out_figures(held_model, test_part, threshold)
    classifier = LocalClassifier.train(examples, progress=lambda name: step(name, "final model"))
    tell("writing the model", 0.99)
    seconds = round(time.perf_counter() - started, 2)
    artifact = ModelRegistry(models_dir, cache_dir).activate(
        classifier,
        {
            "source_file": str(data),
            "replace": replace,
            "added_examples": len(added),
            "held_out": figures,
            "training_seconds": seconds,
        },
    )
    tell("done", 1.0)
    return TrainingReport(
        fingerprint=classifier.fingerprint,
        data_fingerprint=classifier.data_fingerprint,
        examples=len(examples),
        added=len(added),
        held_out=figures,
        seconds=seconds,
        artifact=str(artifact),
    )


def packaged_held_out(cache_dir: Path, threshold: float) -> dict[str, Any]:
    """Held-out figures of the packaged examples' split, computed once and cached beside the packaged model."""
    from triage.models.local import model_fingerprint

    examples = load_examples()
    path = cache_dir / f"{model_fingerprint(examples)}.held-out-{threshold:.3f}.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass
    train_part, test_part = split_examples(examples, test_fraction=HOLD_OUT_FRACTION)
    figures = held_out_figures(LocalClassifier.train(train_part), test_part, threshold)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return figures
