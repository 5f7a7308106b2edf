"""Classify the ticket: route, intent, urgency, sentiment and confidence (the model tier decides)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, services_of
from triage.state import State


async def classify(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask the model tier to read the ticket. Read-only: no tools."""
    services = await services_of(runtime)
    ticket = state["ticket"]
    classification = await services.models.classify(f"{ticket['subject']}\n{ticket['body']}".strip())
    return {"classification": classification}
