"""Give the run its terminal status."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, meter_of
from triage.state import State


async def finish(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Keep a status set earlier (a failed validation); otherwise escalated or completed by the route taken.

    Also records what the run spent on models.
    """
    meter = meter_of(runtime)
    spent = {"usage": meter.spent()} if meter else {}
    if "status" in state:
        return spent
    if state.get("route") == "escalation":
        return {**spent, "status": "escalated", "status_reason": state.get("route_reason", "handed to a person")}
    outcome = state.get("outcome", "resolved")
    reasons = {
        "resolved": "answered and acted on",
        "needs_info": "asked the customer for what is missing",
        "handed_off": "answered and handed to a team queue",
    }
    return {**spent, "status": "completed", "status_reason": reasons.get(outcome, outcome)}
