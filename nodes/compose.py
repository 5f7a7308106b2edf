"""Compose the customer reply from the specialist's draft (the model tier writes it)."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, meter_of, services_of
from triage.models.templates import TEMPLATES, render
from triage.nodes.execute import DONE_PROMISES
from triage.policies.planning import PLAN_TEMPLATE, merged_reply_findings
from triage.state import Draft, State


async def compose(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Render the draft with the customer's name, the ticket's subject and a tone fitting their mood.

    A ticket with several asks gets one reply answering each in order; it is checked before it goes (every ask
    answered in order, every fact of each specialist kept, no effect promised that was not taken) and rendered
    from the templates alone when the check fails.
    """
    services = await services_of(runtime)
    draft = state["draft"]
    customer = state.get("customer") or {}
    facts = {
        "customer_name": customer.get("name"),
        "ticket_subject": state["ticket"]["subject"],
        "sentiment": state["classification"]["sentiment"],
    }
    if draft["template"] != PLAN_TEMPLATE:
        merged = Draft(template=draft["template"], facts={**facts, **draft["facts"]})
        return {"reply": await services.models.compose(merged, meter=meter_of(runtime))}
    parts = [_rendered(part) for part in draft["facts"]["parts"]]
    answers = "\n\n".join(f"{number}. {part['body']}" for number, part in enumerate(parts, start=1))
    merged = Draft(template=PLAN_TEMPLATE, facts={**facts, "answers": answers})
    reply = await services.models.compose(merged, meter=meter_of(runtime))
    taken = {a["kind"] for a in state.get("actions", []) if a["node"] == "execute"}
    findings = merged_reply_findings(reply["body"], parts, taken, DONE_PROMISES)
    if findings:
        reply = {**render(merged), "verdict": "template_fallback", "findings": findings}
    return {"reply": reply}


def _rendered(part: Mapping[str, Any]) -> dict[str, Any]:
    """An ask's answer rendered from its template, with the facts it shows (what the merged reply must keep)."""
    template = TEMPLATES[part["template"]]
    shown = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    facts = {key: value for key, value in part["facts"].items() if key in shown}
    return {**part, "facts": facts, "body": template.format_map(part["facts"])}
