"""Refund requests: a specialist may ask for a refund; executing one is a separate, approved step."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Annotated, Any

import aiosqlite
from langchain_core.tools import InjectedToolArg
from pydantic import BaseModel, Field

from triage.errors import PermanentToolError
from triage.helpdesk import Helpdesk
from triage.tools.base import ToolContext, fetch_all, fetch_one, helpdesk_tool, insert_once, receipt_id, utc_now

REFUNDED_CENTS = (
    "COALESCE((SELECT SUM(amount_cents) FROM refunds WHERE payment_id = p.id AND status != 'failed'), 0) "
    "+ COALESCE((SELECT SUM(amount_cents) FROM period_refunds WHERE payment_id = p.id AND status != 'canceled'), 0)"
)
"""SQL for what payment `p` has given back: its refunds but the failed, and a closure's unused-period refunds (pending
or settled) but the canceled. The checks made before money moves read this one sum, so neither kind of refund can
take what the other already took."""


async def refundable_amount(
    conn: aiosqlite.Connection, tool: str, customer_id: str, payment_id: str, amount_cents: int
) -> int:
    """What is left to refund on the customer's payment, checked against `amount_cents`.

    Raises:
        PermanentToolError: the payment is not the customer's, failed, or has less left than asked.
    """
    payment = await fetch_one(
        conn,
        f"SELECT p.amount_cents, p.status, {REFUNDED_CENTS} AS refunded_cents "
        "FROM payments p WHERE p.id = ? AND p.customer_id = ?",
        (payment_id, customer_id),
    )
    if payment is None:
        raise PermanentToolError(tool, f"payment {payment_id} does not belong to {customer_id}")
    refundable = int(payment["amount_cents"]) - int(payment["refunded_cents"])
    if payment["status"] == "failed" or amount_cents > refundable:
        raise PermanentToolError(
            tool, f"payment {payment_id} has {refundable} cents refundable; {amount_cents} was asked"
        )
    return refundable


class RefundRequestArgs(BaseModel):
    """Arguments of `request_refund`."""

    customer_id: str = Field(description="The customer who paid.")
    payment_id: str = Field(description="The payment to refund, e.g. 'pay_0042'.")
    amount_cents: int = Field(gt=0, description="How much to refund, in cents.")
    reason: str = Field(min_length=3, max_length=500, description="Why, in a sentence.")


@helpdesk_tool(scope="refunds:request", args_schema=RefundRequestArgs, compensation="withdraw_request")
async def request_refund(
    customer_id: str,
    payment_id: str,
    amount_cents: int,
    reason: str,
    ctx: Annotated[ToolContext, InjectedToolArg],
) -> dict[str, Any]:
    """Record a refund request for a payment of this customer; the same request twice returns the first receipt.

    A payment has at most one open request (a unique index in the helpdesk decides, atomically): when another
    thread's request is open, its receipt comes back with `already_requested` set and nothing is written.
    """
    request_id = receipt_id("rr", ctx.idempotency_key)
    async with ctx.helpdesk.transaction() as conn:
        await refundable_amount(conn, "request_refund", customer_id, payment_id, amount_cents)
        row = {
            "id": request_id,
            "payment_id": payment_id,
            "customer_id": customer_id,
            "amount_cents": amount_cents,
            "reason": reason,
            "status": "requested",
            "created_at": utc_now(),
            "thread_id": ctx.thread_id,
            "idempotency_key": ctx.idempotency_key,
        }
        try:
            created = await insert_once(conn, "refund_requests", row)
        except sqlite3.IntegrityError:
            created = False
        if not created:
            existing = await fetch_one(
                conn,
                "SELECT id, amount_cents, thread_id, created_at FROM refund_requests WHERE idempotency_key = ?",
                (ctx.idempotency_key,),
            ) or await fetch_one(
                conn,
                "SELECT id, amount_cents, thread_id, created_at FROM refund_requests "
                "WHERE payment_id = ? AND status IN ('requested', 'approved')",
                (payment_id,),
            )
            if existing is None:  # the conflict was something else: let the gateway classify it
                raise PermanentToolError("request_refund", f"could not record a refund request for {payment_id}")
            receipt: dict[str, Any] = {
                "id": existing["id"],
                "created": False,
                "payment_id": payment_id,
                "amount_cents": int(existing["amount_cents"]),
            }
            if existing["thread_id"] != ctx.thread_id:
                receipt.update(already_requested=True, requested_at=existing["created_at"])
            return receipt
    return {"id": request_id, "created": created, "payment_id": payment_id, "amount_cents": amount_cents}


class IssueRefundArgs(BaseModel):
    """Arguments of `issue_refund`."""

    customer_id: str
    payment_id: str
    amount_cents: int = Field(gt=0)
    request_id: str | None = Field(default=None, description="The refund request this carries out, if any.")


@helpdesk_tool(
    scope="refunds:write",
    args_schema=IssueRefundArgs,
    irreversible="money paid back to the customer cannot be taken back by a tool: a person arranges it with them",
)
async def issue_refund(
    customer_id: str,
    payment_id: str,
    amount_cents: int,
    ctx: Annotated[ToolContext, InjectedToolArg],
    request_id: str | None = None,
) -> dict[str, Any]:
    """Refund a payment (after approval): a refund row, the payment's status, the request marked executed.

    The same call twice (same idempotency key) returns the first refund and changes nothing.
    """
    refund_id = receipt_id("re", ctx.idempotency_key)
    async with ctx.helpdesk.transaction() as conn:
        existing = await fetch_one(conn, "SELECT id FROM refunds WHERE idempotency_key = ?", (ctx.idempotency_key,))
        if existing is not None:
            return {"id": existing["id"], "created": False, "payment_id": payment_id, "amount_cents": amount_cents}
        refundable = await refundable_amount(conn, "issue_refund", customer_id, payment_id, amount_cents)
        await insert_once(
            conn,
            "refunds",
            {
                "id": refund_id,
                "payment_id": payment_id,
                "customer_id": customer_id,
                "amount_cents": amount_cents,
                "reason": f"approved refund request {request_id}" if request_id else "approved refund",
                "status": "succeeded",
                "created_at": utc_now(),
                "thread_id": ctx.thread_id,
                "idempotency_key": ctx.idempotency_key,
            },
        )
        status = "refunded" if amount_cents == refundable else "partially_refunded"
        await conn.execute("UPDATE payments SET status = ? WHERE id = ?", (status, payment_id))
        if request_id is not None:
            await conn.execute("UPDATE refund_requests SET status = 'executed' WHERE id = ?", (request_id,))
    return {"id": refund_id, "created": True, "payment_id": payment_id, "amount_cents": amount_cents}


async def release_refund_requests(
    helpdesk: Helpdesk, thread_id: str, *, keep: Collection[str] = (), only: Collection[str] | None = None
) -> list[str]:
    """Withdraw the open refund requests of a run that failed, so they stop blocking the customer's next ticket.

    Not a tool: the app calls it when a run ends `failed`. A request the run retries later is carried out all the
    same (executing a refund marks its request executed). `keep` names requests that are not the failed run's
    own: an earlier turn of the conversation filed them (one left open for a person, say), and they stay open.
    `only`, when given, limits the withdrawal to these requests.
    """
    open_requests = "thread_id = ? AND status IN ('requested', 'approved')"
    async with helpdesk.transaction() as conn:
        rows = await fetch_all(conn, f"SELECT id FROM refund_requests WHERE {open_requests}", (thread_id,))
        ids = [str(row["id"]) for row in rows]
        released = [request for request in ids if request not in keep and (only is None or request in only)]
        await conn.executemany(
            f"UPDATE refund_requests SET status = 'rejected' WHERE id = ? AND {open_requests}",
            [(request, thread_id) for request in released],
        )
    return released
