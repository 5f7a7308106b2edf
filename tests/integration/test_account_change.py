"""Plan changes and account closures as sagas: they complete, and a step that fails for good rolls back the ones
before it, in reverse order, exactly once each; a failing compensation is escalated, never passed over."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rows
from tests.integration.zygote import triage_cli
from triage import TriageApp
from triage.policies.account import prorated_cents, saga_steps, unused_share
from triage.schemas import RunResult
from triage.settings import Settings

PLAN_CHANGE = {
    "customer_id": "cus_plan_team",
    "subject": "Upgrade from Team to Business",
    "body": "We need SSO now, so we'd like to move from the Team plan to Business.",
}
CLOSURE = {
    "customer_id": "cus_small_dup",
    "subject": "Close account",
    "body": "I want to close my Northwind account permanently.",
}
PLAN_STEPS = ["change_plan", "prorate", "adjust_seats", "confirm"]
CLOSURE_STEPS = ["cancel_subscription", "refund_unused", "schedule_data_jobs", "confirm"]
TOOL_OF = {
    "change_plan": "change_subscription",
    "prorate": "post_account_credit",
    "adjust_seats": "adjust_seats",
    "confirm": "confirm_account_change",
    "cancel_subscription": "change_subscription",
    "refund_unused": "refund_unused_period",
    "schedule_data_jobs": "schedule_data_jobs",
}


def open_app(tmp_path: Path, model_cache: Path, faults: str | None = None) -> TriageApp:
    app = TriageApp(Settings(home=tmp_path / "home", cache_home=model_cache, faults=faults))
    app.warm_up()  # opens (creates and seeds) the stores
    return app


def run_change(app: TriageApp, ticket: dict[str, Any]) -> RunResult:
    """Run the ticket and give the approvals its change needs (alice, then the supervisor sam)."""
    result = app.run(ticket)
    for approver in ("alice", "sam"):
        if result.status != "awaiting_approval":
            break
        result = app.resume(result.thread_id, {"approver": approver, "decision": "approve", "reason": "checked"})
    return result


def helpdesk(app: TriageApp, sql: str, *params: Any) -> list[dict[str, Any]]:
    return rows(app.settings.helpdesk_path, sql, params)


def ledger(app: TriageApp, thread_id: str) -> list[str]:
    found = rows(
        app.settings.checkpoints_path,
        "SELECT kind FROM effects_ledger WHERE thread_id = ? ORDER BY rowid",
        (thread_id,),
    )
    return [row["kind"] for row in found]


def subscription(app: TriageApp, customer_id: str) -> dict[str, Any]:
    return helpdesk(app, "SELECT id, plan_id, status FROM subscriptions WHERE customer_id = ?", customer_id)[0]


@pytest.fixture
def clean(tmp_path: Path, model_cache: Path) -> Iterator[TriageApp]:
    app = open_app(tmp_path, model_cache)
    yield app
    app.close()


def test_plan_change_completes_every_step(clean: TriageApp) -> None:
    before = subscription(clean, "cus_plan_team")
    result = run_change(clean, PLAN_CHANGE)
    assert result.status == "completed", result.status_reason
    assert [a.kind for a in result.actions if a.node == "account_change"] == PLAN_STEPS
    after = subscription(clean, "cus_plan_team")
    assert (before["plan_id"], after["plan_id"], after["status"]) == ("team", "business", "active")
    credit = helpdesk(clean, "SELECT amount_cents, status FROM account_credits WHERE customer_id = 'cus_plan_team'")
    assert len(credit) == 1 and credit[0]["amount_cents"] > 0 and credit[0]["status"] == "posted"  # an upgrade costs
    assert helpdesk(clean, "SELECT seats FROM subscription_seats WHERE subscription_id = ?", after["id"]) == [
        {"seats": 100}
    ]
    request = helpdesk(clean, "SELECT status FROM account_requests WHERE kind = 'plan_change'")
    assert request == [{"status": "completed"}]
    assert result.reply is not None and "Your plan is now Business" in result.reply.body
    events = [line["event"] for line in clean.thread(result.thread_id).audit]
    assert "change_completed" in events and "change_rolled_back" not in events


def _back_to_team_after_moving_to_business(app: TriageApp) -> dict[str, Any]:
    """Turn 1 moves cus_plan_team from Team to Business; the follow-up that asks to go back."""
    first = run_change(app, PLAN_CHANGE)
    assert first.status == "completed" and subscription(app, "cus_plan_team")["plan_id"] == "business"
    return {
        **PLAN_CHANGE,
        "subject": "Back to Team",
        "body": "Business is too much for us, please move us back to the Team plan.",
        "conversation_id": first.conversation_id,
    }


def test_a_plan_change_approved_in_a_later_turn_is_carried_out(clean: TriageApp) -> None:
    """Turn 1 moves Team to Business; turn 2 asks to go back. Its approved change runs (it used to be skipped as
    already done, the turn reporting turn 1's saga and telling the customer their plan was changed)."""
    back = _back_to_team_after_moving_to_business(clean)
    second = run_change(clean, back)
    assert second.status == "completed", second.status_reason
    assert subscription(clean, "cus_plan_team")["plan_id"] == "team"
    assert next(a.kind for a in second.actions if a.node == "account_change") == "change_plan"
    assert second.reply is not None and "Your plan is now Team" in second.reply.body, second.reply
    requests = helpdesk(clean, "SELECT status FROM account_requests WHERE kind = 'plan_change'")
    assert requests == [{"status": "completed"}] * 2


def test_a_plan_change_paused_in_a_later_turn_before_the_upgrade_is_carried_out(
    clean: TriageApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread paused in turn 2 by a version that did not clear `saga` at a new turn holds turn 1's outcome; once
    approved under this version, its change is carried out all the same."""
    import triage.nodes.validate as validate

    back = _back_to_team_after_moving_to_business(clean)
    new_keys = validate.TURN_KEYS
    monkeypatch.setattr(validate, "TURN_KEYS", tuple(k for k in new_keys if k not in ("saga", "usage")))  # before
    paused = clean.run(back)
    assert paused.status == "awaiting_approval", paused.status_reason
    monkeypatch.setattr(validate, "TURN_KEYS", new_keys)  # the upgrade
    second = paused
    for approver in ("alice", "sam"):  # as many as its tier needs
        if second.status == "awaiting_approval":
            second = clean.resume(second.thread_id, {"approver": approver, "decision": "approve", "reason": "ok"})
    assert second.status == "completed", second.status_reason
    assert subscription(clean, "cus_plan_team")["plan_id"] == "team", second.reply


@pytest.mark.parametrize("day", [date(2026, 9, 15), date(2026, 10, 30)])
def test_a_billing_date_prices_a_plan_change_as_of_that_day(tmp_path: Path, model_cache: Path, day: date) -> None:
    """`Settings.billing_date` (what `triage demo` sets) fixes the days left in the period, whatever the clock says:
    the prorated amount is the one for noon UTC of that day."""
    app = TriageApp(Settings(home=tmp_path / "home", cache_home=model_cache, billing_date=day))
    try:
        app.warm_up()
        [sub] = helpdesk(app, "SELECT renews_at FROM subscriptions WHERE customer_id = 'cus_plan_team'")
        prices = {p["id"]: p["monthly_price_cents"] for p in helpdesk(app, "SELECT * FROM plans")}
        result = app.run(PLAN_CHANGE)
        change = next(p for p in result.proposed_actions if p["kind"] == "plan_change")["args"]
        days_left, period = unused_share(sub["renews_at"], datetime.combine(day, time(12), tzinfo=UTC))
        assert change["proration_cents"] == prorated_cents(prices["business"] - prices["team"], days_left, period)
    finally:
        app.close()


def test_account_closure_needs_two_approvals_then_completes(clean: TriageApp) -> None:
    paused = clean.run(CLOSURE)
    assert paused.status == "awaiting_approval" and paused.pending_approval is not None
    assert (paused.pending_approval["action"], paused.pending_approval["tier"]) == ("account_closure", "dual")
    refund = next(p for p in paused.proposed_actions if p["kind"] == "account_closure")["args"]["refund_cents"]
    assert paused.pending_approval["description"].startswith(
        f"Approve: account closure for cus_small_dup: cancel the subscription, refund ${refund / 100:,.2f} of the "
        "unused period, export and delete the data. Reason: "
    )
    assert helpdesk(clean, "SELECT * FROM data_jobs") == []  # nothing runs before the approvals
    result = paused
    for approver in ("alice", "sam"):
        result = clean.resume(result.thread_id, {"approver": approver, "decision": "approve", "reason": "checked"})
    assert result.status == "completed", result.status_reason
    assert [a.kind for a in result.actions if a.node == "account_change"] == CLOSURE_STEPS
    assert subscription(clean, "cus_small_dup")["status"] == "canceled"
    assert helpdesk(clean, "SELECT status FROM customers WHERE id = 'cus_small_dup'") == [{"status": "closed"}]
    refund = helpdesk(clean, "SELECT amount_cents, status FROM period_refunds")
    assert len(refund) == 1 and refund[0]["status"] == "settled" and refund[0]["amount_cents"] > 0
    assert helpdesk(clean, "SELECT status FROM data_jobs") == [{"status": "scheduled"}]


def test_a_rejected_closure_changes_nothing(clean: TriageApp) -> None:
    paused = clean.run(CLOSURE)
    result = clean.resume(paused.thread_id, {"approver": "sam", "decision": "reject", "reason": "not verified"})
    assert result.status == "completed" and result.rejection is not None
    assert not [a for a in result.actions if a.node == "account_change"]
    assert subscription(clean, "cus_small_dup")["status"] == "active"


def _check_rolled_back(app: TriageApp, result: RunResult, steps: list[str], failing: str) -> None:
    done = steps[: steps.index(failing)]
    assert result.status == "escalated", result.status_reason
    assert f"rolled back at {failing}" in str(result.status_reason)
    mine = [a.kind for a in result.actions if a.node == "account_change"]
    assert mine == [*done, *(f"undo:{step}" for step in reversed(done))]
    kinds = ledger(app, result.thread_id)
    undone = [k.removeprefix("compensation:") for k in kinds if k.startswith("compensation:")]
    assert undone == list(reversed(done))  # each once, newest first
    assert kinds.count("rollback") == 1
    ticket = helpdesk(app, "SELECT priority, subject, summary FROM tickets WHERE thread_id = ?", result.thread_id)
    assert len(ticket) == 1 and ticket[0]["priority"] == "high" and ticket[0]["subject"].startswith("Rolled back")
    assert f"failed at step {failing}" in ticket[0]["summary"]
    assert f"undone (in this order): {', '.join(reversed(done)) or 'nothing'}." in ticket[0]["summary"]
    audit = app.thread(result.thread_id).audit
    rolled = [line for line in audit if line["event"] == "change_rolled_back"]
    assert len(rolled) == 1 and rolled[0]["details"]["undone"] == list(reversed(done))
    assert result.reply is not None and "put everything back as it was" in result.reply.body


@pytest.mark.parametrize("failing", PLAN_STEPS)
def test_plan_change_failing_at_each_step_is_undone(tmp_path: Path, model_cache: Path, failing: str) -> None:
    app = open_app(tmp_path, model_cache, faults=f"fail={TOOL_OF[failing]}")
    try:
        before = subscription(app, "cus_plan_team")
        result = run_change(app, PLAN_CHANGE)
        _check_rolled_back(app, result, PLAN_STEPS, failing)
        assert subscription(app, "cus_plan_team") == before
        live = "SELECT COUNT(*) AS n FROM {} WHERE status = 'applied' OR status = 'posted'"
        for table in ("subscription_changes", "seat_changes", "account_credits"):
            assert helpdesk(app, live.format(table)) == [{"n": 0}], table
        assert helpdesk(app, "SELECT * FROM subscription_seats") == []
        assert helpdesk(app, "SELECT status FROM account_requests WHERE kind = 'plan_change'") == [
            {"status": "pending"}
        ]
    finally:
        app.close()


@pytest.mark.parametrize("failing", CLOSURE_STEPS)
def test_closure_failing_at_each_step_is_undone(tmp_path: Path, model_cache: Path, failing: str) -> None:
    app = open_app(tmp_path, model_cache, faults=f"fail={TOOL_OF[failing]}")
    try:
        result = run_change(app, CLOSURE)
        _check_rolled_back(app, result, CLOSURE_STEPS, failing)
        assert subscription(app, "cus_small_dup")["status"] == "active"
        assert helpdesk(app, "SELECT status FROM customers WHERE id = 'cus_small_dup'") == [{"status": "active"}]
        assert helpdesk(app, "SELECT * FROM period_refunds WHERE status != 'canceled'") == []
        assert helpdesk(app, "SELECT * FROM data_jobs WHERE status != 'canceled'") == []
    finally:
        app.close()


def test_a_step_that_fails_transiently_is_retried_and_the_change_completes(tmp_path: Path, model_cache: Path) -> None:
    app = open_app(tmp_path, model_cache, faults="flaky=adjust_seats,flaky=confirm_account_change")
    try:
        result = run_change(app, PLAN_CHANGE)
        assert result.status == "completed", result.status_reason
        assert [a.kind for a in result.actions if a.node == "account_change"] == PLAN_STEPS
        assert "rollback" not in ledger(app, result.thread_id)
    finally:
        app.close()


def test_a_failing_compensation_is_escalated_loudly(
    tmp_path: Path, model_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = open_app(tmp_path, model_cache, faults="fail=confirm_account_change,fail=void_account_credit")
    try:
        with caplog.at_level(logging.ERROR, logger="triage.nodes.saga"):
            result = run_change(app, PLAN_CHANGE)
        assert result.status == "escalated"
        assert "ROLLBACK INCOMPLETE" in str(result.status_reason) and "prorate" in str(result.status_reason)
        # The other compensations still ran: seats and plan are back, the credit stands.
        assert subscription(app, "cus_plan_team")["plan_id"] == "team"
        assert helpdesk(app, "SELECT * FROM subscription_seats") == []
        assert helpdesk(app, "SELECT status FROM account_credits") == [{"status": "posted"}]
        mine = [a.kind for a in result.actions if a.node == "account_change"]
        assert mine == ["change_plan", "prorate", "adjust_seats", "undo:adjust_seats", "undo:change_plan"]
        ticket = helpdesk(app, "SELECT priority, subject, summary FROM tickets WHERE thread_id = ?", result.thread_id)
        assert len(ticket) == 1 and ticket[0]["priority"] == "urgent"
        assert ticket[0]["subject"].startswith("ROLLBACK INCOMPLETE")
        assert "still in effect, undo by hand: prorate." in ticket[0]["summary"]
        audit = app.thread(result.thread_id).audit
        failed = [line for line in audit if line["event"] == "compensation_failed"]
        assert len(failed) == 1 and failed[0]["details"]["step"] == "prorate"
        assert [line["details"]["not_undone"] for line in audit if line["event"] == "rollback_incomplete"] == [
            ["prorate"]
        ]
        assert any("ROLLBACK INCOMPLETE" in record.getMessage() for record in caplog.records)
    finally:
        app.close()


def test_a_closure_confirmed_in_a_later_turn_settles_its_own_refund_only(tmp_path: Path, model_cache: Path) -> None:
    """Turn 1's closure fails at confirm and its refund cannot be cancelled (left pending, for a person); turn 2
    closes the account. Its confirmation settles turn 2's refund, not turn 1's, which the customer would get too."""
    app = open_app(tmp_path, model_cache, faults="fail=confirm_account_change,fail=cancel_period_refund")
    try:
        first = run_change(app, CLOSURE)
    finally:
        app.close()
    assert first.status == "escalated" and "ROLLBACK INCOMPLETE" in str(first.status_reason), first.status_reason
    app = open_app(tmp_path, model_cache)
    try:
        [left] = helpdesk(app, "SELECT id FROM period_refunds WHERE status = 'pending'")
        second = run_change(app, {**CLOSURE, "conversation_id": first.conversation_id})
        assert second.status == "completed", second.status_reason
        assert helpdesk(app, "SELECT status FROM customers WHERE id = 'cus_small_dup'") == [{"status": "closed"}]
        refunds = helpdesk(app, "SELECT id, status FROM period_refunds ORDER BY created_at, id")
        assert {r["id"]: r["status"] for r in refunds} == {
            left["id"]: "pending",
            **{r["id"]: "settled" for r in refunds if r["id"] != left["id"]},
        }
        assert len(refunds) == 2
    finally:
        app.close()


def test_the_steps_match_the_proposal(clean: TriageApp) -> None:
    result = run_change(clean, PLAN_CHANGE)
    change = next(p for p in result.proposed_actions if p["kind"] == "plan_change")
    assert [s["name"] for s in saga_steps("plan_change", change["args"])] == PLAN_STEPS


DRIVER = Path(__file__).with_name("saga_crash_driver.py")


def _drive(*args: str, faults: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRIAGE_FAULTS": faults}
    return subprocess.run(
        [sys.executable, str(DRIVER), *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "point"),
    [
        ("plan_change", "undo-call:1"),
        ("plan_change", "compensation:2"),
        ("closure", "undo-call:2"),
        pytest.param("plan_change", "rollback", marks=pytest.mark.long),
        pytest.param("plan_change", "undo-call:3", marks=pytest.mark.long),
        pytest.param("closure", "compensation:1", marks=pytest.mark.long),
    ],
)
def test_a_crash_mid_rollback_is_recovered_with_each_compensation_once(
    tmp_path: Path, model_cache: Path, change: str, point: str
) -> None:
    """SIGKILL the process during the rollback of a change whose last step fails; `recover` from a fresh process
    finishes the rollback, and every compensation took effect exactly once."""
    steps = PLAN_STEPS if change == "plan_change" else CLOSURE_STEPS
    customer = "cus_plan_team" if change == "plan_change" else "cus_small_dup"
    home, thread_id, faults = tmp_path / "home", f"thr_crash_{change}", "fail=confirm_account_change"
    crashed = _drive("crash", str(home), str(model_cache), thread_id, change, point, faults=faults)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    recovered = _drive("recover", str(home), str(model_cache), thread_id, change, faults=faults)
    assert recovered.returncode == 0, recovered.stderr[-2000:]
    assert json.loads(recovered.stdout)["status"] == "escalated"
    app = open_app(tmp_path, model_cache)
    try:
        result = app.thread(thread_id).result
        _check_rolled_back(app, result, steps, "confirm")
        if change == "plan_change":
            assert subscription(app, customer)["plan_id"] == "team"
            for table in ("subscription_changes", "seat_changes"):
                assert helpdesk(app, f"SELECT status FROM {table}") == [{"status": "reversed"}], table
            assert helpdesk(app, "SELECT status FROM account_credits") == [{"status": "voided"}]
        else:
            assert subscription(app, customer)["status"] == "active"
            assert helpdesk(app, "SELECT status FROM period_refunds") == [{"status": "canceled"}]
            assert helpdesk(app, "SELECT status FROM data_jobs") == [{"status": "canceled"}]
        audit = app.thread(thread_id).audit
        undo_lines = [
            a for a in audit if a["event"] == "effect" and str(a["details"]["kind"]).startswith("compensation:")
        ]
        assert len(undo_lines) == len(steps) - 1
    finally:
        app.close()


async def test_the_studio_graph_runs_only_approved_changes_and_rolls_back_on_its_own(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    from triage.services import close_shared_services
    from triage.studio import account_change

    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "studio-home"))
    monkeypatch.setenv("TRIAGE_CACHE_HOME", str(settings.cache_dir))
    assert account_change.checkpointer is None
    graph = account_change.copy(update={"checkpointer": InMemorySaver()})
    base = {"customer_id": "cus_plan_team", "request_id": "ar_missing"}
    closure = {"kind": "account_closure", "args": {**base, "refund_cents": 900}, "reason": "asked"}
    plan = {
        "kind": "plan_change",
        "args": {**base, "subscription_id": "sub_x", "to_plan": "business", "proration_cents": 0, "seats": None},
        "reason": "asked",
    }
    try:
        unapproved = await graph.ainvoke({"proposed_actions": [closure]}, {"configurable": {"thread_id": "s-1"}})
        helpdesk_path = tmp_path / "studio-home" / "helpdesk.sqlite"
        [sub] = rows(helpdesk_path, "SELECT id FROM subscriptions WHERE customer_id = 'cus_plan_team'")
        plan["args"]["subscription_id"] = sub["id"]  # type: ignore[index]
        rolled = await graph.ainvoke({"proposed_actions": [plan]}, {"configurable": {"thread_id": "s-2"}})
    finally:
        await close_shared_services()
    assert unapproved["saga"]["status"] == "not_run" and "dual approval" in unapproved["saga"]["error"]
    # The confirmation names a request that does not exist: a permanent failure, so the plan change is undone.
    assert (rolled["saga"]["status"], rolled["saga"]["failed_step"]) == ("rolled_back", "confirm")
    assert rolled["saga"]["undone"] == ["change_plan"] and rolled["status"] == "escalated"
    assert rows(helpdesk_path, "SELECT plan_id FROM subscriptions WHERE id = ?", (sub["id"],)) == [{"plan_id": "team"}]


def test_the_cli_shows_a_rolled_back_change(tmp_path: Path, model_cache: Path) -> None:
    env = {**os.environ, "TRIAGE_HOME": str(tmp_path / "home"), "TRIAGE_CACHE_HOME": str(model_cache)}
    env["TRIAGE_FAULTS"] = "fail=adjust_seats"
    args = ["--customer-id", "cus_plan_team", "--subject", PLAN_CHANGE["subject"], "--body", PLAN_CHANGE["body"]]
    done = triage_cli(["run", *args], env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "change plan_change rolled_back at adjust_seats; undone: prorate, change_plan; ticket TCK_" in done.stdout
    assert "ROLLBACK INCOMPLETE" not in done.stdout + done.stderr
