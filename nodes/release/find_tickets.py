"""Find the engineering tickets a release fixes, and the customers who reported them."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, services_of
from triage.nodes.common import call_tool
from triage.nodes.release.keys import close_key, notify_key
from triage.schemas import Release
from triage.state import Recipient, ReleaseState, ReleaseTicket

NODE = "find_tickets"
TOOLS = ("find_engineering_tickets", "get_customer")


async def find_tickets(state: ReleaseState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Look up the tickets the fixed keys name and group their reporters, noting what an earlier run already did.

    Raises:
        InvalidReleaseError: the release is malformed (a graph started outside `TriageApp`, e.g. from Studio).
    """
    services = await services_of(runtime)
    release = Release.model_validate(state["release"])
    rows: list[dict[str, Any]] = await call_tool(runtime, NODE, "find_engineering_tickets", keys=release.fixes)
    named = {key for row in rows for key in row["keys"]}
    tickets: list[ReleaseTicket] = []
    for row in rows:
        if row["status"] != "solved":
            ticket_state = "to_close"
        elif await services.journal.receipt(close_key(release.version, row["id"])) is not None:
            ticket_state = "closed_by_release"
        else:
            ticket_state = "solved_before"
        tickets.append(
            ReleaseTicket(
                id=row["id"],
                customer_id=row["customer_id"],
                subject=row["subject"],
                thread_id=row["thread_id"],
                keys=row["keys"],
                state=ticket_state,
            )
        )
    recipients: dict[str, Recipient] = {}
    for ticket in tickets:
        customer_id = ticket["customer_id"]
        if ticket["state"] == "solved_before" or customer_id is None:
            continue
        if customer_id not in recipients:
            customer = await call_tool(runtime, NODE, "get_customer", customer_id=customer_id)
            if customer is None:
                continue
            earlier = await services.journal.receipt(notify_key(release.version, customer_id))
            recipients[customer_id] = Recipient(
                customer_id=customer_id,
                name=customer["name"],
                email=customer["email"],
                tickets=[],
                threads=[],
                notified_earlier=earlier is not None,
            )
        recipient = recipients[customer_id]
        recipient["tickets"].append(ticket["id"])
        if ticket["thread_id"] not in recipient["threads"]:
            recipient["threads"].append(ticket["thread_id"])
    return {
        "release": release.model_dump(),
        "tickets": tickets,
        "unknown_keys": [key for key in release.fixes if key not in named],
        "recipients": list(recipients.values()),
        "policy_version": services.policy.version,
        "actions": [],
    }


def has_work(state: ReleaseState) -> bool:
    """Whether anything is left to close or to tell (a release that fixes nothing we know has nothing)."""
    return any(t["state"] == "to_close" for t in state.get("tickets", [])) or any(
        not r["notified_earlier"] for r in state.get("recipients", [])
    )
