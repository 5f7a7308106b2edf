"""How long `triage approvals` takes to list pending approvals in a store of a million threads.

Generates an approval index of N approvals (one per thread; all but `--pending` of them decided) in a fresh
SQLite checkpoint store and, with `--postgres URL` (or `--start-postgres`, which starts a throwaway server with
Debian's package), in PostgreSQL; then times the app's listing through the journal, several times, and prints the
median. Run: `python scripts/bench_approvals.py [--threads 1000000] [--pending 1000] [--start-postgres]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from triage.journal import Journal
from triage.stores import CheckpointStore, open_postgres_store, open_sqlite_store

BATCH = 20_000


def _rows(threads: int, pending: int) -> Any:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    pending_every = max(1, threads // max(1, pending))
    for number in range(threads):
        requested = (start + timedelta(seconds=number)).isoformat(timespec="seconds")
        expires = (start + timedelta(days=2, seconds=number)).isoformat(timespec="seconds")
        is_pending = number % pending_every == 0 and number // pending_every < pending
        approval_id = f"apr_{number:016x}"
        request = {
            "approval_id": approval_id,
            "thread_id": f"thr_{number:032x}",
            "action": "refund",
            "args": {"amount_cents": 24000, "payment_id": "pay_0012", "customer_id": "cus_mid_dup"},
            "tier": "single",
            "approvals_required": 1,
            "approvals_received": [],
            "description": "Approve: refund $240.00 of payment pay_0012 to cus_mid_dup.",
            "evidence": {},
            "requested_at": requested,
            "expires_at": expires,
            "action_request": {"action": "refund", "args": {}},
            "config": {"allow_accept": True, "allow_edit": True, "allow_respond": True, "allow_ignore": False},
        }
        yield (
            approval_id,
            request["thread_id"],
            approval_id,
            0,
            "pending" if is_pending else "approved",
            0 if is_pending else 1,
            json.dumps(request),
            requested,
            expires,
            None if is_pending else "alice",
            None if is_pending else json.dumps({"approver": "alice", "decision": "approve"}),
            None if is_pending else requested,
        )


async def fill(store: CheckpointStore, threads: int, pending: int) -> float:
    """Write the generated approvals in batches; the seconds it took."""
    started = time.perf_counter()
    sql = (
        "INSERT INTO approval_index (approval_id, thread_id, origin_id, round, state, version, request, requested_at, "
        "expires_at, decided_by, decision, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    batch: list[Any] = []
    done = 0
    for row in _rows(threads, pending):
        batch.append(row)
        if len(batch) == BATCH:
            await _insert(store, sql, batch)
            done += len(batch)
            batch.clear()
            print(f"\r  {done:,} / {threads:,} approvals written", end="", file=sys.stderr, flush=True)
    if batch:
        await _insert(store, sql, batch)
    print(file=sys.stderr)
    return time.perf_counter() - started


async def _insert(store: CheckpointStore, sql: str, batch: list[Any]) -> None:
    from triage.stores.sql import PostgresSql, SqliteSql, to_postgres

    if isinstance(store.sql, PostgresSql):
        async with store.sql._pool.connection() as conn, conn.cursor() as cursor:
            await cursor.executemany(to_postgres(sql), batch)
    elif isinstance(store.sql, SqliteSql):
        async with store.sql._lock:
            await store.sql._conn.executemany(sql, batch)
            await store.sql._conn.commit()


async def measure(name: str, store: CheckpointStore, threads: int, pending: int, repeats: int) -> None:
    """Fill a store and time the pending listing."""
    journal = Journal(store.sql)
    await journal.setup()
    print(f"{name}: generating {threads:,} approvals ({pending:,} pending) ...", file=sys.stderr)
    took = await fill(store, threads, pending)
    times = []
    listed = 0
    for _ in range(repeats):
        started = time.perf_counter()
        listed = len(await journal.pending_approvals())
        times.append((time.perf_counter() - started) * 1000)
    print(
        f"{name}: {threads:,} approvals ({listed:,} pending) generated in {took:.0f} s; "
        f"pending listing median {statistics.median(times):.1f} ms, max {max(times):.1f} ms over {repeats} runs"
    )


async def main() -> None:
    """Measure SQLite, then PostgreSQL when asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--postgres", help="a PostgreSQL URL to an empty database")
    parser.add_argument("--start-postgres", action="store_true", help="start a throwaway PostgreSQL server")
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        store = await open_sqlite_store(home / "checkpoints.sqlite", helpdesk_path=home / "helpdesk.sqlite")
        try:
            await measure("sqlite", store, args.threads, args.pending, args.repeats)
        finally:
            await store.close()
        url = args.postgres
        if url is None and args.start_postgres:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.postgres_server import postgres_server

            url = stack.enter_context(postgres_server())
        if url:
            store = await open_postgres_store(url)
            try:
                await measure("postgres", store, args.threads, args.pending, args.repeats)
            finally:
                await store.close()


if __name__ == "__main__":
    asyncio.run(main())
