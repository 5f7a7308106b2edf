"""The ledger of executed effects and the audit trail, kept in the checkpoint store beside the checkpoints.

Both tables live in the checkpoint database and are written through the saver's own connection and lock (one
connection per process and file). The ledger's primary key is the effect's idempotency key: recording an effect
twice returns the first receipt, so a resumed or re-run executor never acts twice.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

_SCHEMA = """
CREATE TABLE IF NOT EXISTS effects_ledger (
    idempotency_key TEXT PRIMARY KEY,
    thread_id       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    receipt         TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_trail (
    id             INTEGER PRIMARY KEY,
    thread_id      TEXT NOT NULL,
    at             TEXT NOT NULL,
    event          TEXT NOT NULL,
    actor          TEXT NOT NULL,
    approval_id    TEXT,
    details        TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    dedupe_key     TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS audit_by_thread ON audit_trail(thread_id, id);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Journal:
    """Effects ledger and audit trail on the checkpoint saver's connection."""

    def __init__(self, saver: AsyncSqliteSaver) -> None:
        self._saver = saver

    async def setup(self) -> None:
        """Create the tables if they are missing."""
        async with self._saver.lock:
            await self._saver.conn.executescript(_SCHEMA)
            await self._saver.conn.commit()

    async def receipt(self, key: str) -> dict[str, Any] | None:
        """The receipt of the effect recorded under `key`, if it ran."""
        async with (
            self._saver.lock,
            self._saver.conn.execute("SELECT receipt FROM effects_ledger WHERE idempotency_key = ?", (key,)) as cursor,
        ):
            row = await cursor.fetchone()
        return None if row is None else dict(json.loads(row[0]))

    async def record_effect(
        self, key: str, *, thread_id: str, kind: str, receipt: dict[str, Any], policy_version: str
    ) -> dict[str, Any]:
        """Record an effect and its audit line in one transaction; a repeat returns the first receipt."""
        async with self._saver.lock:
            conn = self._saver.conn
            await conn.execute(
                "INSERT OR IGNORE INTO effects_ledger (idempotency_key, thread_id, kind, receipt, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, thread_id, kind, json.dumps(receipt, sort_keys=True, default=str), _now()),
            )
            await conn.execute(
                "INSERT OR IGNORE INTO audit_trail (thread_id, at, event, actor, approval_id, details, "
                "policy_version, dedupe_key) VALUES (?, ?, 'effect', 'execute', NULL, ?, ?, ?)",
                (
                    thread_id,
                    _now(),
                    json.dumps({"kind": kind, **receipt}, default=str),
                    policy_version,
                    f"effect:{key}",
                ),
            )
            await conn.commit()
            async with conn.execute("SELECT receipt FROM effects_ledger WHERE idempotency_key = ?", (key,)) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return dict(json.loads(row[0]))

    async def audit(
        self,
        thread_id: str,
        event: str,
        *,
        actor: str,
        details: dict[str, Any],
        policy_version: str,
        approval_id: str | None = None,
        dedupe_key: str | None = None,
    ) -> None:
        """Append an audit line (once per `dedupe_key`, when one is given)."""
        async with self._saver.lock:
            await self._saver.conn.execute(
                "INSERT OR IGNORE INTO audit_trail (thread_id, at, event, actor, approval_id, details, "
                "policy_version, dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    thread_id,
                    _now(),
                    event,
                    actor,
                    approval_id,
                    json.dumps(details, default=str),
                    policy_version,
                    dedupe_key,
                ),
            )
            await self._saver.conn.commit()

    async def trail(self, thread_id: str) -> list[dict[str, Any]]:
        """The thread's audit lines, oldest first."""
        async with (
            self._saver.lock,
            self._saver.conn.execute(
                "SELECT at, event, actor, approval_id, details, policy_version FROM audit_trail WHERE thread_id = ? "
                "ORDER BY id",
                (thread_id,),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [
            {
                "at": r[0],
                "event": r[1],
                "actor": r[2],
                "approval_id": r[3],
                "details": json.loads(r[4]),
                "policy_version": r[5],
            }
            for r in rows
        ]
