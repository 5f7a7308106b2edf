"""Give the run its terminal status."""

from __future__ import annotations

from typing import Any

from triage.state import State


async def finish(state: State) -> dict[str, Any]:
    """Keep a status set earlier (a failed validation); otherwise escalated or completed by the route taken."""
    if "status" in state:
        return {}
    if state.get("route") == "escalation":
        return {"status": "escalated", "status_reason": state.get("route_reason", "handed to a person")}
    outcome = state.get("outcome", "resolved")
    reasons = {
        "resolved": "answered and acted on",
        "needs_info": "asked the customer for what is missing",
        "handed_off": "answered and handed to a team queue",
    }
    return {"status": "completed", "status_reason": reasons.get(outcome, outcome)}
