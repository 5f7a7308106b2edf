"""The checkpoint saver triage uses: retried while the file is busy, classified when it fails for good.

Writes that fail raise `CheckpointStoreError` (transient or permanent), never a raw `sqlite3.OperationalError`.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from triage.errors import CheckpointStoreError
from triage.helpdesk.store import is_transient

if TYPE_CHECKING:
    import aiosqlite
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata

    from triage.faults import FaultInjector

T = TypeVar("T")
WRITE_ATTEMPTS = 4
"""Tries of one checkpoint write while the database is busy (with exponential backoff from 50 ms)."""


class CheckpointSaver(AsyncSqliteSaver):
    """The process's one checkpoint saver; `faults` injects failures into its writes (tests and demos)."""

    def __init__(self, conn: aiosqlite.Connection, *, faults: FaultInjector | None = None) -> None:
        super().__init__(conn)
        self.faults = faults

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Save a checkpoint, retrying while the database is busy."""
        return await self._write(lambda: AsyncSqliteSaver.aput(self, config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Save a task's writes, retrying while the database is busy."""
        await self._write(lambda: AsyncSqliteSaver.aput_writes(self, config, writes, task_id, task_path))

    async def _write(self, write: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(WRITE_ATTEMPTS):
            try:
                if self.faults is not None:
                    await self.faults.before_checkpoint_write()
                return await write()
            except sqlite3.OperationalError as exc:
                await self._rollback()
                if not is_transient(exc):
                    raise CheckpointStoreError(
                        f"the checkpoint store failed: {exc}; check the disk and the file, then `triage recover`",
                        kind="permanent",
                    ) from exc
                if attempt == WRITE_ATTEMPTS - 1:
                    raise CheckpointStoreError(
                        f"the checkpoint store stayed busy ({exc}) through {WRITE_ATTEMPTS} tries; "
                        "`triage recover` continues the thread once it is free",
                        kind="transient",
                    ) from exc
                await asyncio.sleep(0.05 * 2**attempt * (1 + random.random()))
        raise AssertionError("unreachable")

    async def _rollback(self) -> None:
        """Leave no half-open implicit transaction behind a failed statement."""
        async with self.lock:
            if self.conn.in_transaction:
                await self.conn.rollback()
