"""The escalation specialist: hand the ticket to a person, with a priority and a summary. Creates tickets only."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, meter_of, services_of
from triage.nodes.common import RESPONSE_TIMES, action_record, call_tool, in_this_turn, remembered, specialist_update
from triage.policies.conversation import history_lines
from triage.policies.routing import priority_for
from triage.state import Draft, SpecialistState
from triage.tools.tickets import HISTORY_LABEL

NODE = "escalation"
TOOLS = ("create_ticket",)
SUMMARY_CHARS = 4_000
"""The queue ticket's summary limit (`tools.tickets`)."""
_AT_LEAST_HIGH = frozenset({"legal_threat", "chargeback", "security"})


async def hand_off(state: SpecialistState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Open a human-queue ticket whose summary says what the customer wants and why it was escalated."""
    services = await services_of(runtime)
    classification = state["classification"]
    ticket = state["ticket"]
    priority = priority_for(classification["urgency"], services.policy.support)
    if priority in ("low", "normal") and _AT_LEAST_HIGH & set(classification["signals"]):
        priority = "high"
    reason = state.get("route_reason", "")
    summary_lines = [
        await services.models.summarise(ticket["body"], max_chars=400, meter=meter_of(runtime)),
        "",
        f"Classifier: {classification['route']}/{classification['intent']} ({classification['confidence']:.2f}); "
        f"urgency {classification['urgency']}; sentiment {classification['sentiment']}.",
    ]
    if classification["signals"]:
        summary_lines.append(
            f"Signals: {', '.join(classification['signals'])} (matched: {', '.join(classification['evidence'])})."
        )
    if reason:
        summary_lines.append(f"Escalated because: {reason}.")
    history = await remembered(runtime, ticket["customer_id"])
    if history:
        summary_lines.append(f"{HISTORY_LABEL}{history}")
    if state.get("conversation"):
        summary_lines += ["", "Conversation so far:", *history_lines(state.get("conversation", [])[-6:])]
    receipt = await call_tool(
        runtime,
        NODE,
        "create_ticket",
        # The summary holds the customer's memory and, with a model tier, a model's words: a step run again after
        # a crash may write another one, so the ticket is keyed by the message it is about, in this turn.
        key_from=in_this_turn(state, {"queue": "human", "priority": priority, "message": ticket}),
        queue="human",
        priority=priority,
        subject=ticket["subject"]
        or await services.models.summarise(ticket["body"], max_chars=80, meter=meter_of(runtime)),
        summary="\n".join(summary_lines)[:SUMMARY_CHARS],
        customer_id=ticket["customer_id"],
    )
    actions = [
        *state.get("actions", []),
        action_record("ticket", "create_ticket", NODE, receipt, queue="human", priority=priority),
    ]
    facts = {"ticket_id": receipt["id"], "priority": priority, "response_time": RESPONSE_TIMES[priority]}
    return specialist_update("escalated", Draft(template="escalation.handed_off", facts=facts), actions, findings={})
