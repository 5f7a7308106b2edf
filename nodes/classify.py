"""Classify the ticket: route, intent, urgency, sentiment and confidence (the model tier decides)."""

from __future__ import annotations

from typing import Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

from triage.context import Context, meter_of, services_of
from triage.metering import BudgetExceededError
from triage.models.signals import detect_signals
from triage.nodes.ask import plan_asks
from triage.policies.conversation import (
    answer_worked,
    history_text,
    needs_history,
    prefer_history,
    read_with_history,
    thanked,
)
from triage.state import Classification, State

BUDGET_SIGNAL = "budget_exceeded"


async def classify(state: State, runtime: Runtime[Context]) -> Command[Literal["route", "ask"]]:
    """Ask the model tier to read the ticket. Read-only: no tools.

    A follow-up that thanks us for an answer that worked is feedback (`answer_worked`). One that is short or unclear
    on its own is read again with the conversation's earlier messages (redacted, within `HISTORY_CHARS`); the surer
    reading stands, unless the follow-up alone is sure enough to be answered without a person and reads as another
    route or intent (`prefer_history`). Over budget, no model is asked: the ticket is marked for a person, with the
    reason.
    """
    services = await services_of(runtime)
    ticket = state["ticket"]
    text = f"{ticket['subject']}\n{ticket['body']}".strip()
    meter = meter_of(runtime)
    try:
        classification = await services.models.classify(text, meter=meter)
        conversation = state.get("conversation")
        threshold = services.policy.support.routing.min_confidence
        reply_alone = services.policy.approvals.actions.low_confidence_reply_below
        worked = answer_worked(ticket["body"], conversation) if conversation else None
        if worked is not None:
            classification = thanked(classification, worked)
        elif conversation and needs_history(text, classification["confidence"], threshold):
            earlier = history_text(conversation)
            with_history = await services.models.classify(f"{text}\n\n{earlier}", meter=meter)
            if prefer_history(classification, with_history, reply_alone):
                classification = read_with_history(classification, with_history)
        asks = await plan_asks(state, classification, runtime)
    except BudgetExceededError as exceeded:
        update = {"classification": unclassified(text), "budget_exceeded": str(exceeded)}
        return Command(goto="route", update=update)
    if asks:  # several asks on different routes: each to its specialist, in parallel
        routes = ", ".join(f"{s.arg['classification']['route']}" for s in asks)
        update = {
            "classification": classification,
            "route": asks[0].arg["classification"]["route"],
            "route_reason": f"planned {len(asks)} asks: {routes}",
        }
        return Command(goto=asks, update=update)
    return Command(goto="route", update={"classification": classification})


def unclassified(text: str) -> Classification:
    """The deterministic reading of a ticket no model may look at: a person's job, urgency from the lexicons."""
    signals = detect_signals(text)
    return Classification(
        route="escalation",
        intent="human_agent_request",
        confidence=0.0,
        route_scores={},
        urgency=signals.urgency,
        sentiment=signals.sentiment,
        signals=sorted({*signals.flags, BUDGET_SIGNAL}),
        evidence=list(signals.evidence),
        model="none",
    )
