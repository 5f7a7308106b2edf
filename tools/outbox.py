"""The outbox of messages to customers; a mailer outside triage delivers them."""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.tools import InjectedToolArg
from pydantic import BaseModel, Field

from triage.tools.base import ToolContext, helpdesk_tool, insert_row_once, receipt_id, utc_now


class SendMessageArgs(BaseModel):
    """Arguments of `send_message`."""

    to_address: str = Field(min_length=3, max_length=320)
    subject: str = Field(min_length=1, max_length=300)
    body: str = Field(min_length=1, max_length=50_000)
    template: str = Field(min_length=1, max_length=120)
    customer_id: str | None = None


@helpdesk_tool(
    scope="outbox:send",
    args_schema=SendMessageArgs,
    irreversible="a message may be delivered and read at once: it cannot be unsent, a correction is a new message",
)
async def send_message(
    to_address: str,
    subject: str,
    body: str,
    template: str,
    ctx: Annotated[ToolContext, InjectedToolArg],
    customer_id: str | None = None,
) -> dict[str, Any]:
    """Queue a message to the customer; the same message twice in a thread is queued once."""
    message_id = receipt_id("msg", ctx.idempotency_key)
    row = {
        "id": message_id,
        "customer_id": customer_id,
        "to_address": to_address,
        "subject": subject,
        "body": body,
        "template": template,
        "status": "queued",
        "created_at": utc_now(),
        "thread_id": ctx.thread_id,
        "idempotency_key": ctx.idempotency_key,
    }
    created = await ctx.helpdesk.write(lambda db: insert_row_once(db, "outbox", row))
    return {"id": message_id, "created": created, "to_address": to_address}
