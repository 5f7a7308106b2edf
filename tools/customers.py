"""Customer profile look-ups."""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.tools import InjectedToolArg
from pydantic import BaseModel, Field

from triage.tools.base import ToolContext, fetch_one, helpdesk_tool


class CustomerArgs(BaseModel):
    """Arguments of `get_customer`."""

    customer_id: str = Field(description="The helpdesk customer id, e.g. 'cus_0001'.")


@helpdesk_tool(scope="customers:read", args_schema=CustomerArgs)
async def get_customer(customer_id: str, ctx: Annotated[ToolContext, InjectedToolArg]) -> dict[str, Any] | None:
    """Return the customer's profile with their current plan and subscription status, or None if unknown."""
    async with ctx.helpdesk.read() as conn:
        return await fetch_one(
            conn,
            """
            SELECT c.id, c.name, c.email, c.phone, c.country, c.status, c.failed_login_attempts, c.created_at,
                   s.id AS subscription_id, s.status AS subscription_status, s.renews_at,
                   p.id AS plan_id, p.name AS plan_name, p.monthly_price_cents
            FROM customers c
            LEFT JOIN subscriptions s ON s.id = (
                SELECT id FROM subscriptions WHERE customer_id = c.id ORDER BY started_at DESC LIMIT 1)
            LEFT JOIN plans p ON p.id = s.plan_id
            WHERE c.id = ?
            """,
            (customer_id,),
        )
