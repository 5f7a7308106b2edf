"""Run the approved effects, exactly once: a refund, an account deletion, a data export.

Each effect's idempotency key is derived from the thread and the approval that allowed it (the original approval,
whatever edits changed its arguments), or from the action itself when it needed none. The ledger in the checkpoint
store is asked first; a miss calls the tool with that key (the helpdesk refuses a second row for the same key) and
records the receipt. Re-running this node after a crash, at any point, repeats nothing; one approval yields at most
one effect.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, services_of, thread_id_of
from triage.nodes.approve import approval_id_for, origin_of
from triage.nodes.common import action_record, call_tool
from triage.policies.billing import format_money
from triage.policies.planning import PLAN_TEMPLATE
from triage.state import ActionRecord, Draft, ProposedAction, State
from triage.stores.memory import forget_customer
from triage.tools.base import idempotency_key

NODE = "execute"
TOOLS = ("issue_refund", "complete_account_request", "decline_request")
_EFFECTS = {
    "refund": "issue_refund",
    "account_deletion": "complete_account_request",
    "data_export": "complete_account_request",
}
DONE_PROMISES = {
    "billing.duplicate_refunded": "refund",
    "billing.refunded": "refund",
    "account.deleted": "account_deletion",
    "account.data_export_started": "data_export",
}
"""Replies that say an effect happened, and the effect: such a reply needs the effect in the run's actions."""
# What the reply says once the effect has happened.
_DONE_TEMPLATES = {
    "billing.duplicate_refund_requested": "billing.duplicate_refunded",
    "billing.refund_requested": "billing.refunded",
    "account.deletion_requested": "account.deleted",
    "account.data_export_requested": "account.data_export_started",
}


async def execute(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Carry out every approved effect once and point the reply at what was done.

    After a rejection nothing is carried out: the rejected request is marked as such so no one acts on it later.
    """
    services = await services_of(runtime)
    thread_id = thread_id_of(runtime)
    actions: list[ActionRecord] = list(state.get("actions", []))
    rejection = state.get("rejection")
    if rejection is not None:
        args = rejection["args"]
        if "request_id" in args:
            await call_tool(
                runtime, NODE, "decline_request", customer_id=args["customer_id"], request_id=args["request_id"]
            )
        return {}
    facts: dict[str, Any] = {}
    by_ask: dict[int, dict[str, Any]] = {}
    ran = False
    for action in state.get("proposed_actions", []):
        tool = _EFFECTS.get(action["kind"])
        if tool is None:
            continue
        args = {k: v for k, v in action["args"].items() if k in _ARGS[tool]}
        key = effect_key(state, thread_id, action, tool, args)
        receipt = await services.journal.receipt(key)
        if receipt is None:
            receipt = await services.gateway.call(NODE, tool, args, thread_id=thread_id, idempotency_key=key)
            receipt = await services.journal.record_effect(
                key, thread_id=thread_id, kind=action["kind"], receipt=receipt, policy_version=services.policy.version
            )
        ran = True
        if action["kind"] == "account_deletion":
            await forget_customer(runtime.store, str(args["customer_id"]))  # nothing remembered of a deleted account
        amount = args.get("amount_cents")
        actions.append(action_record(action["kind"], tool, NODE, receipt, amount_cents=amount, idempotency_key=key))
        done = {"refund_id": receipt["id"], "amount": format_money(int(amount))} if amount else {}
        facts.update(done)
        if "ask" in action:
            by_ask.setdefault(action["ask"], {}).update(done)
    if not ran:
        return {}  # nothing was due: the actions are the state's already
    draft = state.get("draft")
    if draft is None:
        return {"actions": actions}
    if draft["template"] == PLAN_TEMPLATE:
        parts = [
            {
                **part,
                "template": _DONE_TEMPLATES.get(part["template"], part["template"]),
                "facts": {**part["facts"], **by_ask[part["index"]]},
            }
            if part["index"] in by_ask
            else part
            for part in draft["facts"]["parts"]
        ]
        return {"actions": actions, "draft": Draft(template=PLAN_TEMPLATE, facts={"parts": parts})}
    swapped = Draft(
        template=_DONE_TEMPLATES.get(draft["template"], draft["template"]), facts={**draft["facts"], **facts}
    )
    return {"actions": actions, "draft": swapped}


def effect_key(state: State, thread_id: str, action: ProposedAction, tool: str, args: dict[str, Any]) -> str:
    """The effect's idempotency key: from its original approval when it had one, else from its arguments."""
    record = state.get("approvals", {}).get(approval_id_for(thread_id, action, state.get("turn_step", 0)))
    if record is not None:
        return idempotency_key(thread_id, NODE, tool, {"approval": origin_of(record)})
    return idempotency_key(thread_id, NODE, tool, args)


_ARGS = {
    "issue_refund": ("customer_id", "payment_id", "amount_cents", "request_id"),
    "complete_account_request": ("customer_id", "request_id"),
}
