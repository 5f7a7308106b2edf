"""Carry out a multi-step account change as a saga: every step once, and on a failure every completed step undone.

`prepare` turns the approved change into its steps; `run_steps` runs them in order, retrying a transient failure
and giving up on a permanent or policy one; when a step fails for good, the compensations of the completed steps
run in reverse order. `hand_off` gives a rolled-back change to a person with what was undone.

Exactly once, whatever crashes: every step and every compensation has an idempotency key, the effects ledger is
asked before each call, and the decision to roll back is recorded in the ledger before the first compensation, so
a re-run (after a crash, by `triage recover`) neither repeats an effect nor goes forward after deciding to go back.
A compensation that fails is never passed over in silence: it is logged as an error, written to the audit trail,
and the change goes to the human queue as urgent with the steps still in effect.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from langgraph.runtime import Runtime

from triage.context import Context, services_of, thread_id_of
from triage.errors import ToolError
from triage.nodes.approve import approval_id_for
from triage.nodes.common import in_this_turn
from triage.policies.account import SAGA_KINDS, saga_steps
from triage.policies.approvals import REQUIRED_APPROVALS, approval_tier
from triage.policies.billing import format_money
from triage.state import AccountChangeState, ActionRecord, Draft, ProposedAction, SagaOutcome, SagaStep
from triage.stores.memory import forget_customer
from triage.tools import ALL_TOOLS
from triage.tools.base import compensation_of, idempotency_key

if TYPE_CHECKING:
    from triage.services import Services

NODE = "account_change"
TOOLS = (
    "change_subscription",
    "revert_subscription_change",
    "post_account_credit",
    "void_account_credit",
    "adjust_seats",
    "revert_seat_change",
    "refund_unused_period",
    "cancel_period_refund",
    "schedule_data_jobs",
    "cancel_data_jobs",
    "confirm_account_change",
    "create_ticket",
)
STEP_ATTEMPTS = 3
"""Tries of a step or compensation that fails transiently (as the nodes' `TRANSIENT_RETRY`), backoff from 0.2 s."""
_log = logging.getLogger(__name__)


def change_of(state: AccountChangeState) -> ProposedAction | None:
    """The account change the run carries out: the first proposed plan change or closure, if any."""
    return next((a for a in state.get("proposed_actions", []) if a["kind"] in SAGA_KINDS), None)


def check_compensations(steps: list[SagaStep]) -> None:
    """Refuse a change in which a step that others follow cannot be undone.

    Raises:
        ValueError: a step's tool declares no compensation (a bug in the step list, never user input).
    """
    for step in steps[:-1]:
        if compensation_of(ALL_TOOLS[step["tool"]]) is None:
            raise ValueError(
                f"step {step['name']!r} ({step['tool']}) is followed by others but declares no compensation"
            )


def _outcome(kind: str, status: str, **fields: Any) -> SagaOutcome:
    base = SagaOutcome(
        kind=kind, status=status, completed=[], failed_step=None, error=None, undone=[], not_undone=[], ticket_id=None
    )
    return SagaOutcome(**{**base, **fields})  # type: ignore[typeddict-item]


async def prepare(state: AccountChangeState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The change's steps, once its approvals are all in; a rejected or unapproved change is not run."""
    services = await services_of(runtime)
    change = change_of(state)
    if change is None:
        return {"steps": [], "saga": _outcome("none", "not_run", error="no plan change or closure was proposed")}
    if state.get("rejection") is not None:
        return {"steps": [], "saga": _outcome(change["kind"], "not_run", error="the change was rejected")}
    tier = approval_tier(change["kind"], change["args"], services.policy.approvals)
    record = state.get("approvals", {}).get(approval_id_for(thread_id_of(runtime), change, state.get("turn_step", 0)))
    if len(record["approvers"] if record is not None else []) < REQUIRED_APPROVALS[tier]:
        reason = f"the change needs {tier} approval, which it has not had; run it through the support graph"
        return {"steps": [], "saga": _outcome(change["kind"], "not_run", error=reason)}
    steps = [
        SagaStep(name=s["name"], tool=s["tool"], args=s["args"]) for s in saga_steps(change["kind"], change["args"])
    ]
    check_compensations(steps)
    # No outcome yet: a thread paused in a later turn by a version that did not clear the last turn's `saga` at a
    # new turn would otherwise skip this change as decided.
    return {"steps": steps, "saga": None}


async def _call_with_retries(services: Services, tool: str, args: dict[str, Any], thread_id: str, key: str) -> Any:
    """Call a tool, retrying it while it fails transiently (same key: a retried effect is not repeated)."""
    for attempt in range(STEP_ATTEMPTS):
        try:
            return await services.gateway.call(NODE, tool, args, thread_id=thread_id, idempotency_key=key)
        except ToolError as exc:
            if exc.kind != "transient" or attempt == STEP_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _with_receipts(step: SagaStep, completed: list[tuple[SagaStep, str, dict[str, Any]]]) -> dict[str, Any]:
    """A step's arguments, with what earlier steps made that it needs.

    A closure's confirmation settles the period refunds of this change alone, whose ids are known once made.
    """
    if step["tool"] != "confirm_account_change" or not step["args"].get("close_account"):
        return step["args"]
    made = [str(receipt["id"]) for done, _, receipt in completed if done["tool"] == "refund_unused_period"]
    return {**step["args"], "period_refunds": made}


def step_key(thread_id: str, change: ProposedAction, step: SagaStep, turn_step: int = 0) -> str:
    """The idempotency key of one step of one change in one turn of a thread (known by the step it began at)."""
    return idempotency_key(
        thread_id, NODE, step["tool"], {"change": approval_id_for(thread_id, change, turn_step), "step": step["name"]}
    )


async def run_steps(state: AccountChangeState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Run the steps in order; when one fails for good, undo the completed ones in reverse order, once each."""
    if state.get("saga") is not None:  # prepare decided not to run it (an earlier turn's is cleared to None)
        return {}
    change = change_of(state)
    assert change is not None
    services = await services_of(runtime)
    thread_id = thread_id_of(runtime)
    journal, version = services.journal, services.policy.version
    steps = state.get("steps", [])
    actions: list[ActionRecord] = list(state.get("actions", []))
    change_id = approval_id_for(thread_id, change, state.get("turn_step", 0))
    failure_key = idempotency_key(thread_id, NODE, "rollback", {"change": change_id})
    failure = await journal.receipt(failure_key)
    completed: list[tuple[SagaStep, str, dict[str, Any]]] = []
    for step in steps:
        key = step_key(thread_id, change, step, state.get("turn_step", 0))
        receipt = await journal.receipt(key)
        if receipt is None and failure is not None:
            break  # decided to roll back earlier (before a crash): nothing more goes forward
        if receipt is None:
            try:
                args = _with_receipts(step, completed)
                receipt = await _call_with_retries(services, step["tool"], args, thread_id, key)
            except ToolError as exc:
                failure = await journal.record_effect(
                    failure_key,
                    thread_id=thread_id,
                    kind="rollback",
                    receipt={"id": change_id, "step": step["name"], "error": str(exc), "failure_class": exc.kind},
                    policy_version=version,
                )
                break
            receipt = await journal.record_effect(
                key,
                thread_id=thread_id,
                kind=f"{change['kind']}:{step['name']}",
                receipt=receipt,
                policy_version=version,
            )
        completed.append((step, key, receipt))
        actions.append(_record(step["name"], step["tool"], receipt, step["args"]))
    done = [step["name"] for step, _, _ in completed]
    if failure is None:
        await journal.audit(
            thread_id,
            "change_completed",
            actor=NODE,
            details={"change": change["kind"], "steps": done},
            policy_version=version,
            dedupe_key=f"completed:{change_id}",
        )
        if change["kind"] == "account_closure":  # nothing is remembered of a closed account
            await forget_customer(runtime.store, str(change["args"]["customer_id"]))
        return {"actions": actions, "saga": _outcome(change["kind"], "completed", completed=done)}
    undone, not_undone = [], []
    for step, key, receipt in reversed(completed):
        outcome = await _compensate(services, thread_id, step, key, receipt)
        if isinstance(outcome, str):
            not_undone.append(step["name"])
            await _escalate_loudly(services, thread_id, change_id, step, outcome)
            continue
        undone.append(step["name"])
        actions.append(_record(f"undo:{step['name']}", outcome["tool"], outcome, step["args"]))
    status = "rollback_failed" if not_undone else "rolled_back"
    await journal.audit(
        thread_id,
        "change_rolled_back" if not not_undone else "rollback_incomplete",
        actor=NODE,
        details={
            "change": change["kind"],
            "failed_step": failure["step"],
            "error": failure["error"],
            "undone": undone,
            "not_undone": not_undone,
        },
        policy_version=version,
        dedupe_key=f"rolled_back:{change_id}",
    )
    saga = _outcome(
        change["kind"],
        status,
        completed=done,
        failed_step=failure["step"],
        error=failure["error"],
        undone=undone,
        not_undone=not_undone,
    )
    return {"actions": actions, "saga": saga}


async def _compensate(
    services: Services, thread_id: str, step: SagaStep, key: str, receipt: dict[str, Any]
) -> dict[str, Any] | str:
    """Run a completed step's compensation once (ledger first); its receipt, or why it failed."""
    tool = compensation_of(ALL_TOOLS[step["tool"]])
    assert tool is not None  # check_compensations
    undo_key = idempotency_key(thread_id, NODE, tool, {"undo": key})
    done = await services.journal.receipt(undo_key)
    if done is not None:
        return done
    args = {"customer_id": step["args"]["customer_id"], "receipt_id": str(receipt["id"])}
    try:
        made = await _call_with_retries(services, tool, args, thread_id, undo_key)
    except ToolError as exc:
        return str(exc)
    return await services.journal.record_effect(
        undo_key,
        thread_id=thread_id,
        kind=f"compensation:{step['name']}",
        receipt={**made, "tool": tool, "undoes": str(receipt["id"])},
        policy_version=services.policy.version,
    )


async def _escalate_loudly(services: Services, thread_id: str, change_id: str, step: SagaStep, error: str) -> None:
    """A compensation failed: the step's effect stands. Log it as an error and write it to the audit trail."""
    _log.error(
        "ROLLBACK INCOMPLETE in thread %s: undoing step %r (%s) failed: %s; a person must undo it",
        thread_id,
        step["name"],
        step["tool"],
        error,
    )
    await services.journal.audit(
        thread_id,
        "compensation_failed",
        actor=NODE,
        details={"step": step["name"], "tool": step["tool"], "error": error, "still_in_effect": True},
        policy_version=services.policy.version,
        dedupe_key=f"compensation_failed:{change_id}:{step['name']}",
    )


def _record(kind: str, tool: str, receipt: dict[str, Any], args: dict[str, Any]) -> ActionRecord:
    amount = args.get("amount_cents")
    details: dict[str, Any] = {"created": bool(receipt.get("created", True))}
    if "payment_id" in receipt:  # a refund's payment is chosen when it is made, not taken from the plan
        details["payment_id"] = receipt["payment_id"]
    return ActionRecord(
        kind=kind,
        tool=tool,
        receipt_id=str(receipt["id"]),
        node=NODE,
        details=details,
        amount_cents=int(amount) if amount is not None else None,
    )


async def hand_off(state: AccountChangeState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Confirm a completed change to the customer, or hand a rolled-back one to a person with what was undone."""
    saga = state["saga"]
    change = change_of(state)
    draft = state.get("draft") or Draft(template="account.change_done", facts={})
    facts = dict(draft["facts"])
    if saga["status"] == "completed":
        assert change is not None
        return {"draft": _done_draft(change, facts)}
    if saga["status"] == "not_run":
        return {}
    services = await services_of(runtime)
    thread_id = thread_id_of(runtime)
    failed = saga["status"] == "rollback_failed"
    lines = [
        f"{saga['kind'].replace('_', ' ')} for {change['args']['customer_id'] if change else 'the customer'} "
        f"failed at step {saga['failed_step']}: {saga['error']}",
        f"Completed, then undone (in this order): {', '.join(saga['undone']) or 'nothing'}.",
    ]
    if failed:
        lines.append(f"ROLLBACK INCOMPLETE: still in effect, undo by hand: {', '.join(saga['not_undone'])}.")
    lines.append(f"Thread {thread_id}; the audit trail has every step and compensation.")
    args = {
        "queue": "account",
        "priority": "urgent" if failed else "high",
        "subject": ("ROLLBACK INCOMPLETE: " if failed else "Rolled back: ")
        + f"{saga['kind'].replace('_', ' ')} for {change['args']['customer_id'] if change else 'a customer'}",
        "summary": "\n".join(lines),
        "customer_id": change["args"]["customer_id"] if change else None,
    }
    key = idempotency_key(thread_id, NODE, "create_ticket", in_this_turn(state, args))  # a later turn's is its own
    receipt = await services.gateway.call(NODE, "create_ticket", args, thread_id=thread_id, idempotency_key=key)
    reason = f"{saga['kind'].replace('_', ' ')} rolled back at {saga['failed_step']}; handed to a person"
    if failed:
        reason = f"ROLLBACK INCOMPLETE ({', '.join(saga['not_undone'])} still in effect); handed to a person as urgent"
    return {
        "saga": SagaOutcome(**{**saga, "ticket_id": str(receipt["id"])}),
        "draft": Draft(
            template="account.change_rolled_back",
            facts={"change": saga["kind"].replace("_", " "), "ticket_id": str(receipt["id"])},
        ),
        "status": "escalated",
        "status_reason": reason,
    }


def _done_draft(change: ProposedAction, facts: dict[str, Any]) -> Draft:
    args = change["args"]
    if change["kind"] == "plan_change":
        amount = int(args["proration_cents"])
        note = (
            f"A prorated charge of {format_money(amount)} is added to your next invoice."
            if amount > 0
            else f"A prorated credit of {format_money(-amount)} is taken off your next invoice."
            if amount < 0
            else "There is nothing to prorate."
        )
        done = {"target_plan": facts.get("target_plan", args["to_plan"]), "request_id": args["request_id"]}
        return Draft(template="account.plan_changed", facts={**done, "proration_note": note})
    refund = int(args.get("refund_cents") or 0)
    note = (
        f"We are refunding {format_money(refund)} for the unused part of your billing period."
        if refund and args.get("payment_id")
        else "There is no unused period to refund."
    )
    return Draft(template="account.closed", facts={"request_id": args["request_id"], "refund_note": note})
