"""Retention: which finished threads may go, deleting them from the checkpoint store, and compacting it.

A thread is deleted only when it is finished for good: never one awaiting approval, one that has not finished (a
crash that `triage recover` can continue), one that failed on a transient fault (a retry may finish it), or one
whose refund or account request is still open. The effects ledger and the audit trail are kept: the ledger is what
stops an effect from running twice, and each deleted thread gets a `pruned` line in the trail.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from triage.errors import TriageError

if TYPE_CHECKING:
    from triage.services import Services

PRUNE_ACTOR = "system:prune"
"""Who the audit trail records as the remover of a pruned thread."""
FINISHED = ("completed", "escalated", "failed")
TRANSIENT_FAILURES = ("TransientToolError", "OperationalError", "TimeoutError", "CancelledError")
"""A thread that failed with one of these may finish on a retry, so it is kept."""
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class RetentionError(TriageError):
    """A retention request is malformed (no rule given, a bad age or count)."""


def parse_age(text: str) -> timedelta:
    """Read an age such as `30d`, `12h`, `2w`, `90m` or `45s`.

    Raises:
        RetentionError: the text is not a whole number followed by s, m, h, d or w.
    """
    found = _AGE.match(text)
    if found is None:
        raise RetentionError(f"{text!r} is not an age: write a whole number and a unit, e.g. 30d, 12h, 2w, 90m")
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


def check_rules(older_than: object, keep: int | None) -> None:
    """Refuse a prune without a rule, or with a negative count.

    Raises:
        RetentionError: saying what to give.
    """
    if older_than is None and keep is None:
        raise RetentionError("say what to prune: --older-than AGE (e.g. 30d), --keep N (newest per status), or both")
    if keep is not None and keep < 0:
        raise RetentionError(f"--keep must be 0 or more, not {keep}")


@dataclass(frozen=True)
class ThreadRecord:
    """What retention needs to know of a thread."""

    thread_id: str
    status: str
    updated_at: datetime
    finished: bool
    """True when the graph reached its end (nothing left to run, no approval pending)."""
    status_reason: str = ""


@dataclass
class PrunePlan:
    """The threads to delete, and why each other one stays."""

    delete: list[ThreadRecord] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    """thread id -> the reason it is kept."""


def plan_prune(
    threads: Iterable[ThreadRecord],
    *,
    now: datetime,
    older_than: timedelta | None = None,
    keep: int | None = None,
    held: frozenset[str] = frozenset(),
) -> PrunePlan:
    """Choose the threads to delete: finished ones older than `older_than` and beyond the newest `keep` per status.

    `held` are threads with an open refund or account request in the helpdesk; they are never deleted.

    Raises:
        RetentionError: neither rule was given, or `keep` is negative.
    """
    check_rules(older_than, keep)
    plan = PrunePlan()
    seen_per_status: dict[str, int] = {}
    for record in sorted(threads, key=lambda r: r.updated_at, reverse=True):
        reason = _protection(record, held)
        if reason is None and keep is not None:
            seen_per_status[record.status] = seen_per_status.get(record.status, 0) + 1
            if seen_per_status[record.status] <= keep:
                reason = f"among the newest {keep} {record.status}"
        if reason is None and older_than is not None and record.updated_at > now - older_than:
            reason = "newer than the age limit"
        if reason is None:
            plan.delete.append(record)
        else:
            plan.kept[record.thread_id] = reason
    return plan


def _protection(record: ThreadRecord, held: frozenset[str]) -> str | None:
    """Why a thread may never be pruned, or None."""
    if record.status == "awaiting_approval":
        return "awaits approval"
    if not record.finished or record.status not in FINISHED:
        return "not finished (`triage recover` can continue it)"
    if record.status == "failed" and record.status_reason.startswith(TRANSIENT_FAILURES):
        return "failed on a transient fault (a retry may finish it)"
    if record.thread_id in held:
        return "holds an open refund or account request"
    return None


@dataclass
class PruneReport:
    """What `prune` did (or, on a dry run, would do)."""

    dry_run: bool
    deleted: list[str]
    kept: dict[str, str]
    bytes_before: int
    bytes_after: int


async def open_requests(services: Services) -> frozenset[str]:
    """Threads whose refund or account request is still open in the helpdesk."""
    async with (
        services.helpdesk.read() as conn,
        conn.execute(
            "SELECT thread_id FROM refund_requests WHERE status IN ('requested', 'approved') "
            "UNION SELECT thread_id FROM account_requests WHERE status = 'pending'"
        ) as cursor,
    ):
        return frozenset(row[0] for row in await cursor.fetchall())


async def delete_and_compact(services: Services, plan: PrunePlan) -> None:
    """Delete the planned threads' checkpoints (an audit line first, once per thread), then compact the store.

    Customers' memories forget the deleted threads too (a memory left with nothing is deleted), and the conversation
    leases that crashed holders left behind (expired, so they hold nothing back) go as well.
    """
    from triage.stores.memory import forget_threads

    for record in plan.delete:
        await services.journal.audit(
            record.thread_id,
            "pruned",
            actor=PRUNE_ACTOR,
            details={"status": record.status, "updated_at": record.updated_at.isoformat()},
            policy_version=services.policy.version,
            dedupe_key=f"pruned:{record.thread_id}",
        )
        await services.saver.adelete_thread(record.thread_id)
    await forget_threads(services.memory, [record.thread_id for record in plan.delete])
    await services.journal.drop_expired_leases()
    await services.journal.compact()


async def store_bytes(services: Services) -> int:
    """The bytes the checkpoint store takes: the SQLite file with its write-ahead log, or the PostgreSQL database."""
    if services.store.sql.dialect == "postgres":
        row = await services.store.sql.fetchone("SELECT pg_database_size(current_database())")
        return int(row[0]) if row else 0
    path = services.settings.checkpoints_path
    return await asyncio.to_thread(lambda: sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists()))
