"""The checkpoint store, whichever backend: SQLite in the home (the embedded default) or PostgreSQL.

PostgreSQL (`TRIAGE_DATABASE_URL`) is for several worker processes. Each backend gives a LangGraph checkpoint
saver and the SQL that the journal (effects ledger, audit trail, approval index) runs on; `services.py` opens one
from the settings.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore

from triage.checkpoints import CheckpointSaver, RunRecorder
from triage.errors import DamagedStoreError, StoreError
from triage.faults import FaultInjector
from triage.helpdesk.store import helpdesk_holds_requests
from triage.journal import Journal
from triage.leases import held_in_context, hold_lost
from triage.storefiles import (
    check_sqlite_file,
    connect,
    create_atomically,
    describe_open_error,
    hold_writes_in_turn,
    synchronous_pragma,
)
from triage.stores.memory import close_memory, open_postgres_memory, open_sqlite_memory
from triage.stores.sql import PostgresSql, Sql, SqliteSql

CHECKPOINT_PAGE_SIZE = 16384
"""SQLite page size of a new checkpoint file. A checkpoint row is 1-5 KB: 4 KB pages hold one row each and left about
a quarter of the file empty (11 KB of every completed ticket); 16 KB pages hold several. Files created before keep
their page size."""
POOL_SIZE = 8
"""Connections per pool (the saver's, and the journal's) in one worker process on PostgreSQL."""
_SETUP_LOCK = 0x7472_6961_6765
"""An advisory lock id: workers starting together create the tables one at a time."""


@dataclass
class CheckpointStore:
    """An open checkpoint store: its saver, the SQL beside it, and how to close both."""

    saver: BaseCheckpointSaver[Any]
    sql: Sql
    where: str
    """Where it is, for messages (a file, or a PostgreSQL server and database without credentials)."""
    close: Callable[[], Awaitable[None]]
    memory: BaseStore
    """Per-customer memory (LangGraph's store) beside the checkpoints (`triage.stores.memory`)."""


def describe_url(url: str) -> str:
    """A database URL without its credentials, safe to print."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql://{host}{port}{parts.path}"


async def open_postgres_store(url: str) -> CheckpointStore:
    """Open (and on first use create) the checkpoint store in PostgreSQL at `url`.

    Raises:
        StoreError: the PostgreSQL packages are not installed, or the server cannot be reached or refuses.
    """
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg import OperationalError
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool, PoolTimeout
    except ImportError:
        raise StoreError(
            "TRIAGE_DATABASE_URL names PostgreSQL but its drivers are not installed: pip install 'triage[postgres]'"
        ) from None

    class PostgresSaver(RunRecorder, AsyncPostgresSaver):
        """LangGraph's PostgreSQL saver, remembering what a run saved as the SQLite `CheckpointSaver` does.

        It saves a held thread's steps only while the lease is still its holder's (`triage.leases`), as the SQLite
        saver does; here the lease is read just before each save rather than in its transaction (LangGraph's saver
        runs its statements in transactions of their own), which leaves a window of one round trip.
        """

        journal: Journal

        async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
            await self._still_held(config)
            return await super().aput(config, checkpoint, metadata, new_versions)

        async def aput_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
            await self._still_held(config)
            await super().aput_writes(config, writes, task_id, task_path)

        async def _still_held(self, config: Any) -> None:
            hold = held_in_context(config)
            if hold is not None and not await self.journal.holds_lease(*hold):
                raise hold_lost(hold[0])

    where = describe_url(url)
    saver_pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=POOL_SIZE,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    sql_pool: AsyncConnectionPool[Any] = AsyncConnectionPool(url, min_size=1, max_size=POOL_SIZE, open=False)

    memory: BaseStore | None = None

    async def close() -> None:
        if memory is not None:
            await close_memory(memory)
        await saver_pool.close()
        await sql_pool.close()

    try:
        await saver_pool.open(wait=True, timeout=10)
        await sql_pool.open(wait=True, timeout=10)
        saver = PostgresSaver(saver_pool)
        sql = PostgresSql(sql_pool)
        saver.journal = Journal(sql)
        memory = await open_postgres_memory(saver_pool)
        async with sql_pool.connection() as conn:
            # A session lock outside any transaction: the saver's migrations build indexes CONCURRENTLY, which
            # wait for every open transaction to end (this one's included, were it inside one).
            await conn.set_autocommit(True)
            await conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
            try:
                await saver.setup()
                await Journal(sql).setup()
                await memory.setup()  # type: ignore[attr-defined]
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))
                await conn.set_autocommit(False)
    except (OperationalError, PoolTimeout) as exc:
        await close()
        raise StoreError(
            f"cannot reach the checkpoint store at {where} ({str(exc).strip() or type(exc).__name__}); check "
            "TRIAGE_DATABASE_URL and that the server is up"
        ) from None
    except BaseException:
        await close()
        raise
    return CheckpointStore(saver=saver, sql=sql, where=where, close=close, memory=memory)


async def open_sqlite_store(
    path: Path,
    *,
    helpdesk_path: Path,
    faults: FaultInjector | None = None,
    synchronous: str = "full",
    on_loop: bool = False,
) -> CheckpointStore:
    """Open the SQLite checkpoint store at `path` (see `open_checkpoint_file`)."""
    saver = await open_checkpoint_file(
        path, helpdesk_path=helpdesk_path, faults=faults, synchronous=synchronous, on_loop=on_loop
    )
    try:
        memory = await open_sqlite_memory(saver)
    except BaseException as exc:
        await saver.conn.close()
        if isinstance(exc, sqlite3.Error):
            raise describe_open_error(path, "checkpoint store", exc) from None
        raise

    async def close() -> None:
        await close_memory(memory)
        await saver.conn.close()

    sql = SqliteSql(saver.conn, saver.lock)
    return CheckpointStore(saver=saver, sql=sql, where=str(path), close=close, memory=memory)


async def open_checkpoint_file(
    path: Path,
    *,
    helpdesk_path: Path,
    faults: FaultInjector | None = None,
    synchronous: str = "full",
    on_loop: bool = False,
) -> CheckpointSaver:
    """Open the checkpoint store at `path`; a missing one is created only in a new home, a damaged one is refused.

    `synchronous` is SQLite's setting for this connection (`Settings.sqlite_synchronous`: full, normal or off);
    `on_loop` runs its statements on the event loop's thread (`Settings.sqlite_on_loop`, `LoopConnection`).

    Raises:
        DamagedStoreError: the file is empty, truncated, not SQLite or not a checkpoint store, or it is missing
            beside an existing helpdesk (whose history it held); nothing is written.
        StoreError: the file or its folder cannot be written.
    """
    if not await asyncio.to_thread(path.exists):
        # Beside a helpdesk that holds refund or account requests, the missing store held their approvals and the
        # ledger that keeps effects from running twice: refuse. A helpdesk with only its seed is still a new home.
        if await asyncio.to_thread(helpdesk_path.exists) and await helpdesk_holds_requests(helpdesk_path):
            raise DamagedStoreError(
                path,
                f"is missing while the helpdesk {helpdesk_path} beside it holds refund or account requests: their "
                "approvals and the effects ledger are gone",
            )
        await create_atomically(path, _create_checkpoint_tables)
    await asyncio.to_thread(check_sqlite_file, path, what="checkpoint store")
    try:
        conn = await connect(path, on_loop=on_loop)
    except sqlite3.Error as exc:
        raise describe_open_error(path, "checkpoint store", exc) from None
    hold_writes_in_turn(conn, path)
    try:
        await conn.execute("PRAGMA busy_timeout = 10000")
        await conn.execute(synchronous_pragma(synchronous))
        async with conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('checkpoints', 'writes')"
        ) as cursor:
            row = await cursor.fetchone()
        if row is None or row[0] != 2:
            raise DamagedStoreError(path, "is an SQLite database but not a triage checkpoint store (no checkpoints)")
        saver = CheckpointSaver(conn, faults=faults)
        await saver.setup()
    except BaseException as exc:
        await conn.close()
        if isinstance(exc, sqlite3.Error):
            raise describe_open_error(path, "checkpoint store", exc) from None
        raise
    return saver


async def _create_checkpoint_tables(conn: aiosqlite.Connection) -> None:
    await conn.execute(f"PRAGMA page_size = {CHECKPOINT_PAGE_SIZE}")
    saver = CheckpointSaver(conn)
    await saver.setup()
    await Journal(SqliteSql(saver.conn, saver.lock)).setup()
    # The memory store's tables too, so processes opening the new file find its migrations done.
    await close_memory(await open_sqlite_memory(saver))
