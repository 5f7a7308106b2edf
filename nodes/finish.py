"""Give the run its terminal status, and close the conversation's turn."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, meter_of
from triage.policies.conversation import MAX_TURNS, turn_record
from triage.state import State


async def finish(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Keep a status set earlier (a failed validation); otherwise escalated or completed by the route taken.

    Also records what the run spent on models, and the turn's record in the conversation (what the next turn
    reads: the message, what was filed, how it was answered).
    """
    meter = meter_of(runtime)
    update: dict[str, Any] = {"usage": meter.spent()} if meter else {}
    if state.get("status"):
        return update
    if state.get("route") == "escalation":
        update.update(status="escalated", status_reason=state.get("route_reason", "handed to a person"))
    else:
        outcome = state.get("outcome") or "resolved"
        reasons = {
            "resolved": "answered and acted on",
            "needs_info": "asked the customer for what is missing",
            "handed_off": "answered and handed to a team queue",
        }
        update.update(status="completed", status_reason=reasons.get(outcome, outcome))
    conversation = list(state.get("conversation", []))
    conversation.append(turn_record(state.get("turn", 1), {**state, **update}))
    return {**update, "conversation": conversation[-MAX_TURNS:]}
