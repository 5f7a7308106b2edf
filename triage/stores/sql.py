"""One small SQL interface over the two checkpoint-store backends: SQLite (embedded) and PostgreSQL (workers).

The journal (effects ledger, audit trail, approval index) and the thread listing are written once against it, in
the SQL both dialects share (`?` placeholders, `INSERT ... ON CONFLICT`, `NULLS LAST`); only schemas differ.
On SQLite it uses the checkpoint saver's own connection and lock (one connection per process and file); on
PostgreSQL a connection pool of its own beside the saver's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from triage.errors import CheckpointStoreError, ToolErrorKind
from triage.helpdesk.store import is_transient
from triage.storefiles import commit_unsynced, on_connection_thread

if TYPE_CHECKING:
    import aiosqlite
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

Dialect = Literal["sqlite", "postgres"]
Params = Sequence[Any]
T = TypeVar("T")
WRITE_ATTEMPTS = 5
"""Tries of one SQLite write while another process holds the checkpoint file (backoff from 50 ms)."""


class Tx(Protocol):
    """Statements inside one transaction."""

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        ...


class Sql(Protocol):
    """A checkpoint store's SQL connection, whichever backend."""

    dialect: Dialect

    async def script(self, sql: str) -> None:
        """Run several `;`-separated statements (schemas) and commit."""
        ...

    async def execute(self, sql: str, params: Params = (), *, synced: bool = True) -> int:
        """Run one statement in its own transaction; the number of rows it changed.

        `synced=False`: the commit need not wait for the disk (a lease: nothing needs it after a power loss).
        """
        ...

    async def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        ...

    async def fetchall(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        ...

    async def atomic(self, statements: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `statements` in one transaction: committed together, rolled back if they raise.

        On SQLite the whole transaction is retried while another process holds the file.
        """
        ...

    async def compact(self) -> None:
        """Give the space of deleted rows back (VACUUM)."""
        ...


class SqliteSql:
    """SQL on the SQLite checkpoint saver's connection, serialised by the saver's lock."""

    dialect: Dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, lock: Any) -> None:
        self._conn = conn
        self._lock = lock

    async def script(self, sql: str) -> None:
        """Run a schema script and commit."""
        async with self._lock:
            await self._conn.executescript(sql)
            await self._conn.commit()

    async def execute(self, sql: str, params: Params = (), *, synced: bool = True) -> int:
        """Run one statement and commit, in one hop; the number of rows it changed (retried as `atomic` is).

        `synced=False` commits with `synchronous = NORMAL` (`commit_unsynced`).

        The hop runs to its end once it has started: a caller cancelled meanwhile (a node's time limit, a shutdown)
        may have written. So could it before, when the cancel came during the COMMIT's own hop. The writes that
        matter twice are keyed or compare-and-set (effects and most audit lines carry a dedupe key; approval
        decisions and leases change a row only in the state they expect); an audit line without a key may be
        written once more if its caller repeats it.
        """
        work = _committed(sql, params)
        if not synced:
            work = functools.partial(_unsynced, work)
        return await self._retried(lambda conn: on_connection_thread(conn, work, writes=True))

    async def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        async with self._lock:
            return await on_connection_thread(self._conn, _first_row(sql, params))

    async def fetchall(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        async with self._lock:
            return await on_connection_thread(self._conn, _all_rows(sql, params))

    async def atomic(self, statements: Callable[[Tx], Awaitable[T]]) -> T:
        """Statements committed together under the saver's lock; retried while another process holds the file.

        Raises:
            CheckpointStoreError: the write failed for good, or the file stayed busy through every try.
        """

        async def run(conn: aiosqlite.Connection) -> T:
            result = await statements(_SqliteTx(conn))
            await conn.commit()
            return result

        return await self._retried(run)

    async def _retried(self, run: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """`run` under the saver's lock, rolled back and tried again while another process holds the file.

        A failed or cancelled `run` is always followed by a ROLLBACK on the connection's thread, whether or not a
        transaction looks open: a statement of `run` still queued behind another hop when the caller was cancelled
        would otherwise open a transaction after the check, and the next writer's COMMIT would commit half of it.
        The ROLLBACK is queued behind it (one thread, in order), shielded so a second cancellation cannot skip it,
        and does nothing when no transaction is open.
        """
        conn = self._conn
        for attempt in range(WRITE_ATTEMPTS):
            async with self._lock:
                try:
                    if conn.in_transaction:  # left open by someone cancelled mid-statement: never build on it
                        await conn.rollback()
                    return await run(conn)
                except sqlite3.OperationalError as exc:
                    await asyncio.shield(_rollback(conn))
                    if not is_transient(exc) or attempt == WRITE_ATTEMPTS - 1:
                        kind: ToolErrorKind = "transient" if is_transient(exc) else "permanent"
                        raise CheckpointStoreError(f"the checkpoint store refused a write: {exc}", kind=kind) from exc
                except BaseException:
                    await asyncio.shield(_rollback(conn))
                    raise
            await asyncio.sleep(0.05 * 2**attempt * (1 + random.random()))
        raise AssertionError("unreachable")

    async def compact(self) -> None:
        """VACUUM, then fold the write-ahead log back into the file."""
        async with self._lock:
            await self._conn.commit()
            await self._conn.execute("VACUUM")
            # Read to its end and closed: a checkpoint statement left open counts as a write in progress, and the
            # next COMMIT on the connection would fail with "SQL statements in progress".
            async with self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
                await cursor.fetchall()


class _SqliteTx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await on_connection_thread(self._conn, _changed(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        return await on_connection_thread(self._conn, _first_row(sql, params))


async def _rollback(conn: aiosqlite.Connection) -> None:
    """ROLLBACK on the connection's thread, behind whatever is queued there; nothing when no transaction is open."""
    with contextlib.suppress(sqlite3.Error):  # the failure that led here is the one to report
        await conn.rollback()


# Each statement runs whole (execute, fetch, close) in one hop to the connection's thread, as aiosqlite's cursor
# would in three: the journal reads a receipt before every effect and writes one after it.


def _changed(sql: str, params: Params) -> Callable[[sqlite3.Connection], int]:
    def run(conn: sqlite3.Connection) -> int:
        cursor = conn.execute(sql, tuple(params))
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    return run


def _committed(sql: str, params: Params) -> Callable[[sqlite3.Connection], int]:
    def run(conn: sqlite3.Connection) -> int:
        try:
            changed = _changed(sql, params)(conn)
            conn.commit()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # the statement's own error is the one to report
                conn.rollback()
            raise
        return changed

    return run


def _unsynced(work: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    return commit_unsynced(conn, lambda: work(conn))


def _first_row(sql: str, params: Params) -> Callable[[sqlite3.Connection], tuple[Any, ...] | None]:
    def read(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
        cursor = conn.execute(sql, tuple(params))
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else tuple(row)

    return read


def _all_rows(sql: str, params: Params) -> Callable[[sqlite3.Connection], list[tuple[Any, ...]]]:
    def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
        cursor = conn.execute(sql, tuple(params))
        try:
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    return read


_PLACEHOLDER = re.compile(r"\?")


def to_postgres(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (our statements carry no literal `?` or `%`)."""
    return _PLACEHOLDER.sub("%s", sql)


class PostgresSql:
    """SQL on a PostgreSQL connection pool; each call takes a connection and commits before giving it back."""

    dialect: Dialect = "postgres"

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def script(self, sql: str) -> None:
        """Run a schema script and commit."""
        async with self._pool.connection() as conn:
            await conn.execute(sql)

    async def execute(self, sql: str, params: Params = (), *, synced: bool = True) -> int:
        """Run one statement and commit; the number of rows it changed.

        `synced=False` commits without waiting for the server's disk (`synchronous_commit = off` for it alone).
        """
        async with self._pool.connection() as conn:
            if synced:
                cursor = await conn.execute(to_postgres(sql), tuple(params))
                return int(cursor.rowcount)
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = off")
                cursor = await conn.execute(to_postgres(sql), tuple(params))
                return int(cursor.rowcount)

    async def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(to_postgres(sql), tuple(params))
            row = await cursor.fetchone()
        return None if row is None else tuple(row)

    async def fetchall(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(to_postgres(sql), tuple(params))
            return [tuple(row) for row in await cursor.fetchall()]

    async def atomic(self, statements: Callable[[Tx], Awaitable[T]]) -> T:
        """Statements committed together on one pooled connection."""
        async with self._pool.connection() as conn, conn.transaction():
            return await statements(_PostgresTx(conn))

    async def compact(self) -> None:
        """VACUUM (outside a transaction, as PostgreSQL requires)."""
        async with self._pool.connection() as conn:
            await conn.set_autocommit(True)
            try:
                await conn.execute("VACUUM")
            finally:
                await conn.set_autocommit(False)


class _PostgresTx:
    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        cursor = await self._conn.execute(to_postgres(sql), tuple(params))
        return int(cursor.rowcount)

    async def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        cursor = await self._conn.execute(to_postgres(sql), tuple(params))
        row = await cursor.fetchone()
        return None if row is None else tuple(row)
