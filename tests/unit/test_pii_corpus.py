"""The data boundary, measured: recall and precision per kind of secret and personal data on our own corpus.

`pytest -s tests/unit/test_pii_corpus.py` prints the table. The corpus (tests/data/pii_corpus.jsonl) is written by
us: formats from several countries, and negatives (order numbers, amounts, payment dates) that must stay.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from triage.policies.pii import PII_KINDS, redact, restore

CORPUS_FILE = Path(__file__).parent.parent / "data" / "pii_corpus.jsonl"
CORPUS = [json.loads(line) for line in CORPUS_FILE.read_text().splitlines()]


def _overlaps(a: str, b: str) -> bool:
    return a in b or b in a


def measure(corpus: list[dict[str, Any]]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Recall and precision per kind, and a line for every miss, mislabel and false alarm."""
    hits: Counter[str] = Counter()
    expected: Counter[str] = Counter()
    found: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    problems: list[str] = []
    for case in corpus:
        redaction = redact(case["text"])
        placeholders = [(p[1:].rsplit("_", 1)[0], value) for p, value in redaction.values.items()]
        for kind, value in case["expect"]:
            expected[kind] += 1
            labelled = any(k == kind and _overlaps(value, original) for k, original in placeholders)
            if labelled and value not in redaction.text:
                hits[kind] += 1
            else:
                problems.append(f"missed {kind} {value!r} in {case['text']!r} -> {redaction.text!r}")
        for kind, original in placeholders:
            found[kind] += 1
            if any(k == kind and _overlaps(v, original) for k, v in case["expect"]):
                correct[kind] += 1
            else:
                problems.append(f"false {kind} {original!r} in {case['text']!r}")
        for value in case.get("keep", []):
            if value not in redaction.text:
                problems.append(f"negative {value!r} was redacted in {case['text']!r} -> {redaction.text!r}")
    table = {
        kind: {
            "cases": expected[kind],
            "recall": hits[kind] / expected[kind] if expected[kind] else 1.0,
            "precision": correct[kind] / found[kind] if found[kind] else 1.0,
        }
        for kind in PII_KINDS
    }
    return table, problems


def test_the_corpus_is_large_and_covers_every_kind() -> None:
    assert len(CORPUS) >= 150
    kinds = Counter(kind for case in CORPUS for kind, _ in case["expect"])
    assert set(kinds) == set(PII_KINDS)
    assert sum(1 for case in CORPUS if not case["expect"]) >= 30, "negatives that must stay"


def test_recall_and_precision_per_kind() -> None:
    table, problems = measure(CORPUS)
    print("\nkind             cases  recall  precision")
    for kind, row in table.items():
        print(f"{kind:<16} {row['cases']:>5}  {row['recall']:>6.2f}  {row['precision']:>9.2f}")
    print("\n".join(problems))
    assert table["SECRET"]["recall"] == 1.0, "a secret must never leave"
    for kind, row in table.items():
        assert row["recall"] >= 0.9, f"{kind} recall {row['recall']:.2f}"
        assert row["precision"] >= 0.9, f"{kind} precision {row['precision']:.2f}"
    assert not [p for p in problems if p.startswith("negative")], "order numbers, amounts and dates stay"


@pytest.mark.parametrize("case", [c for c in CORPUS if c["expect"]][::7], ids=lambda c: c["expect"][0][0])
def test_restore_puts_personal_data_back_but_never_a_secret(case: dict[str, Any]) -> None:
    redaction = redact(case["text"])
    restored = restore(redaction.text, redaction)
    for kind, value in case["expect"]:
        if kind == "SECRET":
            assert value not in restored
        else:
            assert value in restored
