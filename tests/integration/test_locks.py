"""A lock held on the helpdesk file by another process, longer than a node's time limit, costs retries, never the
connection: a transaction cancelled while BEGIN waits is rolled back, later writes in the same process work, and
an approved refund resumed during the lock is carried out once (by retry or `recover`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import policy_copy, rows
from triage import TriageApp
from triage.helpdesk import Helpdesk
from triage.settings import Settings

HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@contextmanager
def exclusive_lock(db: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Hold BEGIN EXCLUSIVE on `db` from another process for `seconds` (yields once the lock is held)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.wait(timeout=seconds + 30)
        if holder.stdout is not None:
            holder.stdout.close()


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
        [sys.executable, "-c", HOLDER, str(settings.helpdesk_path), "0"], capture_output=True, text=True, timeout=30
    )
    assert other.returncode == 0, other.stderr
    assert rows(settings.helpdesk_path, "SELECT notes FROM customers WHERE id = 'cus_mid_dup'") == [
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
