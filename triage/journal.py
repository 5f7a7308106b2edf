"""The ledger of executed effects, the audit trail and the approval index, kept in the checkpoint store.

The tables live in the checkpoint store, SQLite or PostgreSQL (`triage.stores.sql`); on SQLite they are written
through the saver's own connection and lock (one connection per process and file). The ledger's primary key is the
effect's idempotency key: recording an effect twice returns the first receipt, so a resumed or re-run executor never
acts twice.

A conversation lease (one row per conversation that is taking a follow-up) lets one process at a time run a
conversation's next turn: it is taken by one upsert that only replaces an expired row, and it expires unless its
holder renews it, so a holder that died blocks the conversation for one lease period at most.

The approval index holds one row per approval with its state and a version. A decision is taken by a
compare-and-set on that version (`claim`) before the graph is resumed, so of two decisions racing on one approval,
in one process or several, exactly one wins; the loser is told who won.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from triage.stores.sql import Sql, Tx

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
    decided_at   TEXT,
    tier         TEXT,
    action       TEXT
);
CREATE INDEX IF NOT EXISTS approvals_by_state ON approval_index(state, requested_at);
CREATE INDEX IF NOT EXISTS approvals_by_thread ON approval_index(thread_id);
CREATE TABLE IF NOT EXISTS conversation_leases (
    conversation_id TEXT PRIMARY KEY,
    holder          TEXT NOT NULL,
    expires_at      TEXT NOT NULL
);
"""
LEASE_HOLDER_SQL = "SELECT holder FROM conversation_leases WHERE conversation_id = ?"
"""Who holds a conversation's lease (`Journal.holds_lease`; the SQLite saver reads it inside its write)."""
_POSTGRES_SCHEMA = _SCHEMA.replace("id             INTEGER PRIMARY KEY", "id             BIGSERIAL PRIMARY KEY")

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


def _pending_filter(tier: str | None, action: str | None, expired_by: str | None) -> tuple[str, tuple[Any, ...]]:
    where = " WHERE state = 'pending'"
    params: tuple[Any, ...] = ()
    for clause, value in (("tier = ?", tier), ("action = ?", action), ("expires_at <= ?", expired_by)):
        if value is not None:
            where += f" AND {clause}"
            params += (value,)
    return where, params


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


def _at(moment: datetime) -> str:
    """A UTC time as stored: fixed-width ISO 8601, so that text order is time order."""
    return moment.isoformat(timespec="microseconds")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Journal:
    """Effects ledger, audit trail and approval index in the checkpoint store."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    async def setup(self) -> None:
        """Create the tables if they are missing, and add the columns later versions added."""
        await self._sql.script(_POSTGRES_SCHEMA if self._sql.dialect == "postgres" else _SCHEMA)
        await self._add_filter_columns()

    async def _add_filter_columns(self) -> None:
        """Stores from before the inbox filtered in SQL lack the approval index's `tier` and `action`: add them."""
        if self._sql.dialect == "postgres":
            have = await self._sql.fetchall(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'approval_index' "
                "AND table_schema = current_schema()"
            )
        else:
            have = await self._sql.fetchall("SELECT name FROM pragma_table_info('approval_index')")
        missing = [c for c in ("tier", "action") if c not in {row[0] for row in have}]
        for column in missing:
            try:
                await self._sql.execute(f"ALTER TABLE approval_index ADD COLUMN {column} TEXT")
            except Exception as exc:  # another process added it first
                if "duplicate column" not in str(exc) and "already exists" not in str(exc):
                    raise
        if missing:
            for approval_id, request in await self._sql.fetchall(
                "SELECT approval_id, request FROM approval_index WHERE tier IS NULL"
            ):
                data = json.loads(request)
                await self._sql.execute(
                    "UPDATE approval_index SET tier = ?, action = ? WHERE approval_id = ?",
                    (data.get("tier"), data.get("action"), approval_id),
                )

    async def receipt(self, key: str) -> dict[str, Any] | None:
        """The receipt of the effect recorded under `key`, if it ran."""
        row = await self._sql.fetchone("SELECT receipt FROM effects_ledger WHERE idempotency_key = ?", (key,))
        return None if row is None else dict(json.loads(row[0]))

    async def record_effect(
        self, key: str, *, thread_id: str, kind: str, receipt: dict[str, Any], policy_version: str
    ) -> dict[str, Any]:
        """Record an effect and its audit line in one transaction; a repeat returns the first receipt."""

        async def write(tx: Tx) -> tuple[Any, ...] | None:
            await tx.execute(
                "INSERT INTO effects_ledger (idempotency_key, thread_id, kind, receipt, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (key, thread_id, kind, json.dumps(receipt, sort_keys=True, default=str), _now()),
            )
            await tx.execute(
                "INSERT INTO audit_trail (thread_id, at, event, actor, approval_id, details, "
                "policy_version, dedupe_key) VALUES (?, ?, 'effect', 'execute', NULL, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    thread_id,
                    _now(),
                    json.dumps({"kind": kind, **receipt}, default=str),
                    policy_version,
                    f"effect:{key}",
                ),
            )
            return await tx.fetchone("SELECT receipt FROM effects_ledger WHERE idempotency_key = ?", (key,))

        row = await self._sql.atomic(write)
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
        await self._sql.execute(
            "INSERT INTO audit_trail (thread_id, at, event, actor, approval_id, details, "
            "policy_version, dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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

    async def trail(self, thread_id: str) -> list[dict[str, Any]]:
        """The thread's audit lines, oldest first."""
        rows = await self._sql.fetchall(
            "SELECT at, event, actor, approval_id, details, policy_version FROM audit_trail WHERE thread_id = ? "
            "ORDER BY id",
            (thread_id,),
        )
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
        await self._sql.execute(
            "INSERT INTO approval_index (approval_id, thread_id, origin_id, round, state, version, request, "
            "requested_at, expires_at, tier, action) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?) "
            "ON CONFLICT(approval_id) DO UPDATE SET round = excluded.round, state = 'pending', "
            "version = approval_index.version + 1, request = excluded.request, tier = excluded.tier, "
            "action = excluded.action, "
            "decided_by = NULL, decision = NULL, decided_at = NULL WHERE approval_index.round < excluded.round",
            (
                request["approval_id"],
                request["thread_id"],
                origin_id,
                round_,
                json.dumps(request, sort_keys=True, default=str),
                request["requested_at"],
                request["expires_at"],
                request.get("tier"),
                request.get("action"),
            ),
        )

    async def approval(self, approval_id: str) -> ApprovalRow | None:
        """The indexed approval `approval_id`, if any."""
        row = await self._sql.fetchone(_ROW + " WHERE approval_id = ?", (approval_id,))
        return None if row is None else _row(row)

    async def current_approval(self, thread_id: str) -> ApprovalRow | None:
        """The thread's pending approval, or else the one decided last (None when it never asked for one)."""
        row = await self._sql.fetchone(
            _ROW + " WHERE thread_id = ? ORDER BY state = 'pending' DESC, decided_at DESC NULLS LAST, "
            "requested_at DESC, approval_id DESC LIMIT 1",
            (thread_id,),
        )
        return None if row is None else _row(row)

    async def pending_approvals(
        self,
        *,
        tier: str | None = None,
        action: str | None = None,
        expired_by: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ApprovalRow]:
        """Approvals waiting for a decision, oldest request first (read from the index, not the threads).

        `tier` and `action` filter; `expired_by` (an ISO time) keeps those expired by then; `limit`/`offset` page.
        """
        where, params = _pending_filter(tier, action, expired_by)
        sql = _ROW + where + " ORDER BY requested_at, thread_id, approval_id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += (limit, offset)
        return [_row(r) for r in await self._sql.fetchall(sql, params)]

    async def pending_counts(self, now: str) -> list[tuple[str, str, bool, int]]:
        """How many approvals wait, by tier, action and whether they expired by `now`: (tier, action, overdue, n)."""
        rows = await self._sql.fetchall(
            "SELECT tier, action, expires_at <= ?, COUNT(*) FROM approval_index WHERE state = 'pending' "
            "GROUP BY tier, action, expires_at <= ?",
            (now, now),
        )
        return [(str(r[0]), str(r[1]), bool(r[2]), int(r[3])) for r in rows]

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
        changed = await self._sql.execute(
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
        return changed == 1

    # -- conversation leases --------------------------------------------------------------------------------

    async def take_lease(self, conversation_id: str, holder: str, *, seconds: float) -> bool:
        """Take the conversation's lease for `holder` unless another holder's lease is still running; whether taken.

        One statement: the row is inserted, or replaced only when it has expired, so of two processes taking it at
        once exactly one changes a row (SQLite and PostgreSQL both serialise the conflicting writes).
        """
        now = datetime.now(UTC)
        return (
            await self._sql.execute(
                "INSERT INTO conversation_leases (conversation_id, holder, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (conversation_id) DO UPDATE SET holder = excluded.holder, "
                "expires_at = excluded.expires_at WHERE conversation_leases.expires_at <= ?",
                (conversation_id, holder, _at(now + timedelta(seconds=seconds)), _at(now)),
                synced=self._leases_synced,
            )
            == 1
        )

    async def renew_lease(self, conversation_id: str, holder: str, *, seconds: float) -> bool:
        """Push the lease's expiry on while `holder` still holds it; whether it did."""
        expires = _at(datetime.now(UTC) + timedelta(seconds=seconds))
        changed = await self._sql.execute(
            "UPDATE conversation_leases SET expires_at = ? WHERE conversation_id = ? AND holder = ?",
            (expires, conversation_id, holder),
            synced=self._leases_synced,
        )
        return changed == 1

    @property
    def _leases_synced(self) -> bool:
        """Whether taking and renewing a lease wait for the disk.

        Not on SQLite: the file is on the machine its holders run on, so a power loss that loses the lease stops
        them too. A PostgreSQL server is elsewhere: one that crashes and loses a lease it acknowledged would let a
        second process take a conversation its holder still runs. Giving a lease back never waits (lost, the lease
        runs out as a crashed holder's does).
        """
        return self._sql.dialect != "sqlite"

    async def release_lease(self, conversation_id: str, holder: str) -> None:
        """Give the lease back (a lease another holder took after this one expired is left alone)."""
        await self._sql.execute(
            "DELETE FROM conversation_leases WHERE conversation_id = ? AND holder = ?",
            (conversation_id, holder),
            synced=False,
        )

    async def holds_lease(self, conversation_id: str, holder: str) -> bool:
        """Whether `holder` still holds the conversation's lease (expired or not: no one took it since)."""
        row = await self._sql.fetchone(LEASE_HOLDER_SQL, (conversation_id,))
        return row is not None and row[0] == holder

    async def drop_expired_leases(self) -> int:
        """Delete the leases whose time has run out (a crashed holder's); how many. A running lease is kept."""
        return await self._sql.execute(
            "DELETE FROM conversation_leases WHERE expires_at <= ?", (_at(datetime.now(UTC)),)
        )

    # -- threads ---------------------------------------------------------------------------------------------

    async def thread_ids(self, *, limit: int | None = None) -> list[str]:
        """Thread ids in the checkpoint store, the most recently checkpointed first."""
        sql = (
            "SELECT thread_id, MAX(checkpoint_id) AS latest FROM checkpoints WHERE checkpoint_ns = '' "
            "GROUP BY thread_id ORDER BY latest DESC"
        )
        rows = (
            await self._sql.fetchall(sql + " LIMIT ?", (limit,)) if limit is not None else await self._sql.fetchall(sql)
        )
        return [row[0] for row in rows]

    async def has_history(self) -> bool:
        """Whether the store holds any run or recorded effect."""
        row = await self._sql.fetchone(
            "SELECT EXISTS (SELECT 1 FROM checkpoints) OR EXISTS (SELECT 1 FROM effects_ledger)"
        )
        return bool(row is not None and row[0])

    async def compact(self) -> None:
        """Give the space of deleted checkpoints back to the file system (VACUUM)."""
        await self._sql.compact()
