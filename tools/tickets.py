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
    insert_row_once,
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


@helpdesk_tool(
    scope="tickets:write",
    args_schema=CreateTicketArgs,
    irreversible="a team may already be working on the ticket and the customer was given its id: one opened in "
    "error is closed by a person who says why",
)
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
    row = {
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
    }
    created = await ctx.helpdesk.write(lambda db: insert_row_once(db, "tickets", row))
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


@helpdesk_tool(
    scope="tickets:close",
    args_schema=CloseTicketArgs,
    irreversible="the customer is told their ticket is solved: reopening it silently would leave them misinformed, "
    "so a person reopens it and tells them",
)
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


class FindRelatedTicketsArgs(BaseModel):
    """Arguments of `find_related_tickets`."""

    customer_id: str = Field(min_length=1, max_length=64, description="Whose open tickets.")
    keys: list[str] = Field(min_length=1, max_length=200, description="Ticket ids or issue keys of the problem.")
    subjects: list[str] = Field(default_factory=list, max_length=200, description="Subjects of its reports.")
    exclude: list[str] = Field(default_factory=list, max_length=1_000, description="Tickets already accounted for.")


def same_subject(one: str, other: str) -> bool:
    """Whether two subjects are the same line once case, spacing and `Re:`/`Fwd:` prefixes are set aside."""
    return _plain_subject(one) == _plain_subject(other) != ""


def _plain_subject(subject: str) -> str:
    plain = " ".join(subject.lower().split())
    while (stripped := re.sub(r"^(?:re|fwd?|aw)\s*:\s*", "", plain)) != plain:
        plain = stripped
    return plain


@helpdesk_tool(scope="tickets:read", args_schema=FindRelatedTicketsArgs)
async def find_related_tickets(
    customer_id: str,
    keys: list[str],
    ctx: Annotated[ToolContext, InjectedToolArg],
    subjects: list[str] | None = None,
    exclude: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The customer's open tickets, in any queue, about the same problem, oldest first.

    Each names one of `keys` (in what it reports, not in the recalled history) or has one of `subjects`; `because`
    says which.
    """
    skip = {ticket_id.upper() for ticket_id in exclude or []}
    async with ctx.helpdesk.read() as conn:
        candidates = await fetch_all(
            conn,
            "SELECT id, queue, subject, summary, status, created_at, thread_id FROM tickets "
            "WHERE customer_id = ? AND status IN ('open', 'pending') ORDER BY created_at, id",
            (customer_id,),
        )
    related: list[dict[str, Any]] = []
    for row in candidates:
        if row["id"].upper() in skip:
            continue
        text = reported_text(row["subject"], row["summary"])
        because = [key for key in keys if mentions(text, key)]
        because += [f"subject: {s}" for s in subjects or [] if same_subject(row["subject"], s)][:1]
        if because:
            related.append({k: v for k, v in row.items() if k != "summary"} | {"because": because})
    return related


class NoteTicketArgs(BaseModel):
    """Arguments of `note_ticket`."""

    ticket_id: str = Field(min_length=1, max_length=64)
    note: str = Field(min_length=1, max_length=4_000, description="What the person handling the ticket must know.")


@helpdesk_tool(
    scope="tickets:note",
    args_schema=NoteTicketArgs,
    irreversible="a note is part of the ticket's history, which people may have read: a wrong one is corrected by "
    "another note",
)
async def note_ticket(ticket_id: str, note: str, ctx: Annotated[ToolContext, InjectedToolArg]) -> dict[str, Any]:
    """Add a note to a ticket for the person who handles it; the same note twice in a thread is added once."""
    note_id = receipt_id("note", ctx.idempotency_key)
    async with ctx.helpdesk.transaction() as conn:
        if await fetch_one(conn, "SELECT id FROM tickets WHERE id = ?", (ticket_id,)) is None:
            raise PermanentToolError("note_ticket", f"no ticket {ticket_id}")
        created = await insert_once(
            conn,
            "ticket_notes",
            {
                "id": note_id,
                "ticket_id": ticket_id,
                "note": note,
                "author": ctx.caller,
                "created_at": utc_now(),
                "thread_id": ctx.thread_id,
                "idempotency_key": ctx.idempotency_key,
            },
        )
    return {"id": note_id, "created": created, "ticket_id": ticket_id}


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
