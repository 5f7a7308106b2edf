"""Tickets for the human queues (engineering, support agents, billing, account team)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from langchain_core.tools import InjectedToolArg
from pydantic import BaseModel, Field

from triage.tools.base import ToolContext, fetch_all, helpdesk_tool, insert_once, receipt_id, utc_now

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
