"""Find each reporter's other open tickets about what the release fixes them, wherever they wrote to us again."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context
from triage.nodes.common import call_tool
from triage.state import Recipient, RelatedTicket, ReleaseState

NODE = "find_related"
TOOLS = ("find_related_tickets",)


async def find_related(state: ReleaseState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Note on each customer not told yet their other open tickets about the same problems.

    Those name a fixed ticket or its keys, or carry a fixed ticket's subject: the same problem written to us again,
    in the reporting conversation or another one. A customer an earlier run told is left as it is: what they wrote
    since may say the fix did not work, and a person should read it.
    """
    tickets = state.get("tickets", [])
    known = [ticket["id"] for ticket in tickets]
    recipients: list[Recipient] = []
    for recipient in state.get("recipients", []):
        if recipient["notified_earlier"]:
            recipients.append(recipient)
            continue
        mine = [t for t in tickets if t["id"] in recipient["tickets"]]
        rows: list[dict[str, Any]] = await call_tool(
            runtime,
            NODE,
            "find_related_tickets",
            customer_id=recipient["customer_id"],
            keys=list(dict.fromkeys(key for t in mine for key in (t["id"], *t["keys"]))),
            subjects=list(dict.fromkeys(t["subject"] for t in mine)),
            exclude=known,
        )
        related = [
            RelatedTicket(
                id=row["id"],
                queue=row["queue"],
                subject=row["subject"],
                thread_id=row["thread_id"],
                because=row["because"],
            )
            for row in rows
        ]
        recipients.append(Recipient(**{**recipient, "related": related}))
    return {"recipients": recipients}
