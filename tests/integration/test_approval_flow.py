"""Approvals and approved effects in one process, asserted on what people see: the pending request, the refund
rows, the audit trail, the reply. (test_approvals.py drives the same flows through the CLI in subprocesses.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import policy_copy, rows
from triage import TriageApp
from triage.models.tier import LocalModelTier, UsageSink
from triage.policies.billing import format_money
from triage.settings import Settings
from triage.state import Classification

DUPLICATE = "You charged me twice for the same order."


def run(app: TriageApp, customer_id: str, body: str = DUPLICATE, subject: str = "Charged twice") -> Any:
    return app.run({"customer_id": customer_id, "subject": subject, "body": body})


def refunds(settings: Settings, thread_id: str) -> list[dict[str, Any]]:
    return rows(
        settings.helpdesk_path, "SELECT amount_cents, payment_id FROM refunds WHERE thread_id = ?", (thread_id,)
    )


def audit(app: TriageApp, thread_id: str) -> list[dict[str, Any]]:
    return app.thread(thread_id).audit


def test_refund_at_or_below_the_no_approval_limit_runs_without_asking(app: TriageApp, settings: Settings) -> None:
    result = run(app, "cus_small_dup")  # a duplicated $19.00 charge
    assert (result.status, result.pending_approval) == ("completed", None)
    [refund] = refunds(settings, result.thread_id)
    assert refund["amount_cents"] == 1900
    assert [(a.kind, a.amount_cents) for a in result.actions] == [
        ("refund_request", 1900),
        ("refund", 1900),
        ("message", None),
    ]
    assert [line["event"] for line in audit(app, result.thread_id)] == ["effect"]
    assert result.reply is not None and result.reply.template == "billing.duplicate_refunded"
    assert "$19.00" in result.reply.body


def test_single_approval_request_payload_and_audit(app: TriageApp, settings: Settings) -> None:
    paused = run(app, "cus_mid_dup")  # a duplicated $240.00 charge: one approval
    assert paused.status == "awaiting_approval" and paused.reply is None
    pending = paused.pending_approval
    assert pending is not None
    payment = pending["args"]["payment_id"]
    request_id = pending["args"]["request_id"]
    assert pending["args"] == {
        "customer_id": "cus_mid_dup",
        "payment_id": payment,
        "amount_cents": 24000,
        "request_id": request_id,
    }
    original = paused.findings["duplicate_charges"][0]["original_id"]
    assert pending["description"] == (
        f"Approve: refund $240.00 of payment {payment} to cus_mid_dup. Reason: duplicate of {original}. "
        "Tier single: 1 approval(s) needed, 0 received."
    )
    assert (pending["action"], pending["tier"], pending["approvals_required"], pending["approvals_received"]) == (
        "refund",
        "single",
        1,
        [],
    )
    assert pending["thread_id"] == paused.thread_id and pending["approval_id"].startswith("apr_")
    assert pending["evidence"] == {
        "reason": f"duplicate of {original}",
        "ticket_subject": "Charged twice",
        "customer_id": "cus_mid_dup",
        "classification": {"route": "billing", "intent": paused.intent, "confidence": paused.confidence},
        "findings": {"duplicate_charges": paused.findings["duplicate_charges"]},
    }
    assert pending["action_request"] == {"action": "refund", "args": pending["args"]}
    assert pending["config"] == {"allow_accept": True, "allow_edit": True, "allow_respond": True, "allow_ignore": False}
    waited = datetime.fromisoformat(pending["expires_at"]) - datetime.fromisoformat(pending["requested_at"])
    assert waited == timedelta(hours=24)  # sla.expiry_hours
    assert refunds(settings, paused.thread_id) == []
    [requested] = audit(app, paused.thread_id)
    assert {k: requested[k] for k in ("event", "actor", "approval_id", "details", "policy_version")} == {
        "event": "approval_requested",
        "actor": "approve",
        "approval_id": pending["approval_id"],
        "details": {"action": "refund", "args": pending["args"], "tier": "single"},
        "policy_version": paused.policy_version,
    }

    done = app.resume(paused.thread_id, {"approver": "bob", "decision": "approve", "reason": "bank confirms"})
    assert done.status == "completed"
    assert refunds(settings, paused.thread_id) == [{"amount_cents": 24000, "payment_id": payment}]
    [refund] = [a for a in done.actions if a.kind == "refund"]
    assert (refund.tool, refund.amount_cents) == ("issue_refund", 24000)
    lines = audit(app, paused.thread_id)
    assert [(line["event"], line["actor"], line["approval_id"]) for line in lines] == [
        ("approval_requested", "approve", pending["approval_id"]),
        ("approved", "bob", pending["approval_id"]),
        ("effect", "execute", None),
    ]
    assert lines[1]["details"] == {"reason": "bank confirms"}
    assert lines[2]["details"]["kind"] == "refund" and lines[2]["details"]["id"] == refund.receipt_id
    assert {line["policy_version"] for line in lines} == {paused.policy_version}
    assert done.reply is not None and done.reply.template == "billing.duplicate_refunded"
    assert "$240.00" in done.reply.body and refund.receipt_id in done.reply.body


def test_dual_approval_takes_two_rounds(app: TriageApp, settings: Settings) -> None:
    paused = run(app, "cus_large_dup")  # a duplicated $1,200.00 charge: two approvals
    assert paused.pending_approval is not None and paused.pending_approval["tier"] == "dual"
    first = app.resume(paused.thread_id, {"approver": "alice", "decision": "approve"})
    assert first.status == "awaiting_approval"
    pending = first.pending_approval
    assert pending is not None and pending["approval_id"] == paused.pending_approval["approval_id"]
    assert pending["approvals_received"] == ["alice"]
    assert pending["description"].endswith("Tier dual: 2 approval(s) needed, 1 received (alice).")
    assert refunds(settings, paused.thread_id) == []
    done = app.resume(paused.thread_id, {"approver": "sam", "decision": "approve"})
    assert done.status == "completed"
    assert [r["amount_cents"] for r in refunds(settings, paused.thread_id)] == [120000]
    events = [(line["event"], line["actor"]) for line in audit(app, paused.thread_id)]
    assert events == [
        ("approval_requested", "approve"),
        ("approved", "alice"),
        ("approved", "sam"),
        ("effect", "execute"),
    ]


def test_edit_lowers_the_refund_into_a_lower_tier(app: TriageApp, settings: Settings) -> None:
    paused = run(app, "cus_large_dup")
    old_id = paused.pending_approval["approval_id"]
    done = app.resume(
        paused.thread_id,
        {"approver": "sam", "decision": "edit", "args": {"amount_cents": 40000}, "reason": "half was a preorder"},
    )
    assert done.status == "completed"
    assert [r["amount_cents"] for r in refunds(settings, paused.thread_id)] == [40000]
    [refund] = [a for a in done.actions if a.kind == "refund"]
    assert refund.amount_cents == 40000
    [_, edited, effect] = audit(app, paused.thread_id)
    assert (edited["event"], edited["actor"], edited["approval_id"]) == ("edited", "sam", old_id)
    assert edited["details"]["args"]["amount_cents"] == 40000
    assert edited["details"]["reason"] == "half was a preorder"
    assert edited["details"]["new_approval_id"] not in (old_id, None)
    assert effect["event"] == "effect"
    [proposal] = done.proposed_actions
    assert proposal["args"]["amount_cents"] == 40000
    assert proposal["reason"].endswith("; edited by sam: half was a preorder")
    assert done.reply is not None and "$400.00" in done.reply.body


def test_edit_within_the_dual_tier_still_needs_a_second_approver(app: TriageApp, settings: Settings) -> None:
    paused = run(app, "cus_large_dup")
    first = app.resume(paused.thread_id, {"approver": "alice", "decision": "edit", "args": {"amount_cents": 100000}})
    assert first.status == "awaiting_approval"
    pending = first.pending_approval
    assert pending is not None and pending["args"]["amount_cents"] == 100000
    assert (pending["tier"], pending["approvals_received"]) == ("dual", ["alice"])
    assert pending["approval_id"] != paused.pending_approval["approval_id"]
    [indexed] = app.pending_approvals()
    assert (indexed.approval_id, indexed.origin_id) == (pending["approval_id"], paused.pending_approval["approval_id"])
    done = app.resume(paused.thread_id, {"approver": "sam", "decision": "approve"})
    assert done.status == "completed"
    assert [r["amount_cents"] for r in refunds(settings, paused.thread_id)] == [100000]


def test_reject_runs_no_effect_and_declines_the_request(app: TriageApp, settings: Settings) -> None:
    paused = run(app, "cus_mid_dup")
    approval_id = paused.pending_approval["approval_id"]
    done = app.resume(paused.thread_id, {"approver": "alice", "decision": "reject", "reason": "a preorder"})
    assert done.status == "completed"
    assert refunds(settings, paused.thread_id) == []
    assert done.rejection == {
        "approval_id": approval_id,
        "approver": "alice",
        "reason": "a preorder",
        "action": "refund",
        "args": paused.pending_approval["args"],
    }
    assert done.reply is not None and done.reply.template == "approval.rejected"
    assert (done.status, done.status_reason) == ("completed", "rejected")
    statuses = rows(
        settings.helpdesk_path, "SELECT status FROM refund_requests WHERE thread_id = ?", (paused.thread_id,)
    )
    assert statuses == [{"status": "rejected"}]
    last = audit(app, paused.thread_id)[-1]
    assert (last["event"], last["actor"], last["approval_id"]) == ("rejected", "alice", approval_id)
    assert last["details"] == {"reason": "a preorder", "action": "refund", "args": paused.pending_approval["args"]}


def test_expired_approval_is_escalated_never_executed(settings: Settings, tmp_path: Path) -> None:
    folder = policy_copy(tmp_path, "approvals.toml", "expiry_hours = 24", "expiry_hours = 0.0000001")
    app = TriageApp(settings.model_copy(update={"policy_dir": folder}))
    try:
        paused = run(app, "cus_mid_dup")
        pending = paused.pending_approval
        assert pending is not None and pending["expires_at"] == pending["requested_at"]
        [swept] = app.sweep()
        assert (swept.status, swept.route) == ("escalated", "escalation")
        assert swept.status_reason is not None
        assert f"approval {pending['approval_id']} for refund expired at {pending['expires_at']}" in (
            swept.status_reason
        )
        assert refunds(settings, paused.thread_id) == []
        last = audit(app, paused.thread_id)[-1]
        assert (last["event"], last["approval_id"], last["details"]) == (
            "approval_expired",
            pending["approval_id"],
            {"expires_at": pending["expires_at"]},
        )
    finally:
        app.close()


def test_account_deletion_needs_two_approvals_then_completes(app: TriageApp, settings: Settings) -> None:
    paused = app.run(
        {
            "customer_id": "cus_0002",
            "subject": "Delete my account",
            "body": "Please delete my account and all of my data permanently.",
        }
    )
    pending = paused.pending_approval
    assert pending is not None and (pending["action"], pending["tier"]) == ("account_deletion", "dual")
    assert pending["description"].startswith("Approve: account deletion for cus_0002. Reason: ")
    assert pending["config"]["allow_edit"] is False
    app.resume(paused.thread_id, {"approver": "bob", "decision": "approve"})
    done = app.resume(paused.thread_id, {"approver": "sam", "decision": "approve"})
    assert done.status == "completed"
    [effect] = [a for a in done.actions if a.tool == "complete_account_request"]
    assert (effect.kind, effect.amount_cents) == ("account_deletion", None)
    assert done.reply is not None and done.reply.template == "account.deleted"
    assert [r["status"] for r in rows(settings.helpdesk_path, "SELECT status FROM account_requests")] == ["completed"]


class PinnedConfidenceTier(LocalModelTier):
    """The local tier with the route and confidence pinned, so a test does not depend on a trained model's mood."""

    def __init__(self, cache_dir: Path, route: str, confidence: float, intent: str | None = None) -> None:
        super().__init__(cache_dir)
        self.route, self.confidence, self.intent = route, confidence, intent

    async def classify(self, text: str, *, usage: UsageSink | None = None) -> Classification:
        classification = await super().classify(text, usage=usage)
        pinned = {"route": self.route, "confidence": self.confidence}
        return Classification(**{**classification, **pinned, "intent": self.intent or classification["intent"]})


@pytest.fixture
def pinned(settings: Settings) -> Iterator[Any]:
    opened: list[TriageApp] = []

    def open_app(confidence: float, route: str = "general", intent: str | None = None) -> TriageApp:
        home = settings.home.parent / f"home-{len(opened)}"
        app = TriageApp(
            settings.model_copy(update={"home": home}),
            models=PinnedConfidenceTier(settings.cache_dir, route, confidence, intent),
        )
        opened.append(app)
        return app

    yield open_app
    for app in opened:
        app.close()


@pytest.mark.parametrize(("confidence", "asks"), [(0.8, True), (0.8999, True), (0.9, False), (0.95, False)])
def test_reply_approval_follows_the_confidence_threshold(pinned: Any, confidence: float, asks: bool) -> None:
    app = pinned(confidence)
    result = app.run({"subject": "Opening hours", "body": "When is your support team available?"})
    assert (result.route, result.confidence) == ("general", confidence)
    if not asks:
        assert result.status == "completed" and result.reply is not None
        return
    assert result.status == "awaiting_approval" and result.reply is None
    pending = result.pending_approval
    assert pending is not None
    assert (pending["action"], pending["tier"], pending["approvals_required"]) == ("reply", "single", 1)
    template = pending["args"]["template"]
    assert pending["description"] == (
        f"Approve: send reply '{template}'. Reason: reply drafted from a classification with confidence "
        f"{confidence:.2f}. Tier single: 1 approval(s) needed, 0 received."
    )
    assert pending["config"]["allow_edit"] is False
    done = app.resume(result.thread_id, {"approver": "bob", "decision": "approve"})
    assert done.status == "completed" and done.reply is not None and done.reply.template == template


def test_an_escalated_ticket_is_not_held_for_reply_approval(pinned: Any) -> None:
    app = pinned(0.3)  # below routing's min_confidence: escalated, and the human queue needs no reply approval
    result = app.run({"subject": "Opening hours", "body": "When is your support team available?"})
    assert (result.route, result.status, result.pending_approval) == ("escalation", "escalated", None)


def test_rejected_reply_declines_nothing_and_sends_the_rejection(pinned: Any) -> None:
    app = pinned(0.85)
    paused = app.run({"subject": "Opening hours", "body": "When is your support team available?"})
    assert paused.pending_approval is not None and paused.pending_approval["action"] == "reply"
    done = app.resume(paused.thread_id, {"approver": "alice", "decision": "reject", "reason": "wrong article"})
    assert done.status == "completed"
    assert done.reply is not None and done.reply.template == "approval.rejected"
    assert done.actions == [], "nothing to decline or execute (and an anonymous reply goes back to the caller)"
    assert done.rejection is not None and done.rejection["action"] == "reply"


def test_refund_of_the_latest_payment_is_reported_as_done(pinned: Any, settings: Settings) -> None:
    app = pinned(0.9, route="billing", intent="refund_request")
    paused = app.run({"customer_id": "cus_0001", "subject": "Refund", "body": "Please refund my last payment."})
    proposal = paused.proposed_actions[0]
    amount = proposal["args"]["amount_cents"]
    if paused.status == "awaiting_approval":
        done = app.resume(paused.thread_id, {"approver": "sam", "decision": "approve"})
        if done.status == "awaiting_approval":
            done = app.resume(paused.thread_id, {"approver": "alice", "decision": "approve"})
    else:
        done = paused
    assert done.status == "completed"
    [refund] = [a for a in done.actions if a.kind == "refund"]
    assert refund.amount_cents == amount
    assert done.reply is not None and done.reply.template == "billing.refunded"
    assert f"(refund {refund.receipt_id})" in done.reply.body
    assert format_money(amount) in done.reply.body


def test_data_export_after_two_approvals_starts_the_export(app: TriageApp, settings: Settings) -> None:
    paused = app.run(
        {
            "customer_id": "cus_0002",
            "subject": "My data",
            "body": "I would like a copy of all the personal data you hold about me (GDPR request).",
        }
    )
    pending = paused.pending_approval
    assert pending is not None and (pending["action"], pending["tier"]) == ("data_export", "dual")
    app.resume(paused.thread_id, {"approver": "sam", "decision": "approve"})
    done = app.resume(paused.thread_id, {"approver": "alice", "decision": "approve"})
    assert done.status == "completed"
    assert done.reply is not None and done.reply.template == "account.data_export_started"
    [effect] = [a for a in done.actions if a.tool == "complete_account_request"]
    assert effect.kind == "data_export" and effect.receipt_id in done.reply.body


@pytest.mark.parametrize(
    ("decision", "reason"),
    [
        ({"approver": "mallory", "decision": "approve"}, "'mallory' is not an approver in the approval policy"),
        (
            {"approver": "bob", "decision": "edit", "args": {"amount_cents": 99999}},
            "an edit may lower a refund, not raise it above 24000 cents",
        ),
    ],
)
def test_the_node_itself_refuses_a_decision_the_app_would_refuse(
    app: TriageApp, settings: Settings, decision: dict[str, Any], reason: str
) -> None:
    """Resumed straight through the graph (no app checks), the approval node records the refusal and asks again."""
    paused = run(app, "cus_mid_dup")
    approval_id = paused.pending_approval["approval_id"]
    resume_graph(app, paused.thread_id, {**decision, "approval_id": approval_id})
    [pending] = app.pending_approvals()
    assert (pending.approval_id, pending.approvals_received) == (approval_id, [])
    assert refunds(settings, paused.thread_id) == []
    last = audit(app, paused.thread_id)[-1]
    assert (last["event"], last["actor"], last["approval_id"]) == ("refused", decision["approver"], approval_id)
    assert last["details"]["decision"] == decision["decision"]
    assert last["details"]["reason"].startswith(reason)
    asked_again = app.thread(paused.thread_id).result.pending_approval
    assert asked_again is not None and asked_again["approval_id"] == approval_id
    assert asked_again["refusal"] == f"{last['details']['reason']}; the approval stays pending"


def resume_graph(app: TriageApp, thread_id: str, answer: Any, *, approver: str | None = None) -> None:
    """Resume the thread straight through the graph, as LangGraph Studio or the SDK would: no app checks or claims."""
    from langgraph.types import Command

    from triage.context import Context

    async def resume() -> None:
        engine = await app._get_engine()
        config = {"configurable": {"thread_id": thread_id}}
        context = Context(services=engine.services, approver=approver)
        await engine.graph.ainvoke(Command(resume=answer), config, context=context)

    app._portal.call(resume())


def indexed_state(app: TriageApp, approval_id: str) -> tuple[str, str | None]:
    """The approval index's state for `approval_id`, and who decided it."""

    async def read() -> tuple[str, str | None]:
        engine = await app._get_engine()
        row = await engine.services.journal.approval(approval_id)
        assert row is not None
        return row.state, row.decided_by

    return app._portal.call(read())


@pytest.mark.parametrize(
    ("customer", "decision", "state"),
    [
        ("cus_mid_dup", {"approver": "bob", "decision": "approve"}, "approved"),
        ("cus_mid_dup", {"approver": "bob", "decision": "reject", "reason": "a preorder"}, "rejected"),
        ("cus_mid_dup", {"approver": "bob", "decision": "edit", "args": {"amount_cents": 1000}}, "edited"),
        ("cus_large_dup", {"approver": "sam", "decision": "approve"}, "pending"),  # dual: offered again, round 1
    ],
)
def test_a_decision_resumed_straight_through_the_graph_settles_the_approval_index(
    app: TriageApp, customer: str, decision: dict[str, Any], state: str
) -> None:
    """Studio and the SDK resume the graph without the app's claim: the node records the decision in the index."""
    paused = run(app, customer)
    approval_id = paused.pending_approval["approval_id"]
    resume_graph(app, paused.thread_id, decision)
    assert indexed_state(app, approval_id) == (state, None if state == "pending" else decision["approver"])
    if state == "pending":
        [again] = app.pending_approvals()
        assert (again.approval_id, again.approvals_received) == (approval_id, ["sam"])


def test_agent_inbox_answers_name_the_approver_from_the_run_context(app: TriageApp) -> None:
    paused = run(app, "cus_mid_dup")
    resume_graph(app, paused.thread_id, [{"type": "accept", "args": None}], approver="bob")
    last = audit(app, paused.thread_id)[-2]  # the approval, then the refund
    assert (last["event"], last["actor"]) == ("approved", "bob")


def test_a_resume_value_that_cannot_be_read_is_refused_and_asked_again(app: TriageApp) -> None:
    paused = run(app, "cus_mid_dup")
    resume_graph(app, paused.thread_id, "yes please")
    last = audit(app, paused.thread_id)[-1]
    assert (last["event"], last["actor"]) == ("refused", "unknown")
    asked_again = app.thread(paused.thread_id).result.pending_approval
    assert asked_again is not None
    assert asked_again["refusal"] == f"{last['details']['reason']}; the approval stays pending"
    assert last["details"]["reason"].startswith("a decision is {'approver': ..., 'decision': 'approve'")


def test_an_approval_request_recorded_again_on_replay_is_audited_once(app: TriageApp) -> None:
    """A process that dies after auditing the request but before checkpointing it runs the step again on recovery."""
    from triage.context import Context

    paused = run(app, "cus_mid_dup")

    async def replay_the_request() -> None:
        engine = await app._get_engine()
        config = {"configurable": {"thread_id": paused.thread_id}}
        history = [s async for s in engine.graph.aget_state_history(config)]
        before = [s for s in history if s.next == ("approve",) and not s.interrupts][-1]  # before the request
        await engine.graph.ainvoke(None, before.config, context=Context(services=engine.services))

    app._portal.call(replay_the_request())
    events = [line["event"] for line in audit(app, paused.thread_id)]
    assert events == ["approval_requested"]
    assert app.thread(paused.thread_id).result.pending_approval is not None


def test_a_reply_needing_approval_is_asked_after_a_refund_that_needs_none(pinned: Any) -> None:
    app = pinned(0.85, route="billing", intent="duplicate_charge")
    paused = app.run({"customer_id": "cus_small_dup", "subject": "Charged twice", "body": DUPLICATE})
    assert [a["kind"] for a in paused.proposed_actions] == ["refund"], "a $19.00 refund: no approval of its own"
    assert paused.status == "awaiting_approval" and paused.pending_approval is not None
    assert paused.pending_approval["action"] == "reply"
    assert refunds(app.settings, paused.thread_id) == []
    done = app.resume(paused.thread_id, {"approver": "bob", "decision": "approve"})
    assert done.status == "completed"
    assert [r["amount_cents"] for r in refunds(app.settings, done.thread_id)] == [1900]


def test_a_reply_needing_approval_is_asked_after_the_refund_was_approved(pinned: Any) -> None:
    app = pinned(0.85, route="billing", intent="duplicate_charge")
    paused = app.run({"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": DUPLICATE})
    assert paused.pending_approval is not None and paused.pending_approval["action"] == "refund"
    again = app.resume(paused.thread_id, {"approver": "bob", "decision": "approve"})
    assert again.status == "awaiting_approval" and again.pending_approval is not None
    assert again.pending_approval["action"] == "reply"
    assert refunds(app.settings, again.thread_id) == [], "nothing runs before every action is approved"
    done = app.resume(again.thread_id, {"approver": "bob", "decision": "approve"})
    assert done.status == "completed"
    assert [r["amount_cents"] for r in refunds(app.settings, done.thread_id)] == [24000]
