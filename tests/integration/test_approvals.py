"""Approvals end to end, every step in its own process, as people would use them: run a ticket, approve or reject
it later from another shell, sweep what expired."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import policy_copy, rows
from tests.integration.zygote import triage_cli
from triage.settings import Settings


def triage(settings: Settings, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "TRIAGE_HOME": str(settings.home),
        "TRIAGE_CACHE_HOME": str(settings.cache_dir),
        **(env or {}),
    }
    return triage_cli([*args, "--json"], env=environment, timeout=120)


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def start(settings: Settings, customer_id: str, body: str = "You charged me twice for the same order.") -> Any:
    return ok(triage(settings, "run", "--customer-id", customer_id, "--subject", "Charged twice", "--body", body))


def refunds(settings: Settings, thread_id: str) -> list[dict[str, Any]]:
    return rows(settings.helpdesk_path, "SELECT * FROM refunds WHERE thread_id = ?", (thread_id,))


def test_single_approval_from_another_process(settings: Settings) -> None:
    paused = start(settings, "cus_mid_dup")
    assert paused["status"] == "awaiting_approval"
    pending = paused["pending_approval"]
    assert (pending["tier"], pending["approvals_required"], pending["args"]["amount_cents"]) == ("single", 1, 24000)
    assert pending["action_request"] == {"action": "refund", "args": pending["args"]}
    assert set(pending["config"]) == {"allow_accept", "allow_edit", "allow_respond", "allow_ignore"}
    assert pending["expires_at"] > pending["requested_at"]
    listed = ok(triage(settings, "approvals"))
    assert [p["thread_id"] for p in listed] == [paused["thread_id"]]

    done = ok(triage(settings, "approve", paused["thread_id"], "--as", "alice", "--reason", "checked the bank"))
    assert done["status"] == "completed"
    assert [(a["kind"], a["amount_cents"]) for a in done["actions"]] == [
        ("refund_request", 24000),
        ("refund", 24000),
        ("message", None),
    ]
    [refund] = refunds(settings, paused["thread_id"])
    assert refund["amount_cents"] == 24000
    assert ok(triage(settings, "approvals")) == []
    shown = ok(triage(settings, "show", paused["thread_id"]))
    assert [line["event"] for line in shown["audit"]] == ["approval_requested", "approved", "effect"]
    assert shown["audit"][1]["actor"] == "alice"
    assert all(line["policy_version"] == done["policy_version"] for line in shown["audit"])
    again = triage(settings, "approve", paused["thread_id"], "--as", "sam")
    assert again.returncode == 2 and "not awaiting approval (status completed)" in again.stderr


def test_dual_approval_needs_two_distinct_approvers_one_a_supervisor(settings: Settings) -> None:
    paused = start(settings, "cus_large_dup")
    thread = paused["thread_id"]
    assert paused["pending_approval"]["tier"] == "dual"
    first = ok(triage(settings, "approve", thread, "--as", "alice"))
    assert first["status"] == "awaiting_approval"
    assert first["pending_approval"]["approvals_received"] == ["alice"]

    for approver, message in [
        ("alice", "already approved this action"),
        ("bob", "a dual approval needs a supervisor"),
        ("mallory", "'mallory' is not an approver"),
    ]:
        refused = triage(settings, "approve", thread, "--as", approver)
        assert refused.returncode == 2, refused.stdout
        assert message in refused.stderr and "the approval stays pending" in refused.stderr
        assert refunds(settings, thread) == []

    done = ok(triage(settings, "approve", thread, "--as", "sam"))
    assert done["status"] == "completed"
    assert [r["amount_cents"] for r in refunds(settings, thread)] == [120000]
    events = [(line["event"], line["actor"]) for line in ok(triage(settings, "show", thread))["audit"]]
    assert events == [
        ("approval_requested", "approve"),
        ("approved", "alice"),
        ("refused", "alice"),
        ("refused", "bob"),
        ("refused", "mallory"),
        ("approved", "sam"),
        ("effect", "execute"),
    ]


def test_reject_executes_nothing_and_tells_the_customer(settings: Settings) -> None:
    paused = start(settings, "cus_mid_dup")
    missing = triage(settings, "reject", paused["thread_id"], "--as", "alice")
    assert missing.returncode == 2 and "Missing option '--reason'" in missing.stderr
    blank = triage(settings, "reject", paused["thread_id"], "--as", "alice", "--reason", " ")
    assert blank.returncode == 2 and "a rejection needs a reason" in blank.stderr and "ticket" not in blank.stderr
    done = ok(triage(settings, "reject", paused["thread_id"], "--as", "alice", "--reason", "charge was a preorder"))
    assert done["status"] == "completed"
    assert done["rejection"]["reason"] == "charge was a preorder"
    assert done["reply"]["template"] == "approval.rejected"
    assert [a["kind"] for a in done["actions"]] == ["refund_request", "message"]
    assert refunds(settings, paused["thread_id"]) == []
    requests = rows(
        settings.helpdesk_path, "SELECT status FROM refund_requests WHERE thread_id = ?", (paused["thread_id"],)
    )
    assert requests == [{"status": "rejected"}]
    audit = ok(triage(settings, "show", paused["thread_id"]))["audit"]
    assert audit[-1]["event"] == "rejected" and audit[-1]["details"]["reason"] == "charge was a preorder"


def test_edit_down_into_a_lower_tier(settings: Settings) -> None:
    paused = start(settings, "cus_large_dup")
    assert paused["pending_approval"]["tier"] == "dual"
    too_much = triage(settings, "approve", paused["thread_id"], "--as", "sam", "--amount", "5000")
    assert too_much.returncode == 2 and "--amount $5,000.00 is above the refund awaiting approval" in too_much.stderr
    # $400 falls in the single tier: sam's edit is also his approval, which is enough.
    done = ok(triage(settings, "approve", paused["thread_id"], "--as", "sam", "--amount", "400"))
    assert done["status"] == "completed"
    assert [r["amount_cents"] for r in refunds(settings, paused["thread_id"])] == [40000]
    events = [line["event"] for line in ok(triage(settings, "show", paused["thread_id"]))["audit"]]
    assert events == ["approval_requested", "refused", "edited", "effect"]


def test_invalid_and_stale_decisions_change_nothing(settings: Settings) -> None:
    from triage import TriageApp
    from triage.errors import InvalidDecisionError, StaleApprovalError, ThreadNotFoundError

    paused = start(settings, "cus_mid_dup")
    thread = paused["thread_id"]
    app = TriageApp(settings)
    try:
        for bad in (
            {"approver": "alice", "decision": "maybe"},
            {"approver": "alice", "decision": "edit"},
            {"approver": "", "decision": "approve"},
            {"approver": "alice", "decision": "approve", "extra": 1},
        ):
            with pytest.raises(InvalidDecisionError):
                app.resume(thread, bad)
        with pytest.raises(StaleApprovalError, match="no longer pending"):
            app.resume(thread, {"approver": "alice", "decision": "approve", "approval_id": "apr_0000"})
        with pytest.raises(ThreadNotFoundError):
            app.resume("thr_nope", {"approver": "alice", "decision": "approve"})
        assert app.pending_approvals()[0].approval_id == paused["pending_approval"]["approval_id"]
    finally:
        app.close()
    assert refunds(settings, thread) == []
    assert ok(triage(settings, "approve", thread, "--as", "bob"))["status"] == "completed"


def test_overdue_approvals_are_swept_to_a_person(settings: Settings, tmp_path: Path) -> None:
    folder = policy_copy(tmp_path, "approvals.toml", "expiry_hours = 24", "expiry_hours = 0.0000001")
    env = {"TRIAGE_POLICY_DIR": str(folder)}
    expired = ok(
        triage(
            settings,
            "run",
            "--customer-id",
            "cus_mid_dup",
            "--subject",
            "Charged twice",
            "--body",
            "You charged me twice for the same order.",
            env=env,
        )
    )
    assert expired["status"] == "awaiting_approval"
    overdue = ok(triage(settings, "approvals", "--overdue", env=env))
    assert [p["thread_id"] for p in overdue] == [expired["thread_id"]] and overdue[0]["overdue"]
    swept = ok(triage(settings, "sweep", env=env))
    assert [(r["thread_id"], r["status"], r["route"]) for r in swept] == [
        (expired["thread_id"], "escalated", "escalation")
    ]
    assert "expired" in swept[0]["status_reason"]
    assert refunds(settings, expired["thread_id"]) == []
    queues = rows(settings.helpdesk_path, "SELECT queue FROM tickets WHERE thread_id = ?", (expired["thread_id"],))
    assert queues == [{"queue": "human"}]
    assert ok(triage(settings, "sweep", env=env)) == []


def test_low_confidence_reply_needs_one_approval(settings: Settings) -> None:
    from tests.integration.test_approval_flow import PinnedConfidenceTier
    from triage import TriageApp

    # The route and confidence are pinned (0.85: above routing's 0.8, below the reply threshold 0.9), so a
    # retrained classifier cannot turn this test into a skip or a different path.
    app = TriageApp(settings, models=PinnedConfidenceTier(settings.cache_dir, "general", 0.85))
    try:
        result = app.run({"subject": "", "body": "it's about my order and my password and the invoice"})
        assert (result.route, result.confidence) == ("general", 0.85)
        assert result.status == "awaiting_approval"
        assert result.pending_approval is not None
        assert (result.pending_approval["action"], result.pending_approval["tier"]) == ("reply", "single")
        assert result.reply is None, "nothing is sent before the approval"
        done = app.resume(result.thread_id, {"approver": "bob", "decision": "approve"})
        assert done.status == "completed" and done.reply is not None
    finally:
        app.close()


def test_invalid_resume_value_through_the_graph_is_refused_and_asked_again(settings: Settings) -> None:
    """Bypassing the app's checks, a bad value is refused in the node: the reason comes back in the next interrupt,
    the approval stays pending, nothing is executed, and the refusal is in the audit trail."""
    from langgraph.types import Command

    from triage import TriageApp
    from triage.context import Context

    paused = start(settings, "cus_mid_dup")
    app = TriageApp(settings)
    try:
        engine = app._portal.call(app._get_engine())
        config = {"configurable": {"thread_id": paused["thread_id"]}}
        bad = Command(resume={"approver": "alice", "decision": "maybe"})
        out = app._portal.call(engine.graph.ainvoke(bad, config, context=Context(services=engine.services)))
        [again] = out["__interrupt__"]
        assert again.value["approval_id"] == paused["pending_approval"]["approval_id"]
        assert "decision" in again.value["refusal"] and "stays pending" in again.value["refusal"]
        assert app.pending_approvals()[0].thread_id == paused["thread_id"]
        assert refunds(settings, paused["thread_id"]) == []
        trail = app.thread(paused["thread_id"]).audit
        assert [line["event"] for line in trail] == ["approval_requested", "refused"]
        done = app.resume(paused["thread_id"], {"approver": "alice", "decision": "approve"})
        assert done.status == "completed"
        assert [r["amount_cents"] for r in refunds(settings, paused["thread_id"])] == [24000]
    finally:
        app.close()
