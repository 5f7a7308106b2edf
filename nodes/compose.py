"""Compose the customer reply from the specialist's draft (the model tier writes it)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, meter_of, services_of
from triage.state import Draft, State


async def compose(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Render the draft with the customer's name, the ticket's subject and a tone fitting their mood."""
    services = await services_of(runtime)
    draft = state["draft"]
    customer = state.get("customer") or {}
    facts = {
        "customer_name": customer.get("name"),
        "ticket_subject": state["ticket"]["subject"],
        "sentiment": state["classification"]["sentiment"],
        **draft["facts"],
    }
    return {
        "reply": await services.models.compose(Draft(template=draft["template"], facts=facts), meter=meter_of(runtime))
    }
