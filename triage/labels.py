"""Labels of past threads: people's corrections (`triage relabel`) and the decisions that stand, for `triage train`.

A thread's label is, in order of preference:

1. `person`: the latest correction recorded with `relabel` (kept in the audit trail as a `relabelled` event);
2. `approver`: an approver decided on the thread's action (approved, edited or rejected it), so a person has looked
   at the ticket under its route;
3. `model`: the classifier's route stood (the ticket was not handed on for low confidence, a budget or a signal
   that overrode the route) and its confidence reached the policy's threshold.

Threads handed on without a confident label are left out and counted, so that people can label them. The text
is exported with personal data replaced by placeholders, as the model sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from triage.errors import ThreadNotFoundError, TriageError
from triage.policies.pii import redact
from triage.taxonomy import INTENTS, ROUTES

__all__ = ["APPROVER_EVENTS", "RELABEL_EVENT", "InvalidLabelError", "check_label", "thread_label"]

RELABEL_EVENT = "relabelled"
APPROVER_EVENTS = frozenset({"approved", "edited", "rejected"})


class InvalidLabelError(TriageError):
    """A correction names a route or intent that triage does not have."""


def check_label(route: str, intent: str | None) -> tuple[str, str | None]:
    """Validate a person's label.

    Raises:
        InvalidLabelError: unknown route, or an intent that is not one of the route's.
    """
    if route not in ROUTES:
        raise InvalidLabelError(f"unknown route {route!r}; use one of {', '.join(ROUTES)}")
    checked = next(r for r in ROUTES if r == route)
    if intent is not None and intent not in INTENTS[checked]:
        raise InvalidLabelError(
            f"intent {intent!r} is not an intent of route {route!r}; use one of {', '.join(INTENTS[checked])}"
        )
    return route, intent


def ticket_text(values: dict[str, Any]) -> str:
    """The text the classifier read (subject and body), with personal data replaced by placeholders."""
    ticket = values.get("ticket") or {}
    return redact(f"{ticket.get('subject', '')}\n{ticket.get('body', '')}".strip()).text


def thread_label(
    thread_id: str, values: dict[str, Any], trail: Sequence[dict[str, Any]], threshold: float
) -> dict[str, Any] | None:
    """The label a thread's checkpointed state and audit trail support, or None when it has no trustworthy one.

    Args:
        thread_id: The thread.
        values: The thread's latest state values.
        trail: Its audit lines, oldest first.
        threshold: The routing policy's `min_confidence`.

    Raises:
        ThreadNotFoundError: `values` is empty.
    """
    if not values:
        raise ThreadNotFoundError.named(thread_id)
    text = ticket_text(values)
    if not text:
        return None
    corrections = [line for line in trail if line["event"] == RELABEL_EVENT]
    if corrections:
        details = corrections[-1]["details"]
        return _label(text, details["route"], details.get("intent"), "person", thread_id)
    classification = values.get("classification") or {}
    predicted = classification.get("route")
    if not predicted or values.get("route") != predicted:
        return None
    if any(line["event"] in APPROVER_EVENTS for line in trail):
        return _label(text, predicted, classification.get("intent"), "approver", thread_id)
    if float(classification.get("confidence") or 0.0) >= threshold and not values.get("budget_exceeded"):
        return _label(text, predicted, classification.get("intent"), "model", thread_id)
    return None


def _label(text: str, route: str, intent: str | None, source: str, thread_id: str) -> dict[str, Any]:
    return {"text": text, "route": route, "intent": intent, "source": source, "thread_id": thread_id}
