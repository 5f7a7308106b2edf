"""Which label a past thread gives `export-labels`: a person's correction, an approver's review, a sure decision."""

from __future__ import annotations

from typing import Any

import pytest

from triage.errors import ThreadNotFoundError
from triage.labels import InvalidLabelError, check_label, thread_label


def state(route: str = "billing", predicted: str = "billing", confidence: float = 0.95) -> dict[str, Any]:
    return {
        "ticket": {"subject": "Charged twice", "body": "Mail me at jane@example.com", "customer_id": None},
        "route": route,
        "classification": {"route": predicted, "intent": "duplicate_charge", "confidence": confidence},
    }


def audit(event: str, **details: Any) -> dict[str, Any]:
    return {"event": event, "actor": "sam", "details": details}


def test_a_persons_correction_wins_and_the_latest_one_counts() -> None:
    trail = [
        audit("approved"),
        audit("relabelled", route="account", intent="email_change"),
        audit("relabelled", route="general", intent=None),
    ]
    label = thread_label("t1", state(), trail, 0.8)
    assert label is not None and (label["route"], label["intent"], label["source"]) == ("general", None, "person")


def test_an_approver_review_beats_the_model_even_below_the_threshold() -> None:
    label = thread_label("t1", state(confidence=0.5), [audit("edited")], 0.8)
    assert label is not None and label["source"] == "approver" and label["route"] == "billing"


@pytest.mark.parametrize(
    ("values", "labelled"),
    [
        (state(), True),
        (state(confidence=0.79), False),
        (state(route="escalation", predicted="billing"), False),
        ({**state(), "budget_exceeded": "max_steps"}, False),
    ],
)
def test_only_sure_decisions_that_stood_are_exported(values: dict[str, Any], labelled: bool) -> None:
    label = thread_label("t1", values, [], 0.8)
    assert (label is not None) == labelled
    if label is not None:
        assert label["source"] == "model" and "jane@example.com" not in label["text"]


def test_missing_thread_and_bad_labels_are_refused() -> None:
    with pytest.raises(ThreadNotFoundError):
        thread_label("nope", {}, [], 0.8)
    with pytest.raises(InvalidLabelError, match="unknown route 'sales'"):
        check_label("sales", None)
    with pytest.raises(InvalidLabelError, match="not an intent of route 'billing'"):
        check_label("billing", "outage")
    assert check_label("account", "email_change") == ("account", "email_change")
