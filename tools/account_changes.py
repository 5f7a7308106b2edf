"""The steps of multi-step account changes (a plan change, an account closure), each with the tool that undoes it.

Every effect is written once per idempotency key (a repeat returns the first receipt) and declares its
compensation with `helpdesk_tool(compensation=...)`; the compensations, and the last step (`confirm_account_change`),
declare with `irreversible=...` why nothing undoes them. A compensation takes the customer and the effect's receipt id,
puts back what the effect changed and marks it `reversed` (or voided, canceled); repeating it changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import aiosqlite
from langchain_core.tools import InjectedToolArg
from pydantic import BaseModel, Field

from triage.errors import PermanentToolError
from triage.policies.account import refund_source
from triage.tools.base import ToolContext, fetch_all, fetch_one, helpdesk_tool, insert_once, receipt_id, utc_now
from triage.tools.refunds import REFUNDED_CENTS

COMPENSATION_ITSELF = "it is itself a compensation: undoing an undo is running the step again"


class UndoArgs(BaseModel):
    """Arguments of every compensation: whose effect, and its receipt id."""

    customer_id: str
    receipt_id: str = Field(description="The receipt id the effect returned.")


async def _existing(conn: aiosqlite.Connection, table: str, key: str) -> dict[str, Any] | None:
    return await fetch_one(conn, f"SELECT * FROM {table} WHERE idempotency_key = ?", (key,))


async def _undo(
    conn: aiosqlite.Connection, tool: str, table: str, args: UndoArgs, *, live: str, undone: str
) -> dict[str, Any] | None:
    """The effect's row if it is still `live` (marked `undone` here), None if it was undone already.

    Raises:
        PermanentToolError: there is no such effect for this customer.
    """
    row = await fetch_one(
        conn, f"SELECT * FROM {table} WHERE id = ? AND customer_id = ?", (args.receipt_id, args.customer_id)
    )
    if row is None:
        raise PermanentToolError(tool, f"no effect {args.receipt_id} for {args.customer_id} to undo")
    if row["status"] != live:
        return None
    await conn.execute(f"UPDATE {table} SET status = ? WHERE id = ?", (undone, args.receipt_id))
    return row


class ChangeSubscriptionArgs(BaseModel):
    """Arguments of `change_subscription`."""

    customer_id: str
    subscription_id: str
    to_plan: str | None = Field(default=None, description="The new plan; None keeps the plan.")
    cancel: bool = Field(default=False, description="Cancel the subscription instead of changing its plan.")


@helpdesk_tool(scope="accounts:execute", args_schema=ChangeSubscriptionArgs, compensation="revert_subscription_change")
async def change_subscription(
    customer_id: str,
    subscription_id: str,
    ctx: Annotated[ToolContext, InjectedToolArg],
    to_plan: str | None = None,
    cancel: bool = False,
) -> dict[str, Any]:
    """Move a subscription to another plan, or cancel it; what it was is kept for the compensation."""
    change_id = receipt_id("sc", ctx.idempotency_key)
    async with ctx.helpdesk.transaction() as conn:
        existing = await _existing(conn, "subscription_changes", ctx.idempotency_key)
        if existing is not None:
            return {"id": existing["id"], "created": False, "to_plan": existing["to_plan"]}
        sub = await fetch_one(
            conn,
            "SELECT plan_id, status FROM subscriptions WHERE id = ? AND customer_id = ?",
            (subscription_id, customer_id),
        )
        if sub is None:
            raise PermanentToolError("change_subscription", f"{customer_id} has no subscription {subscription_id}")
        if sub["status"] == "canceled":
            raise PermanentToolError("change_subscription", f"subscription {subscription_id} is already canceled")
        plan = to_plan or sub["plan_id"]
        if await fetch_one(conn, "SELECT id FROM plans WHERE id = ?", (plan,)) is None:
            raise PermanentToolError("change_subscription", f"no plan {plan!r}")
        status = "canceled" if cancel else sub["status"]
        await insert_once(
            conn,
            "subscription_changes",
            {
                "id": change_id,
                "customer_id": customer_id,
                "subscription_id": subscription_id,
                "from_plan": sub["plan_id"],
                "to_plan": plan,
                "from_status": sub["status"],
                "to_status": status,
                "status": "applied",
                "created_at": utc_now(),
                "thread_id": ctx.thread_id,
                "idempotency_key": ctx.idempotency_key,
            },
        )
        await conn.execute(
            "UPDATE subscriptions SET plan_id = ?, status = ? WHERE id = ?", (plan, status, subscription_id)
        )
    return {"id": change_id, "created": True, "to_plan": plan}


@helpdesk_tool(scope="accounts:execute", args_schema=UndoArgs, irreversible=COMPENSATION_ITSELF)
async def revert_subscription_change(
    customer_id: str, receipt_id: str, ctx: Annotated[ToolContext, InjectedToolArg]
) -> dict[str, Any]:
    """Put a changed or canceled subscription back on its former plan and status."""
    args = UndoArgs(customer_id=customer_id, receipt_id=receipt_id)
    async with ctx.helpdesk.transaction() as conn:
        row = await _undo(
            conn, "revert_subscription_change", "subscription_changes", args, live="applied", undone="reversed"
        )
        if row is not None:
            await conn.execute(
                "UPDATE subscriptions SET plan_id = ?, status = ? WHERE id = ?",
                (row["from_plan"], row["from_status"], row["subscription_id"]),
            )
    return {"id": receipt_id, "created": row is not None}


class CreditArgs(BaseModel):
    """Arguments of `post_account_credit`."""

    customer_id: str
    amount_cents: int = Field(description="Negative: a credit to the customer; positive: a charge.")
    reason: str = Field(min_length=3, max_length=500)


@helpdesk_tool(scope="accounts:execute", args_schema=CreditArgs, compensation="void_account_credit")
async def post_account_credit(
    customer_id: str, amount_cents: int, reason: str, ctx: Annotated[ToolContext, InjectedToolArg]
) -> dict[str, Any]:
    """Post a prorated credit (negative) or charge (positive) to the customer's next invoice."""
    if amount_cents == 0:
        raise PermanentToolError("post_account_credit", "a credit or charge of 0 cents posts nothing")
    credit_id = receipt_id("cr", ctx.idempotency_key)
    async with ctx.helpdesk.transaction() as conn:
        created = await insert_once(
            conn,
            "account_credits",
            {
                "id": credit_id,
                "customer_id": customer_id,
                "amount_cents": amount_cents,
                "reason": reason,
                "status": "posted",
                "created_at": utc_now(),
                "thread_id": ctx.thread_id,
                "idempotency_key": ctx.idempotency_key,
            },
        )
    return {"id": credit_id, "created": created, "amount_cents": amount_cents}


@helpdesk_tool(scope="accounts:execute", args_schema=UndoArgs, irreversible=COMPENSATION_ITSELF)
async def void_account_credit(
    customer_id: str, receipt_id: str, ctx: Annotated[ToolContext, InjectedToolArg]
) -> dict[str, Any]:
    """Void a posted credit or charge."""
    args = UndoArgs(customer_id=customer_id, receipt_id=receipt_id)
    async with ctx.helpdesk.transaction() as conn:
        row = await _undo(conn, "void_account_credit", "account_credits", args, live="posted", undone="voided")
    return {"id": receipt_id, "created": row is not None}


class SeatsArgs(BaseModel):
    """Arguments of `adjust_seats`."""

    customer_id: str
    subscription_id: str
    seats: int = Field(gt=0)


@helpdesk_tool(scope="accounts:execute", args_schema=SeatsArgs, compensation="revert_seat_change")
async def adjust_seats(
    customer_id: str, subscription_id: str, seats: int, ctx: Annotated[ToolContext, InjectedToolArg]
) -> dict[str, Any]:
    """Set the subscription's seats; the former count is kept for the compensation."""
    change_id = receipt_id("se", ctx.idempotency_key)
    async with ctx.helpdesk.transaction() as conn:
        existing = await _existing(conn, "seat_changes", ctx.idempotency_key)
        if existing is not None:
            return {"id": existing["id"], "created": False, "seats": existing["to_seats"]}
        current = await fetch_one(
            conn, "SELECT seats FROM subscription_seats WHERE subscription_id = ?", (subscription_id,)
        )
        await insert_once(
            conn,
            "seat_changes",
            {
                "id": change_id,
                "customer_id": customer_id,
                "subscription_id": subscription_id,
                "from_seats": None if current is None else current["seats"],
                "to_seats": seats,
                "status": "applied",
                "created_at": utc_now(),
                "thread_id": ctx.thread_id,
                "idempotency_key": ctx.idempotency_key,
            },
        )
        await conn.execute(
            "INSERT INTO subscription_seats (subscription_id, seats) VALUES (?, ?) "
            "ON CONFLICT(subscription_id) DO UPDATE SET seats = excluded.seats",
            (subscription_id, seats),
        )
    return {"id": change_id, "created": True, "seats": seats}


@helpdesk_tool(scope="accounts:execute", args_schema=UndoArgs, irreversible=COMPENSATION_ITSELF)
async def revert_seat_change(
    customer_id: str, receipt_id: str, ctx: Annotated[ToolContext, InjectedToolArg]
) -> dict[str, Any]:
    """Put the subscription's seats back to what they were before the change."""
    args = UndoArgs(customer_id=customer_id, receipt_id=receipt_id)
    async with ctx.helpdesk.transaction() as conn:
        row = await _undo(conn, "revert_seat_change", "seat_changes", args, live="applied", undone="reversed")
        if row is not None and row["from_seats"] is None:
            await conn.execute("DELETE FROM subscription_seats WHERE subscription_id = ?", (row["subscription_id"],))
        elif row is not None:
            await conn.execute(
                "UPDATE subscription_seats SET seats = ? WHERE subscription_id = ?",
                (row["from_seats"], row["subscription_id"]),
            )
    return {"id": receipt_id, "created": row is not None}


class PeriodRefundArgs(BaseModel):
    """Arguments of `refund_unused_period`."""

    customer_id: str
    payment_id: str = Field(description="The planned payment; another is chosen if it has too little left.")
    amount_cents: int = Field(gt=0)


# The customer's payments, newest first, with what each has given back and what open refund requests are to take.
_REFUNDABLE_PAYMENTS = (
    f"SELECT p.id, p.status, p.amount_cents, {REFUNDED_CENTS} AS refunded_cents, "
    "COALESCE((SELECT SUM(amount_cents) FROM refund_requests WHERE payment_id = p.id "
    "AND status IN ('requested', 'approved')), 0) AS requested_cents "
    "FROM payments p WHERE p.customer_id = ? ORDER BY p.created_at DESC, p.id DESC"
)


@helpdesk_tool(scope="refunds:write", args_schema=PeriodRefundArgs, compensation="cancel_period_refund")
async def refund_unused_period(
    customer_id: str, payment_id: str, amount_cents: int, ctx: Annotated[ToolContext, InjectedToolArg]
) -> dict[str, Any]:
    """Refund the unused part of the current period: pending until the closure is confirmed.

    The payment is chosen when the refund is made, from what is left then (`refund_source`): the planned one while it
    has enough left, else the newest that has. Refunds made since the plan (another ask of the same ticket, another
    thread) are counted, so no payment gives back more than it took.

    Raises:
        PermanentToolError: no payment of the customer has `amount_cents` left to refund.
    """
    refund_id = receipt_id("pr", ctx.idempotency_key)
    async with ctx.helpdesk.transaction() as conn:
        existing = await _existing(conn, "period_refunds", ctx.idempotency_key)
        if existing is not None:
            return {
                "id": existing["id"],
                "created": False,
                "payment_id": existing["payment_id"],
                "amount_cents": existing["amount_cents"],
            }
        payments = await fetch_all(conn, _REFUNDABLE_PAYMENTS, (customer_id,))
        source = refund_source(payments, amount_cents, prefer=payment_id)
        if source is None:
            raise PermanentToolError(
                "refund_unused_period",
                f"no payment of {customer_id} has {amount_cents} cents left to refund (planned: {payment_id})",
            )
        created = await insert_once(
            conn,
            "period_refunds",
            {
                "id": refund_id,
                "customer_id": customer_id,
                "payment_id": source,
                "amount_cents": amount_cents,
                "status": "pending",
                "created_at": utc_now(),
                "thread_id": ctx.thread_id,
                "idempotency_key": ctx.idempotency_key,
            },
        )
    return {"id": refund_id, "created": created, "payment_id": source, "amount_cents": amount_cents}


@helpdesk_tool(scope="refunds:write", args_schema=UndoArgs, irreversible=COMPENSATION_ITSELF)
async def cancel_period_refund(
    customer_id: str, receipt_id: str, ctx: Annotated[ToolContext, InjectedToolArg]
) -> dict[str, Any]:
    """Cancel a pending refund of an unused period before it settles."""
    args = UndoArgs(customer_id=customer_id, receipt_id=receipt_id)
    async with ctx.helpdesk.transaction() as conn:
        row = await _undo(conn, "cancel_period_refund", "period_refunds", args, live="pending", undone="canceled")
    return {"id": receipt_id, "created": row is not None}


class DataJobsArgs(BaseModel):
    """Arguments of `schedule_data_jobs`."""

    customer_id: str
    delete_after_days: int = Field(default=30, ge=0, le=365, description="Days between the export and deletion.")


@helpdesk_tool(scope="accounts:execute", args_schema=DataJobsArgs, compensation="cancel_data_jobs")
async def schedule_data_jobs(
    customer_id: str, ctx: Annotated[ToolContext, InjectedToolArg], delete_after_days: int = 30
) -> dict[str, Any]:
    """Schedule the export of the customer's data now and its deletion `delete_after_days` later."""
    job_id = receipt_id("dj", ctx.idempotency_key)
    now = datetime.now(UTC)
    async with ctx.helpdesk.transaction() as conn:
        created = await insert_once(
            conn,
            "data_jobs",
            {
                "id": job_id,
                "customer_id": customer_id,
                "export_after": now.isoformat(timespec="seconds"),
                "delete_after": (now + timedelta(days=delete_after_days)).isoformat(timespec="seconds"),
                "status": "scheduled",
                "created_at": utc_now(),
                "thread_id": ctx.thread_id,
                "idempotency_key": ctx.idempotency_key,
            },
        )
    return {"id": job_id, "created": created}


@helpdesk_tool(scope="accounts:execute", args_schema=UndoArgs, irreversible=COMPENSATION_ITSELF)
async def cancel_data_jobs(
    customer_id: str, receipt_id: str, ctx: Annotated[ToolContext, InjectedToolArg]
) -> dict[str, Any]:
    """Cancel a scheduled data export and deletion."""
    args = UndoArgs(customer_id=customer_id, receipt_id=receipt_id)
    async with ctx.helpdesk.transaction() as conn:
        row = await _undo(conn, "cancel_data_jobs", "data_jobs", args, live="scheduled", undone="canceled")
    return {"id": receipt_id, "created": row is not None}


class ConfirmArgs(BaseModel):
    """Arguments of `confirm_account_change`."""

    customer_id: str
    request_id: str = Field(description="The account request ('ar_...') the change carries out.")
    close_account: bool = False
    period_refunds: list[str] = Field(
        default_factory=list,
        description="The pending refunds of the unused period ('pr_...') this change made: a closure settles these "
        "and no other (one an earlier, incompletely undone change left is a person's to settle or cancel).",
    )


@helpdesk_tool(
    scope="accounts:execute",
    args_schema=ConfirmArgs,
    irreversible="the last step of a change, which the customer is told of: nothing after it can fail, and a "
    "confirmed change is reversed by a new change",
)
async def confirm_account_change(
    customer_id: str,
    request_id: str,
    ctx: Annotated[ToolContext, InjectedToolArg],
    close_account: bool = False,
    period_refunds: list[str] | None = None,
) -> dict[str, Any]:
    """Complete the account request; a closure also closes the account and settles the change's period refunds.

    The last step of a change, so it declares no compensation: nothing after it can fail.
    """
    async with ctx.helpdesk.transaction() as conn:
        request = await fetch_one(
            conn, "SELECT status FROM account_requests WHERE id = ? AND customer_id = ?", (request_id, customer_id)
        )
        if request is None:
            raise PermanentToolError("confirm_account_change", f"no request {request_id} for {customer_id}")
        if request["status"] == "completed":
            return {"id": request_id, "created": False}
        await conn.execute("UPDATE account_requests SET status = 'completed' WHERE id = ?", (request_id,))
        if close_account:
            await conn.execute("UPDATE customers SET status = 'closed' WHERE id = ?", (customer_id,))
            await conn.executemany(
                "UPDATE period_refunds SET status = 'settled' WHERE id = ? AND customer_id = ? AND status = 'pending'",
                [(refund, customer_id) for refund in period_refunds or []],
            )
    return {"id": request_id, "created": True}
