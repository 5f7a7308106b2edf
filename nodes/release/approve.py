"""Ask for approval of a mass notification: the same approval machinery as refunds (index, interrupt, audit).

The node only asks; closing and notifying run after it. A release that tells no more customers than the policy's
`release.mass_notification_above` goes straight on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from triage.context import Context, approver_of, services_of, thread_id_of
from triage.errors import InvalidDecisionError
from triage.journal import ApprovalState
from triage.nodes.approve import answer_key, approval_id_for, refused_record
from triage.policies.approvals import REQUIRED_APPROVALS, Tier, decision_refusal, mass_notification_tier
from triage.schemas import ApprovalRequest, Decision, decision_from_resume
from triage.state import ApprovalRecord, ProposedAction, ReleaseState

NODE = "approve_mass"
ACTION = "mass_notification"
SAMPLE_SIZE = 5
"""How many recipients the approval shows."""
Next = Literal["approve_mass", "close_tickets", "report"]


def mass_action(state: ReleaseState) -> ProposedAction:
    """The notification as an action to approve: the release and how many customers it tells."""
    recipients = [r for r in state.get("recipients", []) if not r["notified_earlier"]]
    return ProposedAction(
        kind=ACTION,
        args={"version": state["release"]["version"], "recipients": len(recipients)},
        reason=f"release {state['release']['version']} notifies {len(recipients)} customers",
    )


async def approve_mass(state: ReleaseState, runtime: Runtime[Context]) -> Command[Next]:
    """Record, ask for and take in the approvals a mass notification needs (one round per approver)."""
    services = await services_of(runtime)
    policy = services.policy.approvals
    thread_id = thread_id_of(runtime)
    action = mass_action(state)
    tier = mass_notification_tier(int(action["args"]["recipients"]), policy)
    if tier == "none":
        return Command(goto="close_tickets")
    approvals = dict(state.get("approvals", {}))
    approval_id = approval_id_for(thread_id, action)
    record = approvals.get(approval_id)
    if record is None:
        now = datetime.now(UTC)
        record = ApprovalRecord(
            approval_id=approval_id,
            action=ACTION,
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
            details={"action": ACTION, "args": action["args"], "tier": tier},
            policy_version=services.policy.version,
            dedupe_key=f"requested:{approval_id}",
        )
        return Command(goto="approve_mass", update={"approvals": {**approvals, approval_id: record}})
    if len(record["approvers"]) >= REQUIRED_APPROVALS[tier]:
        return Command(goto="close_tickets")
    request = approval_request(state, action, record, tier, thread_id, limit=policy.release.mass_notification_above)
    await services.journal.offer_approval(request, origin_id=approval_id)
    answer = interrupt(request)
    try:
        decision = decision_from_resume(answer, approver=approver_of(runtime))
    except InvalidDecisionError as exc:
        return await _refuse(str(exc), "unknown", None, record, state, runtime)
    refusal = decision_refusal(
        decision.approver,
        decision.decision,
        tier=tier,
        received=record["approvers"],
        kind=ACTION,
        args=action["args"],
        changes=decision.args,
        policy=policy,
    )
    if refusal is not None:
        return await _refuse(refusal, decision.approver, decision.decision, record, state, runtime)
    return await _take(decision, action, record, tier, state, runtime)


def approval_request(
    state: ReleaseState, action: ProposedAction, record: ApprovalRecord, tier: Tier, thread_id: str, *, limit: int
) -> dict[str, Any]:
    """The interrupt payload: the recipients' count, a sample of them and the summary they would read."""
    recipients = [r for r in state.get("recipients", []) if not r["notified_earlier"]]
    version = state["release"]["version"]
    required = REQUIRED_APPROVALS[tier]
    summary = state.get("summary", {})
    description = (
        f"Approve: notify {len(recipients)} customers that release {version} fixes what they reported. "
        f"Reason: {action['reason']} (more than {limit} is a mass message). Tier {tier}: {required} approval(s) "
        f"needed, {len(record['approvers'])} received"
        + (f" ({', '.join(record['approvers'])})." if record["approvers"] else ".")
    )
    return ApprovalRequest(
        approval_id=record["approval_id"],
        thread_id=thread_id,
        action=ACTION,
        args=action["args"],
        tier=tier,
        approvals_required=required,
        approvals_received=list(record["approvers"]),
        description=description,
        evidence={
            "reason": action["reason"],
            "recipients": len(recipients),
            "sample": [
                {"customer_id": r["customer_id"], "name": r["name"], "tickets": r["tickets"]}
                for r in recipients[:SAMPLE_SIZE]
            ],
            "summary": summary.get("text", ""),
            "summary_by": summary.get("by"),
            "fixes": state["release"]["fixes"],
            "tickets": len(state.get("tickets", [])),
        },
        requested_at=record["requested_at"],
        expires_at=record["expires_at"],
        action_request={"action": ACTION, "args": action["args"]},
        config={"allow_accept": True, "allow_edit": False, "allow_respond": True, "allow_ignore": False},
        refusal=record.get("refusal"),
    ).model_dump(mode="json")


async def _take(
    decision: Decision,
    action: ProposedAction,
    record: ApprovalRecord,
    tier: Tier,
    state: ReleaseState,
    runtime: Runtime[Context],
) -> Command[Next]:
    services = await services_of(runtime)
    thread_id = thread_id_of(runtime)
    approval_id = record["approval_id"]
    approved = len(record["approvers"]) + 1 >= REQUIRED_APPROVALS[tier]
    final: ApprovalState = (
        ("approved" if approved else "deciding")
        if decision.decision == "approve"
        else "expired"
        if decision.decision == "timeout"
        else "rejected"
    )
    await services.journal.settle(
        approval_id,
        round_=len(record["approvers"]),
        state=final,
        decision=decision.model_dump(mode="json"),
        approver=decision.approver,
    )
    event = {"approved": "approved", "deciding": "approved", "expired": "approval_expired"}.get(final, "rejected")
    await services.journal.audit(
        thread_id,
        event,
        actor=decision.approver,
        approval_id=approval_id,
        details={"reason": decision.reason},
        policy_version=services.policy.version,
        dedupe_key=answer_key(event, record, decision.model_dump(mode="json"), 0),  # a release is one run
    )
    version = state["release"]["version"]
    if decision.decision == "timeout":
        reason = f"approval {approval_id} to notify customers of release {version} expired without a decision"
        return Command(goto="report", update={"status": "escalated", "status_reason": reason})
    if decision.decision == "reject":
        rejection = {"approval_id": approval_id, "approver": decision.approver, "reason": decision.reason}
        reason = (
            f"{decision.approver} rejected notifying {action['args']['recipients']} customers ({decision.reason}); "
            f"nothing was closed or sent: run the release again to retry"
        )
        return Command(goto="report", update={"rejection": rejection, "status": "completed", "status_reason": reason})
    approvals = dict(state.get("approvals", {}))
    approvals[approval_id] = ApprovalRecord(**{**record, "approvers": [*record["approvers"], decision.approver]})
    approvals[approval_id].pop("refusal", None)
    return Command(goto="approve_mass", update={"approvals": approvals})


async def _refuse(
    reason: str,
    actor: str,
    decision: str | None,
    record: ApprovalRecord,
    state: ReleaseState,
    runtime: Runtime[Context],
) -> Command[Next]:
    """Record a refused answer and ask again, with the reason in the new interrupt."""
    services = await services_of(runtime)
    await services.journal.audit(
        thread_id_of(runtime),
        "refused",
        actor=actor,
        approval_id=record["approval_id"],
        details={"decision": decision, "reason": reason},
        policy_version=services.policy.version,
        dedupe_key=answer_key("refused", record, {"actor": actor, "decision": decision, "reason": reason}, 0),
    )
    approvals = dict(state.get("approvals", {}))
    approvals[record["approval_id"]] = refused_record(record, reason)
    return Command(goto="approve_mass", update={"approvals": approvals})
