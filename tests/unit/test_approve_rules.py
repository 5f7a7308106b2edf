"""The approval node's pure parts: which edits are allowed, how approvals are identified, what must be approved."""

from __future__ import annotations

from typing import Any

import pytest

from triage.nodes.approve import actions_to_approve, approval_id_for, approval_request
from triage.policies import load_policy_bundle
from triage.policies.approvals import SWEEP_ACTOR, decision_refusal, edit_refusal
from triage.state import ApprovalRecord, ProposedAction

APPROVALS = load_policy_bundle().approvals
REFUND = ProposedAction(kind="refund", args={"customer_id": "c", "payment_id": "p", "amount_cents": 24000}, reason="r")


@pytest.mark.parametrize(
    ("action", "changes", "refusal"),
    [
        (REFUND, {"amount_cents": 24000}, "the edit does not change the amount; approve it instead"),
        (REFUND, {"amount_cents": 23999}, None),
        (REFUND, {"amount_cents": 1}, None),
        (REFUND, {"amount_cents": 24001}, "an edit may lower a refund, not raise it above 24000 cents"),
        (REFUND, {"amount_cents": 0}, "amount_cents must be a positive whole number of cents"),
        (REFUND, {"amount_cents": -5}, "amount_cents must be a positive whole number of cents"),
        (REFUND, {"amount_cents": 100.0}, "amount_cents must be a positive whole number of cents"),
        (REFUND, {"amount_cents": True}, "amount_cents must be a positive whole number of cents"),
        (REFUND, {"amount_cents": "100"}, "amount_cents must be a positive whole number of cents"),
        (REFUND, {}, "amount_cents must be a positive whole number of cents"),
        (REFUND, {"amount_cents": 100, "payment_id": "other"}, "only a refund's amount_cents can be edited"),
        (
            ProposedAction(kind="account_deletion", args={"customer_id": "c"}, reason="r"),
            {"amount_cents": 100},
            "only a refund's amount_cents can be edited",
        ),
    ],
)
def test_edit_refusal(action: ProposedAction, changes: dict[str, Any], refusal: str | None) -> None:
    assert edit_refusal(action["kind"], action["args"], changes) == refusal


def test_approval_id_is_stable_per_thread_and_action() -> None:
    first = approval_id_for("thr_1", REFUND)
    assert first == approval_id_for("thr_1", ProposedAction(**{**REFUND, "reason": "another reason"}))
    assert first.startswith("apr_") and len(first) == len("apr_") + 16
    assert first != approval_id_for("thr_2", REFUND)
    edited = ProposedAction(**{**REFUND, "args": {**REFUND["args"], "amount_cents": 100}})
    assert first != approval_id_for("thr_1", edited)
    assert first != approval_id_for("thr_1", ProposedAction(**{**REFUND, "kind": "data_export"}))
    reordered = ProposedAction(**{**REFUND, "args": dict(reversed(list(REFUND["args"].items())))})
    assert approval_id_for("thr_1", reordered) == first, "the same arguments in another order are the same action"


def _state(confidence: float, **extra: Any) -> dict[str, Any]:
    return {
        "classification": {"confidence": confidence},
        "route": "general",
        "draft": {"template": "general.kb_answer", "facts": {}},
        "proposed_actions": [REFUND],
        **extra,
    }


def test_actions_to_approve_adds_the_reply_below_the_confidence_threshold() -> None:
    [refund, reply] = actions_to_approve(_state(0.89), APPROVALS)  # type: ignore[arg-type]
    assert refund == REFUND
    assert reply == ProposedAction(
        kind="reply",
        args={"template": "general.kb_answer"},
        reason="reply drafted from a classification with confidence 0.89",
    )
    assert actions_to_approve(_state(0.9), APPROVALS) == [REFUND]  # type: ignore[arg-type]
    assert actions_to_approve(_state(0.1, route="escalation"), APPROVALS) == [REFUND]  # type: ignore[arg-type]
    no_draft = _state(0.1)
    del no_draft["draft"]
    assert actions_to_approve(no_draft, APPROVALS) == [REFUND]  # type: ignore[arg-type]
    assert actions_to_approve({"proposed_actions": []}, APPROVALS) == []  # type: ignore[arg-type]
    assert actions_to_approve({}, APPROVALS) == []  # type: ignore[arg-type]


def test_approvers_are_looked_up_by_id() -> None:
    policy = load_policy_bundle().approvals
    sam = policy.approver("sam")
    assert sam is not None and (sam.id, sam.role) == ("sam", "supervisor")
    assert (policy.role_of("alice"), policy.role_of("mallory")) == ("agent", None)
    assert policy.approver("mallory") is None


@pytest.mark.parametrize(
    ("approver", "refusal"),
    [(SWEEP_ACTOR, None), ("sam", "a timeout is decided by `triage sweep`, not by an approver")],
)
def test_only_the_sweep_answers_with_a_timeout(approver: str, refusal: str | None) -> None:
    policy = load_policy_bundle().approvals
    args = {"amount_cents": 24000}
    decided = decision_refusal(
        approver, "timeout", tier="single", received=[], kind="refund", args=args, changes=None, policy=policy
    )
    assert decided == refusal


@pytest.mark.parametrize(
    ("approver", "received", "refusal"),
    [
        ("bob", ["alice"], None),  # an agent may turn down the second round, which only a supervisor may approve
        ("alice", ["alice"], None),  # so may the one who gave the first approval
        ("mallory", [], "'mallory' is not an approver in the approval policy"),
    ],
)
def test_any_approver_may_reject(approver: str, received: list[str], refusal: str | None) -> None:
    policy = load_policy_bundle().approvals
    args = {"amount_cents": 120000}
    decided = decision_refusal(
        approver, "reject", tier="dual", received=received, kind="refund", args=args, changes=None, policy=policy
    )
    assert decided == refusal


def _described(action: ProposedAction) -> str:
    state: Any = {
        "ticket": {"subject": "Close my account", "customer_id": "cus_1"},
        "classification": {"route": "account", "intent": "account_deletion", "confidence": 0.97},
        "findings": {},
    }
    record = ApprovalRecord(
        approval_id="ap_1",
        action=action["kind"],
        tier="single",
        approvers=[],
        requested_at="2026-11-20T12:00:00+00:00",
        expires_at="2026-11-21T12:00:00+00:00",
    )
    return str(approval_request(state, action, record, "single", "thr_1")["description"])


def test_the_approver_reads_what_a_closure_refunds_and_whom_an_action_is_for() -> None:
    closure = ProposedAction(kind="account_closure", args={"customer_id": "cus_1"}, reason="asked to close")
    assert _described(closure) == (
        "Approve: account closure for cus_1: cancel the subscription, refund $0.00 of the unused period, export and "
        "delete the data. Reason: asked to close. Tier single: 1 approval(s) needed, 0 received."
    )
    export = ProposedAction(kind="data_export", args={}, reason="asked for a copy")
    assert _described(export) == (
        "Approve: data export for the customer. Reason: asked for a copy. Tier single: 1 approval(s) needed, "
        "0 received."
    )
