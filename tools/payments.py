"""Read-only billing history: invoices, payments and refunds."""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.tools import InjectedToolArg
from pydantic import BaseModel, Field

from triage.tools.base import ToolContext, fetch_all, fetch_together, helpdesk_tool

INVOICES = "SELECT * FROM invoices WHERE customer_id = ? ORDER BY issued_at DESC, id DESC LIMIT ?"
PAYMENTS = """
SELECT p.*, COALESCE((SELECT SUM(r.amount_cents) FROM refunds r
                      WHERE r.payment_id = p.id AND r.status != 'failed'), 0) AS refunded_cents
FROM payments p WHERE p.customer_id = ? ORDER BY p.created_at DESC, p.id DESC LIMIT ?
"""
REFUNDS = """
SELECT id, payment_id, amount_cents, reason, status, created_at, 'refund' AS source
FROM refunds WHERE customer_id = ?
UNION ALL
SELECT id, payment_id, amount_cents, reason, status, created_at, 'request' AS source
FROM refund_requests WHERE customer_id = ? AND status IN ('requested', 'approved')
ORDER BY created_at DESC LIMIT ?
"""


class BillingHistoryArgs(BaseModel):
    """Arguments of the billing history tools."""

    customer_id: str = Field(description="The helpdesk customer id.")
    limit: int = Field(default=50, ge=1, le=500, description="How many of the newest rows to return.")


class BillingOverviewArgs(BaseModel):
    """Arguments of `billing_overview`."""

    customer_id: str = Field(description="The helpdesk customer id.")
    invoices: int = Field(default=12, ge=1, le=500, description="How many of the newest invoices.")
    payments: int = Field(default=24, ge=1, le=500, description="How many of the newest payments.")
    refunds: int = Field(default=12, ge=1, le=500, description="How many of the newest refunds and requests.")


@helpdesk_tool(scope="payments:read", args_schema=BillingHistoryArgs)
async def list_invoices(
    customer_id: str, ctx: Annotated[ToolContext, InjectedToolArg], limit: int = 50
) -> list[dict[str, Any]]:
    """Return the customer's invoices, newest first."""
    async with ctx.helpdesk.read() as conn:
        return await fetch_all(conn, INVOICES, (customer_id, limit))


@helpdesk_tool(scope="payments:read", args_schema=BillingHistoryArgs)
async def list_payments(
    customer_id: str, ctx: Annotated[ToolContext, InjectedToolArg], limit: int = 50
) -> list[dict[str, Any]]:
    """Return the customer's payments, newest first, each with the amount already refunded."""
    async with ctx.helpdesk.read() as conn:
        return await fetch_all(conn, PAYMENTS, (customer_id, limit))


@helpdesk_tool(scope="payments:read", args_schema=BillingHistoryArgs)
async def list_refunds(
    customer_id: str, ctx: Annotated[ToolContext, InjectedToolArg], limit: int = 50
) -> list[dict[str, Any]]:
    """Return the customer's refunds and open refund requests, newest first."""
    async with ctx.helpdesk.read() as conn:
        return await fetch_all(conn, REFUNDS, (customer_id, customer_id, limit))


@helpdesk_tool(scope="payments:read", args_schema=BillingOverviewArgs)
async def billing_overview(
    customer_id: str,
    ctx: Annotated[ToolContext, InjectedToolArg],
    invoices: int = 12,
    payments: int = 24,
    refunds: int = 12,
) -> dict[str, list[dict[str, Any]]]:
    """Return the customer's newest invoices, payments and refunds (as the three list tools do), read together."""
    async with ctx.helpdesk.read() as conn:
        return await fetch_together(
            conn,
            {
                "invoices": (INVOICES, (customer_id, invoices)),
                "payments": (PAYMENTS, (customer_id, payments)),
                "refunds": (REFUNDS, (customer_id, customer_id, refunds)),
            },
        )
