"""Tickets for the human queues (engineering, support agents, billing, account team)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from langchain_core.tools import InjectedToolArg
from pydantic import BaseModel, Field

from triage.errors import PermanentToolError
from triage.tools.base import (
    ToolContext,
    fetch_all,
    fetch_one,
    helpdesk_tool,
    insert_once,
    receipt_id,
    utc_now,
)

Queue = Literal["engineering", "human", "billing", "account"]
Priority = Literal["low", "normal", "high", "urgent"]


class CreateTicketArgs(BaseModel):
    """Arguments of `create_ticket`."""

    queue: Queue = Field(description="Which team's queue.")
    priority: Priority
    subject: str = Field(min_length=1, max_length=300)
    summary: str = Field(min_length=1, max_length=4_000, description="What the team needs to know.")
    customer_id: str | None = None


@helpdesk_tool(scope="tickets:write", args_schema=CreateTicketArgs)
async def create_ticket(
    queue: Queue,
    priority: Priority,
    subject: str,
    summary: str,
    ctx: Annotated[ToolContext, InjectedToolArg],
    customer_id: str | None = None,
) -> dict[str, Any]:
    """Open a ticket in a team queue; the same request twice returns the first ticket."""
    ticket_id = receipt_id("TCK", ctx.idempotency_key)
    async with ctx.helpdesk.transaction() as conn:
        created = await insert_once(
            conn,
            "tickets",
            {
                "id": ticket_id,
                "customer_id": customer_id,
                "queue": queue,
                "priority": priority,
                "subject": subject,
                "summary": summary,
                "status": "open",
                "created_at": utc_now(),
                "thread_id": ctx.thread_id,
                "idempotency_key": ctx.idempotency_key,
            },
        )
    return {"id": ticket_id, "created": created, "queue": queue, "priority": priority}


class FindEngineeringTicketsArgs(BaseModel):
    """Arguments of `find_engineering_tickets`."""

    keys: list[str] = Field(min_length=1, max_length=200, description="Ticket ids or issue keys (ENG-42).")


HISTORY_LABEL = "Customer history: "
"""Starts the line of a ticket's summary that recalls the customer's earlier tickets (not part of this report)."""


def reported_text(subject: str, summary: str) -> str:
    """What a ticket itself reports: its subject and summary without the recalled customer history.

    The history names the customer's other tickets; a release that fixes one of them must not close this one.
    """
    own = summary.split("\n" + HISTORY_LABEL, 1)[0]
    return f"{subject}\n{own}"


def mentions(text: str, key: str) -> bool:
    """Whether `text` names `key` as a whole token (ENG-4 is not named by ENG-42), ignoring case."""
    return re.search(rf"(?<![A-Za-z0-9_-]){re.escape(key)}(?![A-Za-z0-9_])", text, re.I) is not None


@helpdesk_tool(scope="tickets:read", args_schema=FindEngineeringTicketsArgs)
async def find_engineering_tickets(
    keys: list[str], ctx: Annotated[ToolContext, InjectedToolArg]
) -> list[dict[str, Any]]:
    """Engineering tickets whose id is one of `keys` or whose subject or summary names one; each with `keys`."""
    found: dict[str, dict[str, Any]] = {}
    async with ctx.helpdesk.read() as conn:
        for key in keys:
            candidates = await fetch_all(
                conn,
                "SELECT id, customer_id, priority, subject, summary, status, created_at, thread_id FROM tickets "
                "WHERE queue = 'engineering' AND (upper(id) = upper(?) OR instr(upper(subject), upper(?)) > 0 "
                "OR instr(upper(summary), upper(?)) > 0) ORDER BY created_at, id",
                (key, key, key),
            )
            for row in candidates:
                if row["id"].upper() == key.upper() or mentions(reported_text(row["subject"], row["summary"]), key):
                    found.setdefault(row["id"], {**row, "keys": []})["keys"].append(key)
    return list(found.values())


class CloseTicketArgs(BaseModel):
    """Arguments of `close_ticket`."""

    ticket_id: str = Field(min_length=1, max_length=64)


@helpdesk_tool(scope="tickets:close", args_schema=CloseTicketArgs)
async def close_ticket(ticket_id: str, ctx: Annotated[ToolContext, InjectedToolArg]) -> dict[str, Any]:
    """Mark a ticket solved; closing a solved ticket changes nothing (`closed` says whether this call closed it)."""
    async with ctx.helpdesk.transaction() as conn:
        cursor = await conn.execute(
            "UPDATE tickets SET status = 'solved' WHERE id = ? AND status != 'solved'", (ticket_id,)
        )
        closed = cursor.rowcount == 1
        row = await fetch_one(conn, "SELECT id FROM tickets WHERE id = ?", (ticket_id,))
    if row is None:
        raise PermanentToolError("close_ticket", f"no ticket {ticket_id}")
    return {"id": ticket_id, "closed": closed, "status": "solved"}


class FindTicketsArgs(BaseModel):
    """Arguments of `find_tickets`."""

    customer_id: str = Field(min_length=1, description="Whose tickets.")
    include_solved: bool = Field(default=False, description="Also list solved tickets.")
    limit: int = Field(default=5, ge=1, le=20)


@helpdesk_tool(scope="tickets:read", args_schema=FindTicketsArgs)
async def find_tickets(
    customer_id: str, ctx: Annotated[ToolContext, InjectedToolArg], include_solved: bool = False, limit: int = 5
) -> list[dict[str, Any]]:
    """The customer's tickets in the team queues, newest first (open and pending ones unless `include_solved`)."""
    statuses = ("open", "pending", "solved") if include_solved else ("open", "pending")
    async with ctx.helpdesk.read() as conn:
        return await fetch_all(
            conn,
            "SELECT id, queue, priority, subject, status, created_at FROM tickets "
            f"WHERE customer_id = ? AND status IN ({', '.join('?' for _ in statuses)}) "
            "ORDER BY created_at DESC, id LIMIT ?",
            (customer_id, *statuses, limit),
        )
