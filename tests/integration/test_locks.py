"""A lock held on the helpdesk file by another process, longer than a node's time limit, costs retries, never the
connection: a transaction cancelled while BEGIN waits is rolled back, later writes in the same process work, and
an approved refund resumed during the lock is carried out once (by retry or `recover`)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LOCK_HOLDER, exclusive_lock, policy_copy, rows
from triage import TriageApp
from triage.helpdesk import Helpdesk
from triage.settings import Settings


def test_transaction_cancelled_while_begin_waits_is_rolled_back(settings: Settings) -> None:
    async def scenario() -> None:
        helpdesk = await Helpdesk.open(settings.helpdesk_path, busy_timeout=3.0)
        try:
            with exclusive_lock(settings.helpdesk_path, 1.0) as holder:
                # Cancelled (as a node time limit would) while BEGIN waits; aiosqlite still runs the BEGIN, which
                # succeeds once the holder lets go (within the busy timeout).
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2), helpdesk.transaction() as conn:
                        await conn.execute("UPDATE customers SET notes = 'lost' WHERE id = 'cus_mid_dup'")
                await asyncio.to_thread(holder.wait, 30)
            async with helpdesk.transaction() as conn:
                await conn.execute("UPDATE customers SET notes = 'written' WHERE id = 'cus_mid_dup'")
            async with helpdesk.read() as conn:
                assert not conn.in_transaction
        finally:
            await helpdesk.close()

    asyncio.run(scenario())
    # Another process can write (nothing is left holding the file) and sees the later write only.
    other = subprocess.run(
        [sys.executable, "-c", LOCK_HOLDER, str(settings.helpdesk_path), "0", "transaction"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert other.returncode == 0, other.stderr
    assert rows(settings.helpdesk_path, "SELECT notes FROM customers WHERE id = 'cus_mid_dup'") == [
        {"notes": "written"}
    ]


def _note(value: str, *, fail: bool = False) -> Callable[[sqlite3.Connection], int]:
    """Work for `Helpdesk.write`: two statements, then (if `fail`) an error between them and the COMMIT."""

    def work(db: sqlite3.Connection) -> int:
        db.execute("UPDATE customers SET notes = ? WHERE id = 'cus_mid_dup'", (value,))
        db.execute("UPDATE customers SET notes = ? WHERE id = 'cus_small_dup'", (value,))
        if fail:
            raise ValueError("the work failed")
        return 7

    return work


async def _usable_after(helpdesk: Helpdesk) -> None:
    """Nothing is left open on the connection, and the next write goes through."""
    async with helpdesk.read() as conn:
        assert not conn.in_transaction
    assert await helpdesk.write(_note("written")) == 7


def test_write_commits_all_or_nothing_in_one_hop(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both statements or neither; a failed write leaves no transaction open, and costs one hop either way."""
    import aiosqlite.core

    hops = 0
    original = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await original(self, fn, *args, **kwargs)

    notes = "SELECT notes FROM customers WHERE id IN ('cus_mid_dup', 'cus_small_dup') ORDER BY id"

    async def scenario() -> None:
        nonlocal hops
        helpdesk = await Helpdesk.open(settings.helpdesk_path)
        try:
            monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
            hops = 0
            assert await helpdesk.write(_note("both")) == 7
            assert hops == 1
            hops = 0
            with pytest.raises(ValueError, match="the work failed"):
                await helpdesk.write(_note("neither", fail=True))
            assert hops == 1
            async with helpdesk.read() as conn:
                assert not conn.in_transaction
            assert rows(settings.helpdesk_path, notes) == [{"notes": "both"}, {"notes": "both"}]
            assert await helpdesk.write(_note("after")) == 7
        finally:
            monkeypatch.undo()
            await helpdesk.close()

    asyncio.run(scenario())
    assert rows(settings.helpdesk_path, notes) == [{"notes": "after"}, {"notes": "after"}]


def test_write_cancelled_while_it_waits_for_a_lock_is_whole_or_absent(settings: Settings) -> None:
    """A caller cancelled (a node time limit) while its write waits on another process's lock: the write runs
    whole once the lock is free or not at all, the connection stays usable, and nothing is left open."""

    async def scenario() -> None:
        helpdesk = await Helpdesk.open(settings.helpdesk_path, busy_timeout=3.0)
        try:
            with exclusive_lock(settings.helpdesk_path, 1.0) as holder:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await helpdesk.write(_note("late"))
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await helpdesk.write(_note("late and failed", fail=True))
                await asyncio.to_thread(holder.wait, 30)
            # Queued behind both cancelled writes on the connection's thread: it sees what they left.
            seen = await helpdesk.write(
                lambda db: db.execute("SELECT notes FROM customers WHERE id = 'cus_small_dup'").fetchone()[0]
            )
            assert seen == "late"
            await _usable_after(helpdesk)
        finally:
            await helpdesk.close()

    asyncio.run(scenario())
    notes = "SELECT notes FROM customers WHERE id IN ('cus_mid_dup', 'cus_small_dup') ORDER BY id"
    assert rows(settings.helpdesk_path, notes) == [{"notes": "written"}, {"notes": "written"}]


def test_write_while_another_process_keeps_the_lock_fails_as_busy_with_nothing_written(settings: Settings) -> None:
    async def scenario() -> None:
        helpdesk = await Helpdesk.open(settings.helpdesk_path, busy_timeout=0.2)
        try:
            with exclusive_lock(settings.helpdesk_path, 1.5), pytest.raises(sqlite3.OperationalError, match="locked"):
                await helpdesk.write(_note("blocked"))
            await _usable_after(helpdesk)
        finally:
            await helpdesk.close()

    asyncio.run(scenario())
    assert rows(settings.helpdesk_path, "SELECT notes FROM customers WHERE id = 'cus_small_dup'") == [
        {"notes": "written"}
    ]


@pytest.mark.slow
def test_lock_longer_than_the_node_timeout_costs_retries_not_the_connection(tmp_path: Path, model_cache: Path) -> None:
    policies = policy_copy(tmp_path, "support.toml", "io_node_seconds = 10.0", "io_node_seconds = 1.0")
    settings = Settings(home=tmp_path / "home", cache_home=model_cache, policy_dir=policies)
    app = TriageApp(settings)
    try:
        paused = app.run({"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "Charged twice for it."})
        assert paused.status == "awaiting_approval"
        tickets = [
            {"customer_id": "cus_small_dup", "subject": "Double charge", "body": "You billed me twice this month."},
            {"customer_id": "cus_large_dup", "subject": "Charged twice", "body": "I see the same charge twice."},
            {"subject": "Password", "body": "How do I reset my password?"},
        ]

        async def during_lock() -> list[object]:
            return list(
                await asyncio.gather(
                    app.aresume(paused.thread_id, {"approver": "alice", "decision": "approve"}),
                    *(app.arun(ticket) for ticket in tickets),
                    return_exceptions=True,
                )
            )

        with exclusive_lock(settings.helpdesk_path, 4.0):  # four times the node time limit
            outcomes = asyncio.run(during_lock())
        # Typed results, not exceptions: a run that hit the lock ended failed (transient) or went through.
        assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
        failed = [o for o in outcomes if o.status == "failed"]  # type: ignore[attr-defined]
        assert failed, "the lock outlasted the node time limit: some run must have failed on it"
        assert all(o.failure_class == "transient" for o in failed), failed  # type: ignore[attr-defined]
        # The same process writes again, and every thread reaches a terminal status.
        after = app.run({"customer_id": "cus_locked", "subject": "Locked out", "body": "My account is locked."})
        assert after.status in ("completed", "escalated"), after.status_reason
        for result in outcomes:
            thread_id = result.thread_id  # type: ignore[attr-defined]
            final = app.recover(thread_id)
            assert final.status in ("completed", "escalated", "awaiting_approval"), (thread_id, final.status_reason)
            if thread_id == paused.thread_id:
                assert final.status == "completed", final.status_reason
    finally:
        app.close()
    refunds = rows(settings.helpdesk_path, "SELECT amount_cents FROM refunds WHERE thread_id = ?", (paused.thread_id,))
    assert refunds == [{"amount_cents": 24000}]
