"""Ask people to approve high-risk actions. The node only asks; the approval policy decides whether to ask.

Each round is its own checkpointed step: the first pass records the request (and its expiry), the next pass
interrupts with the request; every answer loops back here, so a dual approval takes one interrupt per approver.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from triage.context import Context, approver_of, services_of, thread_id_of
from triage.errors import InvalidDecisionError
from triage.journal import ApprovalState
from triage.policies.approvals import REQUIRED_APPROVALS, Tier, approval_tier, decision_refusal, reply_needs_approval
from triage.policies.billing import format_money
from triage.schemas import ApprovalRequest, Decision, decision_from_resume
from triage.state import ApprovalRecord, Draft, ProposedAction, State

NODE = "approve"
Next = Literal["approve", "execute", "escalation"]


def approval_id_for(thread_id: str, action: ProposedAction, turn_step: int = 0) -> str:
    """Stable id of one action's approval: the same action in the same turn of a thread always gets the same id.

    A turn is known by the coordinator step it began at (`State.turn_step`; a turn's number can repeat). A later
    turn of a conversation that asks for the same action gets an approval of its own (an earlier turn's was
    decided); a first turn (step 0) keeps the id it had before turns were told apart.
    """
    canonical = json.dumps({"kind": action["kind"], "args": action["args"]}, sort_keys=True, default=str)
    asked = f"{thread_id}|step {turn_step}|{canonical}" if turn_step else f"{thread_id}|{canonical}"
    return "apr_" + hashlib.sha256(asked.encode()).hexdigest()[:16]


def answer_key(event: str, record: ApprovalRecord, answer: Mapping[str, Any], turn_step: int) -> str:
    """The dedupe key of the audit line that records `event` for an `answer` to the approval of `record`.

    The same whenever that answer is taken in again in the same state: a step run again after its save was lost,
    whether from the same checkpoint (a crash, then a resume) or from its parent (`triage recover` after a
    transient failure, where LangGraph forks the thread and the task gets a new id). Another answer, a later round
    (the next approver), a later refusal (`refusals` counts them) or a later turn of the conversation (known by the
    step it began at, `turn_step`) gets a key of its own.
    """
    canonical = json.dumps(answer, sort_keys=True, default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return (
        f"{event}:{record['approval_id']}:{turn_step}:{len(record['approvers'])}:{record.get('refusals', 0)}:{digest}"
    )


def origin_of(record: ApprovalRecord) -> str:
    """The approval an edited approval descends from (itself when never edited)."""
    return record.get("origin_id") or record["approval_id"]


def actions_to_approve(state: State, policy: Any) -> list[ProposedAction]:
    """The proposed actions, plus the reply itself when it was drafted from a low-confidence classification."""
    actions = list(state.get("proposed_actions", []))
    classification = state.get("classification")
    if (
        classification is not None
        and state.get("route") != "escalation"
        and "draft" in state
        and reply_needs_approval(classification["confidence"], policy)
    ):
        actions.append(
            ProposedAction(
                kind="reply",
                args={"template": state["draft"]["template"]},
                reason=f"reply drafted from a classification with confidence {classification['confidence']:.2f}",
            )
        )
    return actions


async def approve(state: State, runtime: Runtime[Context]) -> Command[Next]:
    """Record, ask for, and take in approvals until every action has the approvals its tier requires."""
    services = await services_of(runtime)
    policy = services.policy.approvals
    thread_id = thread_id_of(runtime)
    approvals = dict(state.get("approvals", {}))
    for action in actions_to_approve(state, policy):
        tier = approval_tier(action["kind"], action["args"], policy)
        if tier == "none":
            continue
        approval_id = approval_id_for(thread_id, action, state.get("turn_step", 0))
        record = approvals.get(approval_id)
        if record is None:
            now = datetime.now(UTC)
            record = ApprovalRecord(
                approval_id=approval_id,
                action=action["kind"],
                tier=tier,
                approvers=[],
                requested_at=now.isoformat(timespec="seconds"),
                expires_at=(now + timedelta(hours=policy.sla.expiry_hours)).isoformat(timespec="seconds"),
            )
            await services.journal.audit(
                thread_id,
                "approval_requested",
                actor=NODE,
                approval_id=approval_id,
                details={"action": action["kind"], "args": action["args"], "tier": tier},
                policy_version=services.policy.version,
                dedupe_key=f"requested:{approval_id}",
            )
            return Command(goto="approve", update={"approvals": {**approvals, approval_id: record}})
        if len(record["approvers"]) >= REQUIRED_APPROVALS[tier]:
            continue
        request = approval_request(state, action, record, tier, thread_id)
        # Index the round before asking, so decisions can be checked and claimed against it (a no-op on re-runs).
        await services.journal.offer_approval(request, origin_id=origin_of(record))
        # Any resume value is read here, our Decision or Agent Inbox's response list; one that cannot be taken is
        # refused with its reason in the next interrupt (Studio and the SDK show it), and the approval stays pending.
        answer = interrupt(request)
        try:
            decision = decision_from_resume(answer, approver=approver_of(runtime))
        except InvalidDecisionError as exc:
            return await _refuse(str(exc), "unknown", record, state, runtime)
        return await _take(decision, state, action, record, tier, runtime)
    return Command(goto="execute")  # every approval is in the state already


def approval_request(
    state: State, action: ProposedAction, record: ApprovalRecord, tier: Tier, thread_id: str
) -> dict[str, Any]:
    """The interrupt payload: stable fields, shaped so LangChain's Agent Inbox can show it too."""
    args = action["args"]
    what = (
        f"refund {format_money(int(args['amount_cents']))} of payment {args['payment_id']} to {args['customer_id']}"
        if action["kind"] == "refund"
        else f"account closure for {args['customer_id']}: cancel the subscription, refund "
        f"{format_money(int(args.get('refund_cents') or 0))} of the unused period, export and delete the data"
        if action["kind"] == "account_closure"
        else f"{action['kind'].replace('_', ' ')} for {args.get('customer_id', 'the customer')}"
        if action["kind"] != "reply"
        else f"send reply '{args['template']}'"
    )
    required = REQUIRED_APPROVALS[tier]
    description = (
        f"Approve: {what}. Reason: {action['reason']}. Tier {tier}: {required} approval(s) needed, "
        f"{len(record['approvers'])} received"
        + (f" ({', '.join(record['approvers'])})." if record["approvers"] else ".")
    )
    ticket = state["ticket"]
    return ApprovalRequest(
        approval_id=record["approval_id"],
        thread_id=thread_id,
        action=action["kind"],
        args=args,
        tier=tier,
        approvals_required=required,
        approvals_received=list(record["approvers"]),
        description=description,
        evidence={
            "reason": action["reason"],
            "ticket_subject": ticket["subject"],
            "customer_id": ticket["customer_id"],
            "classification": {k: state["classification"][k] for k in ("route", "intent", "confidence")},
            "findings": {k: v for k, v in state.get("findings", {}).items() if k == "duplicate_charges"},
        },
        requested_at=record["requested_at"],
        expires_at=record["expires_at"],
        action_request={"action": action["kind"], "args": args},
        config={
            "allow_accept": True,
            "allow_edit": action["kind"] == "refund",
            "allow_respond": True,
            "allow_ignore": False,
        },
        refusal=record.get("refusal"),
    ).model_dump(mode="json")


async def _take(
    decision: Decision,
    state: State,
    action: ProposedAction,
    record: ApprovalRecord,
    tier: Tier,
    runtime: Runtime[Context],
) -> Command[Next]:
    services = await services_of(runtime)
    policy = services.policy.approvals
    thread_id = thread_id_of(runtime)
    approval_id = record["approval_id"]
    approvals = dict(state.get("approvals", {}))

    async def audit(event: str, **details: Any) -> None:
        """Settle the round in the approval index (a no-op when the app claimed it) and record `event`."""
        await services.journal.settle(
            approval_id,
            round_=len(record["approvers"]),
            state=_STATES[decision.decision] if decision.decision != "approve" else _approved(record, tier),
            decision=decision.model_dump(mode="json"),
            approver=decision.approver,
        )
        await services.journal.audit(
            thread_id,
            event,
            actor=decision.approver,
            approval_id=approval_id,
            details=details,
            policy_version=services.policy.version,
            dedupe_key=answer_key(event, record, decision.model_dump(mode="json"), state.get("turn_step", 0)),
        )

    refusal = decision_refusal(
        decision.approver,
        decision.decision,
        tier=tier,
        received=record["approvers"],
        kind=action["kind"],
        args=action["args"],
        changes=decision.args,
        policy=policy,
    )
    if refusal is not None:  # the app refuses these before resuming; this guards the server and direct graph use
        return await _refuse(refusal, decision.approver, record, state, runtime, decision=decision.decision)
    if decision.decision == "timeout":
        await audit("approval_expired", expires_at=record["expires_at"])
        reason = f"approval {approval_id} for {action['kind']} expired at {record['expires_at']} without a decision"
        return Command(goto="escalation", update={"route": "escalation", "route_reason": reason})
    if decision.decision == "reject":
        await audit("rejected", reason=decision.reason, action=action["kind"], args=action["args"])
        rejection = {
            "approval_id": approval_id,
            "approver": decision.approver,
            "reason": decision.reason,
            "action": action["kind"],
            "args": action["args"],
        }
        return Command(
            goto="execute",
            update={
                "rejection": rejection,
                "outcome": "rejected",
                "draft": Draft(template="approval.rejected", facts={}),
            },
        )
    if decision.decision == "edit":
        edited = ProposedAction(
            kind=action["kind"],
            args={**action["args"], **(decision.args or {})},
            reason=f"{action['reason']}; edited by {decision.approver}: {decision.reason}",
        )
        if "ask" in action:
            edited["ask"] = action["ask"]
        proposed = [edited if a == action else a for a in state.get("proposed_actions", [])]
        new_id = approval_id_for(thread_id, edited, state.get("turn_step", 0))
        await audit("edited", args=edited["args"], new_approval_id=new_id, reason=decision.reason)
        approvals[new_id] = ApprovalRecord(
            approval_id=new_id,
            action=edited["kind"],
            tier=approval_tier(edited["kind"], edited["args"], policy),
            approvers=[decision.approver],
            requested_at=record["requested_at"],
            expires_at=record["expires_at"],
            origin_id=origin_of(record),
        )
        return Command(goto="approve", update={"proposed_actions": proposed, "approvals": approvals})
    await audit("approved", reason=decision.reason)
    approved = ApprovalRecord(**{**record, "approvers": [*record["approvers"], decision.approver]})
    approved.pop("refusal", None)
    approvals[approval_id] = approved
    return Command(goto="approve", update={"approvals": approvals})


def refused_record(record: ApprovalRecord, reason: str) -> ApprovalRecord:
    """`record` after a refused answer: the reason for the next interrupt, and one more refusal counted."""
    refusal = f"{reason}; the approval stays pending"
    return ApprovalRecord(**{**record, "refusal": refusal, "refusals": record.get("refusals", 0) + 1})


async def _refuse(
    reason: str,
    actor: str,
    record: ApprovalRecord,
    state: State,
    runtime: Runtime[Context],
    *,
    decision: str | None = None,
) -> Command[Next]:
    """Record a refused answer in the audit trail and ask again, with the reason in the new interrupt."""
    services = await services_of(runtime)
    await services.journal.audit(
        thread_id_of(runtime),
        "refused",
        actor=actor,
        approval_id=record["approval_id"],
        details={"decision": decision, "reason": reason},
        policy_version=services.policy.version,
        dedupe_key=answer_key(
            "refused", record, {"actor": actor, "decision": decision, "reason": reason}, state.get("turn_step", 0)
        ),
    )
    approvals = dict(state.get("approvals", {}))
    approvals[record["approval_id"]] = refused_record(record, reason)
    return Command(goto="approve", update={"approvals": approvals})


_STATES: dict[str, ApprovalState] = {"reject": "rejected", "edit": "edited", "timeout": "expired"}


def _approved(record: ApprovalRecord, tier: Tier) -> ApprovalState:
    return "approved" if len(record["approvers"]) + 1 >= REQUIRED_APPROVALS[tier] else "deciding"
