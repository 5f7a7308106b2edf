"""The journal's SQL on SQLite: one hop per statement, and the same retries, rollbacks and typed errors as before."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiosqlite
import pytest

from triage.errors import CheckpointStoreError
from triage.journal import Journal
from triage.stores.sql import WRITE_ATTEMPTS, SqliteSql, Tx


async def _open(path: Path) -> tuple[SqliteSql, aiosqlite.Connection]:
    # No busy timeout: a write that meets another process's lock fails at once, so `SqliteSql`'s own retries act.
    conn = await aiosqlite.connect(path, timeout=0)
    await conn.execute("PRAGMA journal_mode = WAL")
    sql = SqliteSql(conn, asyncio.Lock())
    await Journal(sql).setup()
    await sql.script("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, tag TEXT NOT NULL)")
    return sql, conn


def _hold_write_lock(path: Path, seconds: float) -> None:
    """Another process's writer: it takes the file's write lock and keeps it for `seconds`."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO items (tag) VALUES ('other')")
        time.sleep(seconds)
        other.execute("COMMIT")
    finally:
        other.close()


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
            holder = asyncio.create_task(asyncio.to_thread(_hold_write_lock, path, 0.15))
            await asyncio.sleep(0.03)  # the other writer has the lock
            assert await sql.execute("INSERT INTO items (tag) VALUES ('mine')") == 1

            async def insert(tx: Tx) -> int:
                return await tx.execute("INSERT INTO items (tag) VALUES ('mine')")

            await holder
            holder = asyncio.create_task(asyncio.to_thread(_hold_write_lock, path, 0.15))
            await asyncio.sleep(0.03)
            assert await sql.atomic(insert) == 1
            await holder
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
            holder = asyncio.create_task(asyncio.to_thread(_hold_write_lock, path, waited + 1.0))
            await asyncio.sleep(0.05)
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
        finally:
            await conn.close()

    asyncio.run(scenario())
    assert _rows(path, "half") == 0  # the first statement of the failed transaction was rolled back
