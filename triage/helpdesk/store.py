"""The embedded helpdesk database: opened, created and seeded on first use, shared by one process's runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import aiosqlite

SCHEMA_VERSION = 1


class Helpdesk:
    """One aiosqlite connection to the helpdesk, serialised by a lock.

    Concurrent runs in one process share the connection; the lock keeps one run's transaction from interleaving
    with another's statements. Other processes coordinate through SQLite's own locking (WAL mode, busy timeout).
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._closed = False
        self.path = path

    @classmethod
    async def open(cls, path: Path, *, busy_timeout: float = 10.0) -> Helpdesk:
        """Open the helpdesk at `path`, creating the schema and seeding the demo data if it is new.

        `busy_timeout` is how many seconds a statement waits for another process's lock before it fails as busy
        (a transient error); keep it shorter than the node time limit.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        quiet_sql_logging()
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute(f"PRAGMA busy_timeout = {max(1, round(busy_timeout * 1000))}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await _create_and_seed(conn)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path)

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        async with self._lock:
            if not self._closed:
                self._closed = True
                await self._conn.close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """Use the connection for reads (no transaction is opened)."""
        async with self._lock:
            yield self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run writes in one transaction: committed when the block ends, rolled back if it raises or is cancelled.

        BEGIN is awaited inside the guarded block: a task cancelled (by a node time limit) while BEGIN waits for a
        lock does not stop aiosqlite from running it on the connection's thread, so the ROLLBACK queued behind it
        closes the transaction nobody would own otherwise. A BEGIN that fails as busy leaves nothing to undo.
        """
        async with self._lock:
            try:
                if self._conn.in_transaction:  # left open by a cancelled statement: never build on it
                    await self._rollback()
                await self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                await self._conn.execute("COMMIT")
            except BaseException:
                # Shielded: a second cancellation must not skip the rollback (it stays queued behind the BEGIN).
                await asyncio.shield(self._rollback())
                raise

    async def _rollback(self) -> None:
        # An error here means no transaction was open: BEGIN itself failed (busy), so there is nothing to undo.
        with contextlib.suppress(sqlite3.OperationalError):
            await self._conn.execute("ROLLBACK")


async def _create_and_seed(conn: aiosqlite.Connection) -> None:
    # The schema is idempotent (IF NOT EXISTS); seeding is guarded by a meta row inside one IMMEDIATE transaction,
    # so two processes opening a fresh home at once seed it exactly once.
    from triage.helpdesk.seed import SEED_VERSION, seed

    await conn.executescript(resources.files("triage.helpdesk").joinpath("schema.sql").read_text())
    await conn.execute("BEGIN IMMEDIATE")
    try:
        async with conn.execute("SELECT value FROM meta WHERE key = 'seed_version'") as cursor:
            row = await cursor.fetchone()
        if row is None:
            await seed(conn)
            await conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), ("seed_version", str(SEED_VERSION))],
            )
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


def quiet_sql_logging() -> None:
    """Keep customer data out of logs: aiosqlite logs every statement with its parameters at DEBUG."""
    logger = logging.getLogger("aiosqlite")
    if logger.getEffectiveLevel() < logging.INFO:
        logger.setLevel(logging.INFO)


def is_transient(exc: BaseException) -> bool:
    """Whether a database error may pass on retry (the file is locked or busy)."""
    return isinstance(exc, sqlite3.OperationalError) and any(word in str(exc).lower() for word in ("locked", "busy"))
