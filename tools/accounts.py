"""Account changes that need a confirmation step or a person: resets, email changes, deletions, exports."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import aiosqlite
from langchain_core.tools import InjectedToolArg
from pydantic import BaseModel, Field

from triage.errors import PermanentToolError
from triage.tools.base import ToolContext, fetch_all, helpdesk_tool, insert_row_once, receipt_id, utc_now

AccountRequestKind = Literal[
    "password_reset",
    "account_unlock",
    "email_change",
    "profile_update",
    "plan_change",
    "account_deletion",
    "data_export",
]


class AccountRequestArgs(BaseModel):
    """Arguments of `create_account_request`."""

    customer_id: str
    kind: AccountRequestKind
    details: dict[str, str] = Field(default_factory=dict, description="Kind-specific fields, e.g. new_email.")


@helpdesk_tool(scope="accounts:write", args_schema=AccountRequestArgs, compensation="withdraw_request")
async def create_account_request(
    customer_id: str,
    kind: AccountRequestKind,
    ctx: Annotated[ToolContext, InjectedToolArg],
    details: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Record an account change request (pending until confirmed or carried out); repeats return the first."""
    request_id = receipt_id("ar", ctx.idempotency_key)
    row = {
        "id": request_id,
        "customer_id": customer_id,
        "kind": kind,
        "details": json.dumps(details or {}, sort_keys=True),
        "status": "pending",
        "created_at": utc_now(),
        "thread_id": ctx.thread_id,
        "idempotency_key": ctx.idempotency_key,
    }
    created = await ctx.helpdesk.write(lambda db: insert_row_once(db, "account_requests", row))
    return {"id": request_id, "created": created, "kind": kind}


class ListPlansArgs(BaseModel):
    """Arguments of `list_plans`."""

    limit: int = Field(default=20, ge=1, le=100, description="How many plans, cheapest first.")


@helpdesk_tool(scope="plans:read", args_schema=ListPlansArgs)
async def list_plans(ctx: Annotated[ToolContext, InjectedToolArg], limit: int = 20) -> list[dict[str, Any]]:
    """Return the plans on offer with their monthly prices, cheapest first."""
    async with ctx.helpdesk.read() as conn:
        return await fetch_all(conn, "SELECT * FROM plans ORDER BY monthly_price_cents LIMIT ?", (limit,))


class CompleteRequestArgs(BaseModel):
    """Arguments of `complete_account_request`."""

    customer_id: str
    request_id: str


@helpdesk_tool(
    scope="accounts:execute",
    args_schema=CompleteRequestArgs,
    irreversible="a closed account's customer has been told, and an export once started cannot be recalled: a "
    "person reopens an account",
)
async def complete_account_request(
    customer_id: str, request_id: str, ctx: Annotated[ToolContext, InjectedToolArg]
) -> dict[str, Any]:
    """Carry out an approved account request: a deletion closes the account, an export is started."""
    async with ctx.helpdesk.transaction() as conn:
        rows = await fetch_all(
            conn,
            "SELECT kind, status FROM account_requests WHERE id = ? AND customer_id = ?",
            (request_id, customer_id),
        )
        if not rows:
            raise PermanentToolError("complete_account_request", f"no request {request_id} for {customer_id}")
        kind, status = rows[0]["kind"], rows[0]["status"]
        if status == "completed":
            return {"id": request_id, "created": False, "kind": kind}
        if kind == "account_deletion":
            await conn.execute("UPDATE customers SET status = 'closed' WHERE id = ?", (customer_id,))
        await conn.execute("UPDATE account_requests SET status = 'completed' WHERE id = ?", (request_id,))
    return {"id": request_id, "created": True, "kind": kind}


class DeclineRequestArgs(BaseModel):
    """Arguments of `decline_request`."""

    customer_id: str
    request_id: str = Field(description="A refund request ('rr_...') or an account request ('ar_...').")


@helpdesk_tool(
    scope="accounts:execute",
    args_schema=DeclineRequestArgs,
    irreversible="the customer is told their request was declined: the way back is a new request, not an undo",
)
async def decline_request(
    customer_id: str, request_id: str, ctx: Annotated[ToolContext, InjectedToolArg]
) -> dict[str, Any]:
    """Mark a pending refund or account request rejected after an approver said no; repeats change nothing."""
    async with ctx.helpdesk.transaction() as conn:
        rejected = await _reject_pending(conn, customer_id, request_id)
    return {"id": request_id, "created": rejected}


class WithdrawRequestArgs(BaseModel):
    """Arguments of `withdraw_request` (a compensation's: whose effect, and its receipt id)."""

    customer_id: str
    receipt_id: str = Field(description="The receipt id of the request: a refund ('rr_...') or account ('ar_...') one.")


@helpdesk_tool(
    scope="accounts:execute",
    args_schema=WithdrawRequestArgs,
    irreversible="it is itself a compensation: undoing a withdrawal is asking again",
)
async def withdraw_request(
    customer_id: str, receipt_id: str, ctx: Annotated[ToolContext, InjectedToolArg]
) -> dict[str, Any]:
    """Withdraw a refund or account request this run made and nobody has carried out yet (it is marked rejected).

    The compensation of `request_refund` and `create_account_request`. A request another run made (a receipt that
    came back `already_requested`) is not this run's to withdraw and is left as it is; repeats change nothing.

    Raises:
        PermanentToolError: the customer has no such request.
    """
    async with ctx.helpdesk.transaction() as conn:
        found = await fetch_all(
            conn,
            "SELECT thread_id FROM refund_requests WHERE id = ? AND customer_id = ? "
            "UNION ALL SELECT thread_id FROM account_requests WHERE id = ? AND customer_id = ?",
            (receipt_id, customer_id, receipt_id, customer_id),
        )
        if not found:
            raise PermanentToolError("withdraw_request", f"no request {receipt_id} for {customer_id} to withdraw")
        mine = found[0]["thread_id"] == ctx.thread_id
        withdrawn = mine and await _reject_pending(conn, customer_id, receipt_id)
    return {"id": receipt_id, "created": withdrawn, **({} if mine else {"made_by_another_run": True})}


async def _reject_pending(conn: aiosqlite.Connection, customer_id: str, request_id: str) -> bool:
    """Mark the customer's request rejected if it is still pending; whether it was."""
    refund = await conn.execute(
        "UPDATE refund_requests SET status = 'rejected' WHERE id = ? AND customer_id = ? AND status = 'requested'",
        (request_id, customer_id),
    )
    account = await conn.execute(
        "UPDATE account_requests SET status = 'rejected' WHERE id = ? AND customer_id = ? AND status = 'pending'",
        (request_id, customer_id),
    )
    return bool(refund.rowcount or account.rowcount)
