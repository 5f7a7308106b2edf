"""The embedded helpdesk database: opened, created and seeded on first use, shared by one process's runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from triage.errors import DamagedStoreError, StoreError
from triage.storefiles import (
    LoopConnection,
    check_sqlite_file,
    connect,
    create_atomically,
    describe_open_error,
    hold_writes_in_turn,
    on_connection_thread,
    prepare_home,
    synchronous_pragma,
    writer_lock_of,
)

SCHEMA_VERSION = 1
T = TypeVar("T")


class Helpdesk:
    """One aiosqlite connection to the helpdesk, serialised by a lock; and, if opened with one, a `LoopReader`.

    Concurrent runs in one process share the connection; the lock keeps one run's transaction from interleaving
    with another's statements. Other processes coordinate through SQLite's own locking (WAL mode, busy timeout).
    `read` uses the reader when there is one: reads then take no turn at the lock and no hop to a thread.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path, *, reader: LoopReader | None = None) -> None:
        self._conn = conn
        self._reader = reader
        self._lock = asyncio.Lock()
        self._closed = False
        self.path = path

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        busy_timeout: float = 10.0,
        synchronous: str = "full",
        on_loop: bool = False,
        reads_on_loop: bool = False,
    ) -> Helpdesk:
        """Open the helpdesk at `path`; a missing one is created and seeded, a damaged one is refused.

        `busy_timeout` is how many seconds a statement waits for another process's lock before it fails as busy
        (a transient error); keep it shorter than the node time limit. `synchronous` is SQLite's setting for the
        connection (`Settings.sqlite_synchronous`: full, normal or off); `on_loop` runs its statements on the
        event loop's thread (`Settings.sqlite_on_loop`, `LoopConnection`). `reads_on_loop` opens a `LoopReader`
        for `read` (with `on_loop` there is no need: every statement runs there already). A server that refuses
        blocking calls on its loop (`langgraph dev`) must not ask for it.

        Raises:
            DamagedStoreError: the file exists but is empty, truncated, not SQLite or not a seeded helpdesk; it is
                left untouched.
            StoreError: the folder or the file cannot be written.
        """
        await asyncio.to_thread(prepare_home, path.parent)
        quiet_sql_logging()
        if not await asyncio.to_thread(path.exists):
            await create_atomically(path, _create_and_seed)
        await asyncio.to_thread(check_sqlite_file, path, what="helpdesk")
        try:
            conn = await connect(path, on_loop=on_loop, isolation_level=None)
        except sqlite3.Error as exc:
            raise describe_open_error(path, "helpdesk", exc) from None
        hold_writes_in_turn(conn, path, wait=busy_timeout)
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute(f"PRAGMA busy_timeout = {max(1, round(busy_timeout * 1000))}")
            await _check_seeded(conn, path)
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute(synchronous_pragma(synchronous))
            # Brings an older helpdesk up to date: every statement is IF NOT EXISTS, after the columns added since.
            await _add_columns(conn)
            try:
                await conn.executescript(await asyncio.to_thread(_schema))
            except sqlite3.IntegrityError:
                raise await _describe_duplicate_requests(conn, path) from None
            reader = await LoopReader.open(path, wait=busy_timeout) if reads_on_loop and not on_loop else None
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise describe_open_error(path, "helpdesk", exc) from None
            raise
        return cls(conn, path, reader=reader)

    async def close(self) -> None:
        """Close the connections; safe to call twice."""
        async with self._lock:
            if not self._closed:
                self._closed = True
                if self._reader is not None:
                    await self._reader.close()
                await self._conn.close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """A connection for reads (no transaction is opened): the `LoopReader`, else the one connection.

        Either way a read sees what is committed and nothing of a transaction still open in this process: the
        reader is a connection of its own, and the one connection is held until such a transaction ends.
        """
        if self._reader is not None:
            yield self._reader
            return
        async with self._lock:
            yield self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run writes in one transaction: committed when the block ends, rolled back if it raises or is cancelled.

        BEGIN is awaited inside the guarded block: a task cancelled (by a node time limit) while BEGIN waits for a
        lock does not stop aiosqlite from running it on the connection's thread, so the ROLLBACK queued behind it
        closes the transaction nobody would own otherwise. A BEGIN that fails as busy leaves nothing to undo.
        """
        lock = writer_lock_of(self._conn)

        def begin(db: sqlite3.Connection) -> None:
            entered = lock is not None and lock.enter(db)  # the writer lock, held until COMMIT or ROLLBACK
            try:
                db.execute("BEGIN IMMEDIATE")
            except BaseException:
                if entered and lock is not None:
                    lock.leave(db)
                raise

        def commit(db: sqlite3.Connection) -> None:
            try:
                db.execute("COMMIT")
            finally:
                if lock is not None:
                    lock.leave(db)

        async with self._lock:
            try:
                if self._conn.in_transaction:  # left open by a cancelled statement: never build on it
                    await self._rollback()
                await on_connection_thread(self._conn, begin)
                yield self._conn
                await on_connection_thread(self._conn, commit)
            except BaseException:
                # Shielded: a second cancellation must not skip the rollback (it stays queued behind the BEGIN).
                await asyncio.shield(self._rollback())
                raise

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` (plain sqlite3 statements) in one transaction, in one hop to the connection's thread.

        BEGIN, `work` and COMMIT (or ROLLBACK, if `work` raises) run together on the connection's thread, so a
        write of a statement or two costs one hand-off instead of one per statement, and a cancelled caller can
        leave no transaction half-done: the hop runs to its end either way (what it returns is then not seen, as
        with `transaction`'s COMMIT). `transaction` is for writes that await between statements.
        """

        def run(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")  # busy: raises with nothing to undo
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result

        async with self._lock:
            if self._conn.in_transaction:  # left open by a cancelled statement: never build on it
                await self._rollback()
            return await on_connection_thread(self._conn, run, writes=True)

    async def _rollback(self) -> None:
        lock = writer_lock_of(self._conn)

        def rollback(db: sqlite3.Connection) -> None:
            try:
                # An error here means no transaction was open: BEGIN itself failed (busy), so nothing to undo.
                with contextlib.suppress(sqlite3.OperationalError):
                    db.execute("ROLLBACK")
            finally:
                if lock is not None:
                    lock.leave(db)  # what a BEGIN took, if its transaction was left open (nothing otherwise)

        await on_connection_thread(self._conn, rollback)


class LoopReader(LoopConnection):
    """A read-only connection to the helpdesk whose statements run on the event loop's thread (`LoopConnection`).

    A ticket reads the helpdesk two or three times (the customer, their payments, an article), 20-60 us of SQLite
    each, and the hop to a connection's thread and the loop's wake-up on the way back cost more than that. In WAL
    mode a read waits for no writer, so it runs at once; a page not in the OS's cache is read from the disk on
    the loop's thread meanwhile (the helpdesk is small, and hot).

    The rare read that finds the file locked (another process holding it exclusively, or recovering its log after
    a crash) is not waited out in SQLite's busy handler, which would stall every task of the loop: the
    connection's busy timeout is 0, and the read is tried again after a sleep on the loop (1 ms, doubling up to
    `MAX_NAP`) until `wait` seconds have passed; then it raises SQLite's busy error (transient, `is_transient`).
    The connection is `query_only`: a write through it fails before it touches the file.
    """

    MAX_NAP = 0.05
    """Longest sleep between two tries of a read that found the file locked (seconds)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], *, wait: float) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self.wait = wait

    @classmethod
    async def open(cls, path: Path, *, wait: float) -> LoopReader:
        """A reader of the SQLite file at `path` (opened, not yet read: the file is first touched by a read)."""
        reader = cls(partial(sqlite3.connect, str(path), isolation_level=None), wait=wait)
        await reader
        try:
            reader.row_factory = aiosqlite.Row
            await reader.execute("PRAGMA busy_timeout = 0")
            await reader.execute("PRAGMA query_only = ON")
        except BaseException:
            await reader.close()
            raise
        return reader

    async def _execute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        started: float | None = None
        nap = 0.001
        while True:
            try:
                return await super()._execute(fn, *args, **kwargs)
            except sqlite3.OperationalError as exc:
                if not is_transient(exc):
                    raise
                now = time.monotonic()
                started = now if started is None else started
                left = started + self.wait - now
                if left <= 0:
                    raise
                await asyncio.sleep(min(nap, left))
                nap = min(nap * 2, self.MAX_NAP)


_ADDED_COLUMNS = (("policy_violations", "idempotency_key", "TEXT"),)
"""Columns added to a table after helpdesks were created without them (the schema's indexes may use them)."""


async def _add_columns(conn: aiosqlite.Connection) -> None:
    """Add `_ADDED_COLUMNS` that an older helpdesk lacks (ALTER TABLE has no IF NOT EXISTS)."""
    for table, column, kind in _ADDED_COLUMNS:
        async with conn.execute(f"PRAGMA table_info({table})") as cursor:
            columns = {row[1] for row in await cursor.fetchall()}
        if columns and column not in columns:
            try:
                await conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as exc:  # another process opening the file added it in between
                if "duplicate column name" not in str(exc):
                    raise


def _schema() -> str:
    return resources.files("triage.helpdesk").joinpath("schema.sql").read_text()


async def _create_and_seed(conn: aiosqlite.Connection) -> None:
    # Runs on a new file that nobody else sees yet (see `create_atomically`): schema, demo data, seed record.
    from triage.helpdesk.seed import SEED_VERSION, load_articles, seed

    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA foreign_keys = ON")
    await conn.executescript(await asyncio.to_thread(_schema))
    await conn.execute("BEGIN IMMEDIATE")
    try:
        await seed(conn, articles=await asyncio.to_thread(load_articles))
        await conn.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [("schema_version", str(SCHEMA_VERSION)), ("seed_version", str(SEED_VERSION))],
        )
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


async def _check_seeded(conn: aiosqlite.Connection, path: Path) -> None:
    """Refuse an SQLite file that is not a seeded helpdesk (read only: nothing is written to it)."""
    async with conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'") as cursor:
        has_meta = await cursor.fetchone() is not None
    row = None
    if has_meta:
        async with conn.execute("SELECT value FROM meta WHERE key = 'seed_version'") as cursor:
            row = await cursor.fetchone()
    if row is None:
        raise DamagedStoreError(path, "is an SQLite database but not a seeded triage helpdesk (it has no seed record)")


async def _describe_duplicate_requests(conn: aiosqlite.Connection, path: Path) -> StoreError:
    """Why the one-open-request-per-payment index cannot be built: requests an earlier version let pile up."""
    async with conn.execute(
        "SELECT payment_id, group_concat(id, ', ') FROM refund_requests WHERE status IN ('requested', 'approved') "
        "GROUP BY payment_id HAVING COUNT(*) > 1"
    ) as cursor:
        found = "; ".join(f"{payment}: {ids}" for payment, ids in await cursor.fetchall())
    return StoreError(
        f"{path} has several open refund requests for one payment ({found}), left by an earlier version. Keep one "
        "per payment and mark the others rejected (UPDATE refund_requests SET status = 'rejected' WHERE id IN "
        "(...)), then try again"
    )


async def helpdesk_holds_requests(path: Path) -> bool:
    """Whether an existing helpdesk holds refund or account requests, or refunds triage issued (read only).

    Raises:
        DamagedStoreError: the file is not a seeded helpdesk.
        StoreError: it cannot be opened.
    """
    await asyncio.to_thread(check_sqlite_file, path, what="helpdesk")
    try:
        async with aiosqlite.connect(path) as conn:
            await conn.execute("PRAGMA busy_timeout = 10000")
            await _check_seeded(conn, path)
            async with conn.execute(
                "SELECT EXISTS (SELECT 1 FROM refund_requests) OR EXISTS (SELECT 1 FROM account_requests) "
                "OR EXISTS (SELECT 1 FROM refunds WHERE thread_id IS NOT NULL)"
            ) as cursor:
                row = await cursor.fetchone()
    except sqlite3.Error as exc:
        raise describe_open_error(path, "helpdesk", exc) from None
    return bool(row and row[0])


def quiet_sql_logging() -> None:
    """Keep customer data out of logs: aiosqlite logs every statement with its parameters at DEBUG."""
    logger = logging.getLogger("aiosqlite")
    if logger.getEffectiveLevel() < logging.INFO:
        logger.setLevel(logging.INFO)


def is_transient(exc: BaseException) -> bool:
    """Whether a database error may pass on retry (the file is locked or busy)."""
    return isinstance(exc, sqlite3.OperationalError) and any(word in str(exc).lower() for word in ("locked", "busy"))
