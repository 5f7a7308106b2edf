"""The ledger of executed effects, the audit trail and the approval index, kept in the checkpoint store.

The tables live in the checkpoint database and are written through the saver's own connection and lock (one
connection per process and file). The ledger's primary key is the effect's idempotency key: recording an effect
twice returns the first receipt, so a resumed or re-run executor never acts twice.

The approval index holds one row per approval with its state and a version. A decision is taken by a
compare-and-set on that version (`claim`) before the graph is resumed, so of two decisions racing on one approval,
in one process or several, exactly one wins; the loser is told who won.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from triage.errors import CheckpointStoreError, ToolErrorKind
from triage.helpdesk.store import is_transient

if TYPE_CHECKING:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

T = TypeVar("T")
WRITE_ATTEMPTS = 5
"""Tries of one journal write while another process holds the checkpoint file."""

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
CREATE TABLE IF NOT EXISTS approval_index (
    approval_id  TEXT PRIMARY KEY,
    thread_id    TEXT NOT NULL,
    origin_id    TEXT NOT NULL,
    round        INTEGER NOT NULL,
    state        TEXT NOT NULL,
    version      INTEGER NOT NULL,
    request      TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    decided_by   TEXT,
    decision     TEXT,
    decided_at   TEXT
);
CREATE INDEX IF NOT EXISTS approvals_by_state ON approval_index(state, requested_at);
CREATE INDEX IF NOT EXISTS approvals_by_thread ON approval_index(thread_id);
"""

ApprovalState = Literal["pending", "deciding", "approved", "rejected", "edited", "expired"]
"""`pending` waits for a decision; `deciding` took one approval of several and waits for the graph to ask again;
the others are final."""


@dataclass(frozen=True)
class ApprovalRow:
    """One approval in the index: its current round's request and the decision that last won it."""

    approval_id: str
    thread_id: str
    origin_id: str
    """The approval this one descends from by edits (itself when it was never edited); effects are keyed by it."""
    round: int
    """Approvals received when the current round was offered."""
    state: ApprovalState
    version: int
    request: dict[str, Any]
    requested_at: str
    expires_at: str
    decided_by: str | None
    decision: dict[str, Any] | None

    @property
    def winner(self) -> str:
        """Who decided this round and how, for a refusal message."""
        if self.decision is None:
            return "nobody yet"
        return f"{self.decided_by} ({self.decision.get('decision')})"


_ROW = (
    "SELECT approval_id, thread_id, origin_id, round, state, version, request, requested_at, expires_at, "
    "decided_by, decision FROM approval_index"
)


def _row(r: Any) -> ApprovalRow:
    return ApprovalRow(
        approval_id=r[0],
        thread_id=r[1],
        origin_id=r[2],
        round=int(r[3]),
        state=r[4],
        version=int(r[5]),
        request=dict(json.loads(r[6])),
        requested_at=r[7],
        expires_at=r[8],
        decided_by=r[9],
        decision=None if r[10] is None else dict(json.loads(r[10])),
    )


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

        async def write(conn: aiosqlite.Connection) -> None:
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

        await self._write(write)
        row = await self.receipt(key)
        assert row is not None
        return row

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

        async def write(conn: aiosqlite.Connection) -> None:
            await conn.execute(
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

        await self._write(write)

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

    # -- approval index ------------------------------------------------------------------------------------

    async def offer_approval(self, request: dict[str, Any], *, origin_id: str) -> None:
        """Index a round of an approval as pending.

        A round is the number of approvals received when it is offered. Offering the same round again (the
        approve node re-runs from its start when it is resumed) changes nothing, so a decision being taken in is
        never reset; a later round (one more approval received) opens the approval again with a new version.
        """
        round_ = len(request["approvals_received"])

        async def write(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO approval_index (approval_id, thread_id, origin_id, round, state, version, request, "
                "requested_at, expires_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?) "
                "ON CONFLICT(approval_id) DO UPDATE SET round = excluded.round, state = 'pending', "
                "version = approval_index.version + 1, request = excluded.request, decided_by = NULL, "
                "decision = NULL, decided_at = NULL WHERE approval_index.round < excluded.round",
                (
                    request["approval_id"],
                    request["thread_id"],
                    origin_id,
                    round_,
                    json.dumps(request, sort_keys=True, default=str),
                    request["requested_at"],
                    request["expires_at"],
                ),
            )

        await self._write(write)

    async def approval(self, approval_id: str) -> ApprovalRow | None:
        """The indexed approval `approval_id`, if any."""
        async with self._saver.lock, self._saver.conn.execute(_ROW + " WHERE approval_id = ?", (approval_id,)) as c:
            row = await c.fetchone()
        return None if row is None else _row(row)

    async def current_approval(self, thread_id: str) -> ApprovalRow | None:
        """The thread's pending approval, or else the one decided last (None when it never asked for one)."""
        async with (
            self._saver.lock,
            self._saver.conn.execute(
                _ROW + " WHERE thread_id = ? ORDER BY state = 'pending' DESC, decided_at DESC, rowid DESC LIMIT 1",
                (thread_id,),
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return None if row is None else _row(row)

    async def pending_approvals(self) -> list[ApprovalRow]:
        """Every approval waiting for a decision, oldest request first (read from the index, not the threads)."""
        async with (
            self._saver.lock,
            self._saver.conn.execute(
                _ROW + " WHERE state = 'pending' ORDER BY requested_at, thread_id, approval_id"
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [_row(r) for r in rows]

    async def claim(
        self, approval_id: str, *, version: int, state: ApprovalState, decision: dict[str, Any], approver: str
    ) -> bool:
        """Record `decision` on the approval if it is still pending at `version`; whether this decision won.

        One UPDATE with the version in its WHERE clause: SQLite serialises writers, in one process (the saver's
        lock) and across processes (the database lock), so of two claims on one version exactly one changes a row.
        """
        return await self._decide(approval_id, "version = ?", version, state, decision, approver)

    async def settle(
        self, approval_id: str, *, round_: int, state: ApprovalState, decision: dict[str, Any], approver: str
    ) -> None:
        """Record a decision the graph took in without a claim, so the index does not keep offering it.

        That happens when a resume is sent straight to the graph (e.g. from LangGraph Studio); a round already
        claimed through the app is left as it is.
        """
        await self._decide(approval_id, "round = ?", round_, state, decision, approver)

    async def _decide(
        self,
        approval_id: str,
        condition: str,
        value: int,
        state: ApprovalState,
        decision: dict[str, Any],
        approver: str,
    ) -> bool:
        async def write(conn: aiosqlite.Connection) -> bool:
            cursor = await conn.execute(
                "UPDATE approval_index SET state = ?, version = version + 1, decided_by = ?, decision = ?, "
                f"decided_at = ? WHERE approval_id = ? AND {condition} AND state = 'pending'",
                (
                    state,
                    approver,
                    json.dumps(decision, sort_keys=True, default=str),
                    datetime.now(UTC).isoformat(timespec="microseconds"),
                    approval_id,
                    value,
                ),
            )
            return cursor.rowcount == 1

        return await self._write(write)

    async def _write(self, statements: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `statements` and commit, under the saver's lock; retried while another process holds the file.

        Raises:
            CheckpointStoreError: the write failed for good, or the file stayed busy through every try.
        """
        conn = self._saver.conn
        for attempt in range(WRITE_ATTEMPTS):
            async with self._saver.lock:
                try:
                    result = await statements(conn)
                    await conn.commit()
                    return result
                except sqlite3.OperationalError as exc:
                    if conn.in_transaction:
                        await conn.rollback()
                    if not is_transient(exc) or attempt == WRITE_ATTEMPTS - 1:
                        kind: ToolErrorKind = "transient" if is_transient(exc) else "permanent"
                        raise CheckpointStoreError(f"the checkpoint store refused a write: {exc}", kind=kind) from exc
            await asyncio.sleep(0.05 * 2**attempt * (1 + random.random()))
        raise AssertionError("unreachable")
