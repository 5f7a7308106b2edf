"""The approval index answers the inbox in SQL: filters, pages and counts, without reading every pending approval."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from triage.journal import Journal
from triage.stores.sql import SqliteSql

OLD_INDEX = """
CREATE TABLE approval_index (
    approval_id  TEXT PRIMARY KEY, thread_id TEXT NOT NULL, origin_id TEXT NOT NULL, round INTEGER NOT NULL,
    state TEXT NOT NULL, version INTEGER NOT NULL, request TEXT NOT NULL, requested_at TEXT NOT NULL,
    expires_at TEXT NOT NULL, decided_by TEXT, decision TEXT, decided_at TEXT
);
"""


def request(n: int, *, tier: str, action: str, expires_in_hours: float) -> dict[str, Any]:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    return {
        "approval_id": f"apr_{n:03d}",
        "thread_id": f"thr_{n:03d}",
        "action": action,
        "tier": tier,
        "args": {"amount_cents": 100 * n},
        "approvals_received": [],
        "requested_at": (now + timedelta(minutes=n)).isoformat(timespec="seconds"),
        "expires_at": (datetime.now(UTC) + timedelta(hours=expires_in_hours)).isoformat(timespec="seconds"),
    }


async def _journal(path: Path) -> tuple[Journal, aiosqlite.Connection]:
    conn = await aiosqlite.connect(path)
    journal = Journal(SqliteSql(conn, asyncio.Lock()))
    await journal.setup()
    return journal, conn


async def _scenario(path: Path) -> None:
    journal, conn = await _journal(path)
    try:
        kinds = [("single", "refund", 2), ("dual", "refund", 2), ("single", "reply", 2), ("dual", "refund", -1)]
        for n in range(1, 41):
            tier, action, hours = kinds[n % 4]
            await journal.offer_approval(request(n, tier=tier, action=action, expires_in_hours=hours), origin_id="o")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        counts = {(t, a, o): c for t, a, o, c in await journal.pending_counts(now)}
        assert counts == {
            ("single", "refund", False): 10,
            ("dual", "refund", False): 10,
            ("single", "reply", False): 10,
            ("dual", "refund", True): 10,
        }
        page = await journal.pending_approvals(tier="dual", action="refund", limit=7, offset=7)
        everything = await journal.pending_approvals(tier="dual", action="refund")
        assert [r.approval_id for r in page] == [r.approval_id for r in everything][7:14]
        assert [r.requested_at for r in everything] == sorted(r.requested_at for r in everything)
        overdue = await journal.pending_approvals(expired_by=now)
        assert {r.approval_id for r in overdue} == {f"apr_{n:03d}" for n in range(1, 41) if n % 4 == 3}
        assert await journal.pending_approvals(tier="none") == []
    finally:
        await conn.close()


def test_filters_pages_and_counts_come_from_sql(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path / "checkpoints.sqlite"))


def test_an_index_from_before_the_filter_columns_is_upgraded_and_filled(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.sqlite"
    old = sqlite3.connect(path)
    old.executescript(OLD_INDEX)
    for n, tier in ((1, "single"), (2, "dual")):
        r = request(n, tier=tier, action="refund", expires_in_hours=1)
        old.execute(
            "INSERT INTO approval_index VALUES (?, ?, 'o', 0, 'pending', 0, ?, ?, ?, NULL, NULL, NULL)",
            (r["approval_id"], r["thread_id"], json.dumps(r), r["requested_at"], r["expires_at"]),
        )
    old.commit()
    old.close()

    async def upgraded() -> list[str]:
        journal, conn = await _journal(path)
        try:
            await journal.setup()  # a second set-up (another process) finds the columns there
            return [r.approval_id for r in await journal.pending_approvals(tier="dual", action="refund")]
        finally:
            await conn.close()

    assert asyncio.run(upgraded()) == ["apr_002"]
