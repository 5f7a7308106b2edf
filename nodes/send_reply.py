"""Queue the composed reply in the outbox for a known customer (anonymous replies go back to the caller)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context
from triage.nodes.common import action_record, call_tool, in_this_turn
from triage.state import State

NODE = "send_reply"
TOOLS = ("send_message",)


async def send_reply(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Send the reply to the customer's email on file; without a customer there is nobody to mail."""
    customer = state.get("customer")
    if not customer:
        return {}
    reply = state["reply"]
    args = {
        "to_address": customer["email"],
        "subject": reply["subject"],
        "body": reply["body"],
        "template": reply["template"],
        "customer_id": customer["id"],
    }
    # One message a turn: a later turn that says the same as an earlier one is sent again.
    receipt = await call_tool(runtime, NODE, "send_message", key_from=in_this_turn(state, args), **args)
    record = action_record("message", "send_message", NODE, receipt, template=reply["template"])
    return {"actions": [*state.get("actions", []), record]}
