"""Which threads retention deletes: pure planning over thread records, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from triage.retention import RetentionError, ThreadRecord, parse_age, plan_prune

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def record(thread_id: str, status: str, days_old: float, *, finished: bool = True, reason: str = "") -> ThreadRecord:
    return ThreadRecord(thread_id, status, NOW - timedelta(days=days_old), finished, reason)


THREADS = [
    record("c_new", "completed", 1),
    record("c_mid", "completed", 40),
    record("c_old", "completed", 90),
    record("e_old", "escalated", 60),
    record("f_old", "failed", 60, reason="PermanentToolError: issue_refund: 0 cents refundable"),
    record("f_transient", "failed", 60, reason="TransientToolError: send_message: database is locked"),
    record("pending", "awaiting_approval", 100, finished=False),
    record("crashed", "running", 100, finished=False),
    record("held", "completed", 100),
]


def test_age_limit_never_takes_what_awaits_approval_or_can_continue() -> None:
    plan = plan_prune(THREADS, now=NOW, older_than=timedelta(days=30), held=frozenset({"held"}))
    assert sorted(r.thread_id for r in plan.delete) == ["c_mid", "c_old", "e_old", "f_old"]
    assert plan.kept == {
        "c_new": "newer than the age limit",
        "f_transient": "failed on a transient fault (a retry may finish it)",
        "pending": "awaits approval",
        "crashed": "not finished (`triage recover` can continue it)",
        "held": "holds an open refund or account request",
    }


def test_keep_newest_per_status() -> None:
    plan = plan_prune(THREADS, now=NOW, keep=1, held=frozenset({"held"}))
    assert sorted(r.thread_id for r in plan.delete) == ["c_mid", "c_old"]
    assert plan.kept["c_new"] == "among the newest 1 completed"
    assert plan.kept["e_old"] == "among the newest 1 escalated"
    assert plan.kept["f_old"] == "among the newest 1 failed"
    assert plan.kept["held"] == "holds an open refund or account request"
    assert {r.thread_id for r in plan_prune(THREADS, now=NOW, keep=0).delete} == {
        "c_new",
        "c_mid",
        "c_old",
        "e_old",
        "f_old",
        "held",
    }


def test_both_rules_must_agree() -> None:
    plan = plan_prune(THREADS, now=NOW, keep=1, older_than=timedelta(days=50))
    assert sorted(r.thread_id for r in plan.delete) == ["c_old", "held"]


@pytest.mark.parametrize(
    ("text", "age"), [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), (" 2w", timedelta(weeks=2))]
)
def test_parse_age(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["30", "d", "3x", "-1d", "1.5d"])
def test_bad_age_is_a_typed_error(text: str) -> None:
    with pytest.raises(RetentionError, match="not an age"):
        parse_age(text)


def test_a_rule_is_required() -> None:
    with pytest.raises(RetentionError, match="say what to prune"):
        plan_prune(THREADS, now=NOW)
    with pytest.raises(RetentionError, match="0 or more"):
        plan_prune(THREADS, now=NOW, keep=-1)
