"""The technical specialist: answer from the knowledge base when a fix is documented, else open a ticket."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, meter_of, services_of
from triage.nodes.common import (
    RESPONSE_TIMES,
    action_record,
    article_facts,
    call_tool,
    remembered,
    specialist_update,
    ticket_text,
)
from triage.policies.routing import kb_answers, priority_for
from triage.state import Draft, SpecialistState

NODE = "technical"
TOOLS = ("search_kb", "create_ticket")


async def search(state: SpecialistState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Full-text search of the knowledge base (bm25 ranked) for the ticket's words."""
    articles = await call_tool(runtime, NODE, "search_kb", query=ticket_text(state), limit=3)
    return {"findings": {"articles": articles}}


async def act(state: SpecialistState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Answer with the best article's steps when the match is good; otherwise open an engineering ticket.

    A reported outage always opens a ticket (at least high priority): an article cannot fix a service that is down.
    """
    services = await services_of(runtime)
    policy = services.policy.support
    findings = state["findings"]
    articles: list[dict[str, Any]] = findings["articles"]
    actions = list(state.get("actions", []))
    best = articles[0] if articles else None
    outage = state["classification"]["intent"] == "outage"
    if best is not None and not outage and kb_answers(best, policy):
        return specialist_update(
            "resolved",
            Draft(template="technical.kb_answer", facts=article_facts(best)),
            actions,
            findings={**findings, "answered_with": best["slug"]},
        )
    classification = state["classification"]
    priority = priority_for(classification["urgency"], policy)
    if outage and priority in ("low", "normal"):
        priority = "high"
    ticket = state["ticket"]
    summary = await services.models.summarise(ticket["body"], max_chars=600, meter=meter_of(runtime))
    if best is not None:
        summary += f"\n\nClosest article: {best['slug']} (score {best['score']}, not a confident match)."
    history = await remembered(runtime, ticket["customer_id"])
    if history:
        summary += f"\n\nCustomer history: {history}"
    receipt = await call_tool(
        runtime,
        NODE,
        "create_ticket",
        queue="engineering",
        priority=priority,
        subject=ticket["subject"]
        or await services.models.summarise(ticket["body"], max_chars=80, meter=meter_of(runtime)),
        summary=summary,
        customer_id=ticket["customer_id"],
    )
    actions.append(action_record("ticket", "create_ticket", NODE, receipt, queue="engineering", priority=priority))
    facts = {"ticket_id": receipt["id"], "priority": priority, "response_time": RESPONSE_TIMES[priority]}
    template = "technical.outage_ticket" if outage else "technical.engineering_ticket"
    return specialist_update("handed_off", Draft(template=template, facts=facts), actions)
