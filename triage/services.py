"""The seam where stores are opened.

The helpdesk, the checkpoint store and its journal, the tool gateway, the model tier and the policy bundle.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from triage.errors import DamagedStoreError
from triage.gateway import ToolGateway
from triage.helpdesk import Helpdesk
from triage.helpdesk.store import helpdesk_holds_requests, quiet_sql_logging
from triage.journal import Journal
from triage.models.guard import GuardedModelTier
from triage.models.tier import LocalModelTier, ModelTier
from triage.policies import PolicyBundle, load_policy_bundle
from triage.settings import Settings
from triage.storefiles import check_sqlite_file, create_atomically, describe_open_error, prepare_home
from triage.tracing import install_trace_redaction


@dataclass
class Services:
    """Everything a node needs besides its state, opened once per process (per event loop)."""

    settings: Settings
    policy: PolicyBundle
    helpdesk: Helpdesk
    gateway: ToolGateway
    models: GuardedModelTier
    saver: AsyncSqliteSaver
    """The process's one checkpoint saver (one connection per process and file)."""
    journal: Journal

    @classmethod
    async def open(
        cls, settings: Settings, *, policy: PolicyBundle | None = None, models: ModelTier | None = None
    ) -> Services:
        """Open the stores (creating and seeding them in a new home) and wire the gateway and model tier.

        `models` replaces the local tier; whatever tier is used, it sits behind `GuardedModelTier`.
        """
        await asyncio.to_thread(prepare_home, settings.home)
        install_trace_redaction()
        policy = policy or load_policy_bundle(settings.policy_dir)
        quiet_sql_logging()
        saver = await open_checkpoint_store(settings.checkpoints_path, helpdesk_path=settings.helpdesk_path)
        try:
            journal = Journal(saver)
            await journal.setup()
            if not await asyncio.to_thread(settings.helpdesk_path.exists) and await _has_history(saver):
                raise DamagedStoreError(
                    settings.helpdesk_path,
                    "is missing while the checkpoint store beside it holds runs and effects: a new, re-seeded "
                    "helpdesk would make refunded payments refundable again",
                )
            helpdesk = await Helpdesk.open(settings.helpdesk_path)
        except BaseException as exc:
            await saver.conn.close()
            if isinstance(exc, sqlite3.Error):
                raise describe_open_error(settings.checkpoints_path, "checkpoint store", exc) from None
            raise
        return cls(
            settings=settings,
            policy=policy,
            helpdesk=helpdesk,
            gateway=ToolGateway(helpdesk=helpdesk, permissions=policy.permissions),
            models=GuardedModelTier(models or LocalModelTier(settings.cache_dir)),
            saver=saver,
            journal=journal,
        )

    async def aclose(self) -> None:
        """Close the helpdesk and checkpoint connections."""
        await self.helpdesk.close()
        await self.saver.conn.close()


async def open_checkpoint_store(path: Path, *, helpdesk_path: Path) -> AsyncSqliteSaver:
    """Open the checkpoint store at `path`; a missing one is created only in a new home, a damaged one is refused.

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
        conn = await aiosqlite.connect(path)
    except sqlite3.Error as exc:
        raise describe_open_error(path, "checkpoint store", exc) from None
    try:
        await conn.execute("PRAGMA busy_timeout = 10000")
        async with conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('checkpoints', 'writes')"
        ) as cursor:
            row = await cursor.fetchone()
        if row is None or row[0] != 2:
            raise DamagedStoreError(path, "is an SQLite database but not a triage checkpoint store (no checkpoints)")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
    except BaseException as exc:
        await conn.close()
        if isinstance(exc, sqlite3.Error):
            raise describe_open_error(path, "checkpoint store", exc) from None
        raise
    return saver


async def _create_checkpoint_tables(conn: aiosqlite.Connection) -> None:
    saver = AsyncSqliteSaver(conn)
    await saver.setup()
    await Journal(saver).setup()


async def _has_history(saver: AsyncSqliteSaver) -> bool:
    """Whether the checkpoint store holds any run or recorded effect."""
    async with (
        saver.lock,
        saver.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM checkpoints) OR EXISTS (SELECT 1 FROM effects_ledger)"
        ) as cursor,
    ):
        row = await cursor.fetchone()
    return bool(row and row[0])


_shared: dict[tuple[int, str], Services] = {}
_shared_lock: dict[int, asyncio.Lock] = {}


async def shared_services(settings: Settings | None = None) -> Services:
    """Services for graphs run without a `TriageApp` (e.g. by `langgraph dev`): one set per event loop and home."""
    settings = settings or Settings()
    loop_id = id(asyncio.get_running_loop())
    key = (loop_id, str(settings.home.resolve()))
    lock = _shared_lock.setdefault(loop_id, asyncio.Lock())
    async with lock:
        if key not in _shared:
            _shared[key] = await Services.open(settings)
    return _shared[key]


async def close_shared_services() -> None:
    """Close the shared services opened on the running loop (for servers shutting down, and tests)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [key for key in _shared if key[0] == loop_id]:
        await _shared.pop(key).aclose()
