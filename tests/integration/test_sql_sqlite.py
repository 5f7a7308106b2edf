"""The journal's SQL on SQLite: one hop per statement, and the same retries, rollbacks and typed errors as before."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import aiosqlite
import pytest

from triage.errors import CheckpointStoreError
from triage.journal import Journal
from triage.storefiles import on_connection_thread
from triage.stores.sql import WRITE_ATTEMPTS, SqliteSql, Tx


async def _open(path: Path) -> tuple[SqliteSql, aiosqlite.Connection]:
    # No busy timeout: a write that meets another process's lock fails at once, so `SqliteSql`'s own retries act.
    conn = await aiosqlite.connect(path, timeout=0)
    await conn.execute("PRAGMA journal_mode = WAL")
    sql = SqliteSql(conn, asyncio.Lock())
    await Journal(sql).setup()
    await sql.script("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, tag TEXT NOT NULL)")
    return sql, conn


def _hold_write_lock(path: Path, seconds: float, taken: threading.Event) -> None:
    """Another process's writer: it takes the file's write lock, says so, and keeps it for `seconds`."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO items (tag) VALUES ('other')")
        taken.set()
        time.sleep(seconds)
        other.execute("COMMIT")
    finally:
        other.close()


async def _other_writer(path: Path, seconds: float) -> asyncio.Task[None]:
    """Start another writer holding the file's write lock for `seconds`; return once it holds it."""
    taken = threading.Event()
    holder = asyncio.create_task(asyncio.to_thread(_hold_write_lock, path, seconds, taken))
    await asyncio.to_thread(taken.wait)
    return holder


def _rows(path: Path, tag: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM items WHERE tag = ?", (tag,)).fetchone()[0])
    finally:
        conn.close()


def test_statements_report_rows_changed_and_read_back_as_tuples(tmp_path: Path) -> None:
    async def scenario() -> None:
        sql, conn = await _open(tmp_path / "c.sqlite")
        try:
            assert await sql.execute("INSERT INTO items (tag) VALUES (?)", ("a",)) == 1
            assert await sql.execute("INSERT INTO items (tag) VALUES (?)", ("a",)) == 1
            assert await sql.execute("UPDATE items SET tag = 'b' WHERE tag = ?", ("a",)) == 2
            assert await sql.execute("UPDATE items SET tag = 'c' WHERE tag = ?", ("none",)) == 0
            assert await sql.fetchone("SELECT tag FROM items ORDER BY id") == ("b",)  # the first of several rows
            assert await sql.fetchone("SELECT tag FROM items WHERE tag = 'none'") is None
            assert await sql.fetchall("SELECT id, tag FROM items ORDER BY id") == [(1, "b"), (2, "b")]

            async def two(tx: Tx) -> tuple[int, tuple[object, ...] | None]:
                changed = await tx.execute("DELETE FROM items WHERE id = ?", (1,))
                return changed, await tx.fetchone("SELECT COUNT(*) FROM items")

            assert await sql.atomic(two) == (1, (1,))
            assert not conn.in_transaction
            await sql.compact()  # VACUUM refuses to run while a statement of the connection is still open
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_a_write_waits_out_another_process_holding_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"

    async def scenario() -> None:
        sql, conn = await _open(path)
        try:
            holder = await _other_writer(path, 0.15)
            assert await sql.execute("INSERT INTO items (tag) VALUES ('mine')") == 1
            assert holder.done()  # it could only commit after the other writer let go

            async def insert(tx: Tx) -> int:
                return await tx.execute("INSERT INTO items (tag) VALUES ('mine')")

            holder = await _other_writer(path, 0.15)
            assert await sql.atomic(insert) == 1
            assert holder.done()
            assert not conn.in_transaction
        finally:
            await conn.close()

    asyncio.run(scenario())
    assert _rows(path, "mine") == 2 and _rows(path, "other") == 2


def test_a_file_busy_through_every_try_is_a_transient_error_that_wrote_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    waited = sum(0.05 * 2**attempt * 2 for attempt in range(WRITE_ATTEMPTS - 1))  # the longest backoff there is

    async def scenario() -> None:
        sql, conn = await _open(path)
        try:
            holder = await _other_writer(path, waited + 1.0)
            with pytest.raises(CheckpointStoreError) as refused:
                await sql.execute("INSERT INTO items (tag) VALUES ('mine')")
            assert refused.value.kind == "transient"
            assert not conn.in_transaction
            await holder
        finally:
            await conn.close()

    asyncio.run(scenario())
    assert _rows(path, "mine") == 0


def test_a_statement_that_cannot_run_is_a_permanent_error_and_leaves_no_transaction(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"

    async def scenario() -> None:
        sql, conn = await _open(path)
        try:

            async def half(tx: Tx) -> None:
                await tx.execute("INSERT INTO items (tag) VALUES ('half')")
                await tx.execute("INSERT INTO no_such_table (tag) VALUES ('x')")

            for write in (sql.execute("INSERT INTO no_such_table (tag) VALUES ('x')"), sql.atomic(half)):
                with pytest.raises(CheckpointStoreError) as refused:
                    await write
                assert refused.value.kind == "permanent"
                assert not conn.in_transaction
            # Read on the same connection, which would see its own uncommitted row: the first insert was undone.
            assert await sql.fetchone("SELECT COUNT(*) FROM items WHERE tag = 'half'") == (0,)
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_a_transaction_cancelled_while_its_statements_wait_their_turn_is_rolled_back(tmp_path: Path) -> None:
    """Cancelled (a node's time limit) while its first statement is still queued behind another hop on the
    connection's thread: that statement runs later, and must not leave a transaction the next writer commits."""
    path = tmp_path / "c.sqlite"

    async def scenario() -> None:
        sql, conn = await _open(path)
        try:
            busy = asyncio.ensure_future(on_connection_thread(conn, lambda _: time.sleep(0.3)))
            await asyncio.sleep(0.02)  # the connection's thread is busy with it

            async def pair(tx: Tx) -> None:
                await tx.execute("INSERT INTO items (tag) VALUES ('first')")
                await tx.execute("INSERT INTO items (tag) VALUES ('second')")

            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await sql.atomic(pair)
            await busy
            assert await sql.execute("INSERT INTO items (tag) VALUES ('next')") == 1  # the next writer commits
            assert not conn.in_transaction
        finally:
            await conn.close()

    asyncio.run(scenario())
    assert (_rows(path, "first"), _rows(path, "second"), _rows(path, "next")) == (0, 0, 1)


def test_lease_writes_commit_without_a_sync_and_every_other_write_with_one(tmp_path: Path) -> None:
    """A lease on SQLite is worth nothing after a power loss (its holder died with the machine), so taking, renewing
    and giving it back commit with `synchronous = NORMAL`: 0.77 -> 0.27 ms a hold here. The connection's own level
    is put back after each, also after a statement that fails; an audit line's commit stays synced."""

    async def scenario() -> None:
        sql, conn = await _open(tmp_path / "c.sqlite")
        journal = Journal(sql)
        try:
            await conn.execute("PRAGMA synchronous = FULL")
            statements: list[str] = []
            await on_connection_thread(conn, lambda db: db.set_trace_callback(statements.append))
            assert await journal.take_lease("thr_a", "me", seconds=30)
            assert await journal.renew_lease("thr_a", "me", seconds=30)
            await journal.release_lease("thr_a", "me")
            await journal.audit("thr_a", "noted", actor="test", details={}, policy_version="p")
            with pytest.raises(CheckpointStoreError):
                await sql.execute("INSERT INTO no_such_table VALUES (?)", (1,), synced=False)
            await on_connection_thread(conn, lambda db: db.set_trace_callback(None))
            commits = [i for i, statement in enumerate(statements) if statement.startswith("COMMIT")]
            written = [statements[i - 1].split()[0] for i in commits]
            assert written == ["INSERT", "UPDATE", "DELETE", "INSERT"], statements
            for i in commits[:3]:  # the lease's: NORMAL before it (then BEGIN, the statement), FULL (2) back after
                assert statements[i - 3 : i - 1] == ["PRAGMA synchronous = NORMAL", "BEGIN "], statements
                assert statements[i + 1] == "PRAGMA synchronous = 2", statements
            assert not any("PRAGMA" in s for s in statements[commits[2] + 2 : commits[3] + 1]), statements  # audit
            assert statements[-1] == "PRAGMA synchronous = 2", statements  # after the failed statement as well
            assert await (await conn.execute("PRAGMA synchronous")).fetchone() == (2,)
            assert not conn.in_transaction
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_on_postgresql_a_lease_is_taken_and_renewed_synced_and_only_given_back_unsynced() -> None:
    """The server may crash while its clients run on: a lease it acknowledged and then lost would let a second
    process take a conversation its holder still runs (found by review, with a server stopped `-m immediate`)."""

    class Recording:
        dialect = "postgres"

        def __init__(self) -> None:
            self.calls: list[tuple[str, bool]] = []

        async def execute(self, sql: str, params: object = (), *, synced: bool = True) -> int:
            self.calls.append((sql.split()[0], synced))
            return 1

    recording = Recording()
    journal = Journal(recording)  # type: ignore[arg-type]

    async def scenario() -> None:
        await journal.take_lease("thr_a", "me", seconds=30)
        await journal.renew_lease("thr_a", "me", seconds=30)
        await journal.release_lease("thr_a", "me")

    asyncio.run(scenario())
    assert recording.calls == [("INSERT", True), ("UPDATE", True), ("DELETE", False)]
