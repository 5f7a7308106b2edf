"""Close the tickets the release fixes, each once per release whatever the number of runs."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, services_of, thread_id_of
from triage.nodes.common import action_record
from triage.nodes.release.keys import close_key
from triage.state import ReleaseState

NODE = "close_tickets"
TOOLS = ("close_ticket",)


async def close_tickets(state: ReleaseState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Close every fixed ticket not closed yet by this release: the ledger first, then the tool, then the receipt."""
    services = await services_of(runtime)
    thread_id = thread_id_of(runtime)
    version = state["release"]["version"]
    actions = list(state.get("actions", []))
    closed: list[str] = []
    for ticket in state.get("tickets", []):
        if ticket["state"] == "solved_before":
            continue
        key = close_key(version, ticket["id"])
        if await services.journal.receipt(key) is None:
            receipt = await services.gateway.call(
                NODE, "close_ticket", {"ticket_id": ticket["id"]}, thread_id=thread_id, idempotency_key=key
            )
            receipt = await services.journal.record_effect(
                key, thread_id=thread_id, kind="ticket_closed", receipt=receipt, policy_version=services.policy.version
            )
            actions.append(action_record("ticket_closed", "close_ticket", NODE, receipt, release=version))
        closed.append(ticket["id"])
    return {"closed": closed, "actions": actions}
