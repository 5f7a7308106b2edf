"""Route the classified ticket to a specialist (the routing policy decides)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from langgraph.config import get_config
from langgraph.runtime import Runtime
from langgraph.types import Command

from triage.context import Context, meter_of, services_of
from triage.nodes.common import ticket_text
from triage.policies.conversation import reopen_reason
from triage.policies.routing import decide_route
from triage.state import State


async def route(
    state: State, runtime: Runtime[Context]
) -> Command[Literal["billing", "technical", "account", "general", "escalation"]]:
    """Send the ticket to its specialist, or to escalation on a signal, an angry customer or low confidence."""
    services = await services_of(runtime)
    classification = state["classification"]
    meter = meter_of(runtime)
    steps = _steps_taken() - state.get("turn_step", 0)
    over_budget = state.get("budget_exceeded") or (meter.exceeded(steps=steps) if meter else None)
    if over_budget:
        return Command(
            goto="escalation",
            update={"route": "escalation", "route_reason": f"budget: {over_budget}", "budget_exceeded": over_budget},
        )
    reopened = reopen_reason(ticket_text(state), state.get("conversation", []))
    if reopened is not None:
        return Command(goto="escalation", update={"route": "escalation", "route_reason": reopened})
    decision = decide_route(
        predicted=classification["route"],
        confidence=classification["confidence"],
        signals=frozenset(classification["signals"]),
        sentiment=classification["sentiment"],
        policy=services.policy.support,
    )
    return Command(goto=decision.route, update={"route": decision.route, "route_reason": decision.reason})


FALL_BACK_OUTCOMES = ("policy_violation", "held_for_person")
"""Specialist outcomes that hand the ticket to a person instead of going on to approvals."""


def continue_unless_refused(following: str) -> Callable[[Mapping[str, Any]], Awaitable[str]]:
    """Inside a specialist: go on to `following`, or stop once a tool call was refused."""

    async def decide(state: Mapping[str, Any]) -> str:
        return "__end__" if state.get("outcome") in FALL_BACK_OUTCOMES else following

    return decide


async def after_specialist(state: State) -> Literal["approve", "fall_back"]:
    """Go on to approvals (and effects), or fall back to escalation when the specialist was refused a tool."""
    return "fall_back" if state.get("outcome") in FALL_BACK_OUTCOMES else "approve"


async def after_execute(state: State) -> Literal["account_change", "compose"]:
    """Carry out an approved plan change or account closure step by step, or go on to the reply."""
    from triage.policies.account import SAGA_KINDS

    wanted = any(action["kind"] in SAGA_KINDS for action in state.get("proposed_actions", []))
    return "account_change" if wanted and state.get("rejection") is None else "compose"


async def fall_back(state: State) -> dict[str, Any]:
    """Hand a ticket to a person, saying why: its specialist hit the permission policy, or held back a write."""
    if state.get("outcome") == "held_for_person":
        return {"route": "escalation", "route_reason": state.get("findings", {}).get("held", "held for a person")}
    refused = "; ".join(f"{v['node']} called {v['tool']} without scope {v['scope']}" for v in state["violations"])
    return {"route": "escalation", "route_reason": f"policy violation: {refused}"}


def _steps_taken() -> int:
    """Coordinator steps so far in this run (LangGraph numbers them from the input checkpoint)."""
    return int(get_config().get("metadata", {}).get("langgraph_step", 0))
