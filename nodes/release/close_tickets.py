"""Close the tickets the release fixes, each once per release whatever the number of runs."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, services_of, thread_id_of
from triage.nodes.common import action_record
from triage.nodes.release.keys import close_key
from triage.state import ReleaseState
from triage.stores.memory import close_requests

NODE = "close_tickets"
TOOLS = ("close_ticket",)


async def close_tickets(state: ReleaseState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Close every ticket of `to_close` not closed yet by this release: the ledger first, the tool, the receipt."""
    services = await services_of(runtime)
    thread_id = thread_id_of(runtime)
    version = state["release"]["version"]
    actions = list(state.get("actions", []))
    closed: list[str] = []
    for ticket_id in to_close(state):
        key = close_key(version, ticket_id)
        if await services.journal.receipt(key) is None:
            receipt = await services.gateway.call(
                NODE, "close_ticket", {"ticket_id": ticket_id}, thread_id=thread_id, idempotency_key=key
            )
            receipt = await services.journal.record_effect(
                key, thread_id=thread_id, kind="ticket_closed", receipt=receipt, policy_version=services.policy.version
            )
            actions.append(action_record("ticket_closed", "close_ticket", NODE, receipt, release=version))
        closed.append(ticket_id)
    for customer_id, ticket_ids in closed_by_customer(state, closed).items():
        await close_requests(runtime.store, customer_id, ticket_ids)  # their memory no longer lists them as open
    return {"closed": closed, "actions": actions}


def closed_by_customer(state: ReleaseState, closed: list[str]) -> dict[str, list[str]]:
    """The closed tickets grouped by the customer who reported them."""
    owner = {t["id"]: t["customer_id"] for t in state.get("tickets", []) if t["customer_id"]}
    for recipient in state.get("recipients", []):
        owner.update((related["id"], recipient["customer_id"]) for related in recipient.get("related", []))
    grouped: dict[str, list[str]] = {}
    for ticket_id in closed:
        if ticket_id in owner:
            grouped.setdefault(str(owner[ticket_id]), []).append(ticket_id)
    return grouped


def to_close(state: ReleaseState) -> list[str]:
    """The fixed tickets not solved before, then the reporters' other open engineering tickets about the same bug."""
    fixed = [t["id"] for t in state.get("tickets", []) if t["state"] != "solved_before"]
    again = [
        related["id"]
        for recipient in state.get("recipients", [])
        for related in recipient.get("related", [])
        if related["queue"] == "engineering"
    ]
    return list(dict.fromkeys([*fixed, *again]))
