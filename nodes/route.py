"""Route the classified ticket to a specialist (the routing policy decides)."""

from __future__ import annotations

from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

from triage.context import Context, services_of
from triage.policies.routing import decide_route
from triage.state import State


async def route(
    state: State, runtime: Runtime[Context]
) -> Command[Literal["billing", "technical", "account", "general", "escalation"]]:
    """Send the ticket to its specialist, or to escalation on a signal, an angry customer or low confidence."""
    services = await services_of(runtime)
    classification = state["classification"]
    decision = decide_route(
        predicted=classification["route"],
        confidence=classification["confidence"],
        signals=frozenset(classification["signals"]),
        sentiment=classification["sentiment"],
        policy=services.policy.support,
    )
    return Command(goto=decision.route, update={"route": decision.route, "route_reason": decision.reason})
