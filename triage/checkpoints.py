"""The checkpoint saver triage uses: retried while the file is busy, classified when it fails for good.

Writes that fail raise `CheckpointStoreError` (transient or permanent), never a raw `sqlite3.OperationalError`.

Two things keep the store small (BENCHMARKS.md has the figures):

- Channel versions are integers in threads it starts. The SQLite saver's own versions are 50-character strings
  (`"<32 digits>.<random float>"`), and every checkpoint carries one per channel and one per node and channel it
  has seen: about 17 KB of every completed ticket. A thread begun with string versions keeps them (versions within
  one thread are compared with each other, so their type never changes mid-thread).
- A checkpoint's node writes are dropped when its successor is saved, in the same transaction: the successor holds
  their result, and a run goes on from the newest checkpoint with that checkpoint's own writes. Writes to
  LangGraph's reserved channels (`__error__`, `__interrupt__`, `__resume__`, ...) stay: the timeline shows a failed
  node's error from them, and they are small. `triage recover` retries a transient failure from the failed step's
  own checkpoint; LangGraph replays every task of that step then, saved writes or not, so nothing changes there.
  (LangGraph's `DeltaChannel` rebuilds a value from earlier writes; no triage state uses it, and it must not while
  this holds.)

A task's writes to several state channels are saved as one row (`BATCH_TYPE`), not a row each: a row costs about as
much to insert and delete again as a small checkpoint's bytes, and a node that returns four keys wrote four. Such a
row is read back as the writes it holds, in their order (`_expanded`); writes to reserved channels, and the
accumulated writes of LangGraph's null task (saved again with each addition), keep a row each. Rows saved one by one
(by earlier versions) are read as before. An earlier version reading a store this one wrote would not know a batch
row: it would take it for a write to an unknown channel.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import ormsgpack
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.checkpoint.sqlite.utils import load_pending_writes, pending_writes_sql, search_where

from triage.errors import CheckpointStoreError
from triage.helpdesk.store import is_transient
from triage.journal import LEASE_HOLDER_SQL
from triage.leases import held_in_context, hold_lost
from triage.storefiles import on_connection_thread

if TYPE_CHECKING:
    import aiosqlite
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata

    from triage.faults import FaultInjector

T = TypeVar("T")
INTERRUPT = "__interrupt__"
"""The reserved channel LangGraph saves a paused task's interrupt to (its own constant is private since 1.0)."""
ERROR = "__error__"
"""The reserved channel LangGraph saves a failed task's error to."""
_TASK_KEYS = ("__pregel_checkpointer", "__pregel_durability", "__pregel_task_id", "checkpoint_ns", "checkpoint_map")
"""The keys of a running task's `configurable` that name its loop's saver, the run's durability, the task, its
namespace and the checkpoint its step began from (private in LangGraph, like `INTERRUPT`;
`tests/integration/test_customer_memory.py` checks that kept work still runs)."""
Work = Callable[[sqlite3.Connection], None]
"""Statements on the connection, inside the transaction that saves a task's result: they must not commit or roll
back (`SqliteSaver.before_task_saved`)."""
_COLUMNS = "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata FROM checkpoints"
BATCH_TYPE = "triage-writes"
"""The `type` of a writes row that holds a task's writes together: a msgpack list of [channel, type, value]."""
BATCH_CHANNEL = "triage:writes"
"""The `channel` of such a row: not reserved (`__...`), so it goes with the other writes its checkpoint absorbed."""
NULL_TASK_ID = "00000000-0000-0000-0000-000000000000"
"""LangGraph's task id for writes no task made (a state update, a resume); it saves them again, with each new one
appended, expecting the earlier rows to stay as they are (its own constant is private)."""
LIST_PAGE = 50
"""Checkpoints `alist` reads (with their pending writes) in each hop to the connection's thread."""
WRITE_ATTEMPTS = 4
"""Tries of one checkpoint write while the database is busy (with exponential backoff from 50 ms)."""


@dataclass
class RunRecord:
    """What one run saved for its thread's top graph, as the saver saved it (`RunRecorder.recording`)."""

    config: RunnableConfig | None = None
    """The newest checkpoint's config (with its id), once one was saved."""
    parent_config: RunnableConfig | None = None
    """Its parent's (thread, namespace and checkpoint id only), or None for a thread's first."""
    checkpoint: Checkpoint | None = None
    """The newest checkpoint itself: the live values, not read back from the store."""
    metadata: CheckpointMetadata | None = None
    """As the run's loop made it (the store adds the run's config metadata to what it keeps)."""
    interrupted: bool = False
    """A task of the thread (at any depth) saved an interrupt: the run paused."""
    shared: bool = False
    """Another run recorded the same thread at the same time: the newest checkpoint may be either's."""


class RunRecorder(BaseCheckpointSaver[Any]):
    """A saver that remembers, for a run the app is waiting on, the newest checkpoint it saved for the thread.

    When a run returns, the app reports its result from the thread's newest checkpoint. Reading it back from the
    store took a hop to the store's thread, the checkpoint's deserialisation and LangGraph's snapshot of its next
    tasks: about 0.6 ms, 2% of a ticket's CPU. A run that returned without raising and saved no interrupt has no
    next task, so the checkpoint it saved last is its state (`TriageApp._drive` checks the rest and falls back to
    reading the store).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._records: dict[str, list[RunRecord]] = {}

    @contextmanager
    def recording(self, thread_id: str) -> Iterator[RunRecord]:
        """Record what is saved for `thread_id` until the block ends."""
        record = RunRecord()
        records = self._records.setdefault(thread_id, [])
        if records:  # runs of one thread at once: no record can tell whose checkpoint came last
            for other in (*records, record):
                other.shared = True
        records.append(record)
        try:
            yield record
        finally:
            records.remove(record)
            if not records:
                del self._records[thread_id]

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Save the checkpoint; a recorded run's top-graph checkpoint is remembered once it is saved."""
        saved = await super().aput(config, checkpoint, metadata, new_versions)
        configurable = config["configurable"]
        records = self._records.get(str(configurable["thread_id"]), ())
        if records and not configurable.get("checkpoint_ns"):
            parent_id = configurable.get("checkpoint_id")
            parent = {**saved["configurable"], "checkpoint_id": parent_id}
            for record in records:
                record.config, record.parent_config = saved, {"configurable": parent} if parent_id else None
                record.checkpoint, record.metadata = checkpoint, metadata
        return saved

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Save a task's writes; a recorded run's interrupt (at any depth) is noted first."""
        records = self._records.get(str(config["configurable"]["thread_id"]), ())
        if records and any(channel == INTERRUPT for channel, _ in writes):
            for record in records:
                record.interrupted = True
        await super().aput_writes(config, writes, task_id, task_path)


@dataclass
class _Kept:
    """Work `SqliteSaver.before_task_saved` keeps for a task, and whether it is done.

    `done` is set on the connection's thread, where the hops that may do the work run one after the other, once the
    transaction that did it has committed.
    """

    work: Work
    done: bool = False


def _saved_with(conn: sqlite3.Connection, kept: Sequence[_Kept], save: Callable[[sqlite3.Connection], None]) -> None:
    """One transaction: the kept work not done yet, then `save`'s statements, then COMMIT (the work then done).

    With work to do, the transaction begins before it, holding the write lock: the work's reads are in it too, with
    no other writer's commit between them and the COMMIT. On any error it is rolled back before the hop ends, so no
    later use of the connection can commit any of it.
    """
    due = [item for item in kept if not item.done]
    try:
        if due and not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        for item in due:
            item.work(conn)
        save(conn)
        conn.commit()
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    for item in due:
        item.done = True


def _held(
    save: Callable[[sqlite3.Connection], None], hold: tuple[str, str] | None
) -> Callable[[sqlite3.Connection], None]:
    """`save`, and when its thread is held (`hold`: the thread and its holder), a check that it still is.

    The check reads the lease after `save`'s statements, in their transaction: the transaction then holds the
    file's write lock, so no other process can take the lease between the check and the COMMIT. A lease another
    holder took meanwhile raises `HoldLostError`, and `_saved_with` rolls the whole transaction back.
    """
    if hold is None:
        return save
    thread_id, holder = hold

    def save_while_held(conn: sqlite3.Connection) -> None:
        save(conn)
        row = conn.execute(LEASE_HOLDER_SQL, (thread_id,)).fetchone()
        if row is None or row[0] != holder:
            raise hold_lost(thread_id)

    return save_while_held


def _metadata_json(metadata: Any) -> bytes:
    """A checkpoint's metadata as the JSON the SQLite saver stores (`json_extract` filters read it), in one C call.

    `json.dumps` took about 27 us a checkpoint in a ticket's run, 0.15-0.3 ms a ticket (BENCHMARKS.md, thirty-first
    round); `orjson` writes the same values without the spaces. What `orjson` refuses (a lone surrogate, a key that
    is not a string, an integer beyond 64 bits) is written by `json.dumps` as before, lone surrogates dropped. Two
    kinds of value are kept otherwise than before: a NaN or an infinity is stored as null (JSON has neither), and a
    date, time or UUID as its ISO text (`json.dumps` refused the checkpoint).
    """
    try:
        return orjson.dumps(metadata)
    except orjson.JSONEncodeError:
        return json.dumps(metadata, ensure_ascii=False).encode("utf-8", "ignore")


def _batched(writes: Sequence[tuple[str, Any]], task_id: str) -> bool:
    """Whether a task's writes are saved as one row: several, all to state channels, from a task of the graph."""
    return len(writes) > 1 and task_id != NULL_TASK_ID and not any(channel.startswith("__") for channel, _ in writes)


def _expanded(rows: Sequence[Any]) -> list[Any]:
    """`pending_writes_sql` rows with each batch row replaced by the writes it holds, each at its own index."""
    if not any(row[2] == BATCH_TYPE for row in rows):
        return list(rows)
    expanded: list[Any] = []
    for task_id, channel, type_, value, task_path, idx in rows:
        if type_ != BATCH_TYPE:
            expanded.append((task_id, channel, type_, value, task_path, idx))
            continue
        for index, (held_channel, held_type, held_value) in enumerate(ormsgpack.unpackb(value)):
            expanded.append((task_id, held_channel, held_type, held_value, task_path, index))
    return expanded


def _step_of(config: RunnableConfig) -> tuple[str, str, str]:
    """The step whose writes or ending checkpoint `config` saves: thread, namespace, the checkpoint it began from."""
    configurable = config["configurable"]
    return (
        str(configurable["thread_id"]),
        str(configurable.get("checkpoint_ns", "")),
        str(configurable.get("checkpoint_id")),
    )


class SqliteSaver(AsyncSqliteSaver):
    """The SQLite saver's statements, each in one hop and retried while busy.

    `faults` injects failures into its writes (tests and demos). The process uses it as `CheckpointSaver`.
    """

    def __init__(self, conn: aiosqlite.Connection, *, faults: FaultInjector | None = None) -> None:
        super().__init__(conn)
        self.faults = faults
        self._kept: dict[tuple[str, str, str], dict[str, _Kept]] = {}
        """Work kept by `before_task_saved`: by thread, namespace and the checkpoint the task's step began from, then
        by task."""

    def before_task_saved(self, work: Work) -> bool:
        """Have `work` done in the transaction that saves the running graph task's result, before it, once.

        For a write a node makes last and needs no answer from (`finish` updating the customer's memory): the node
        returns without waiting for a hop of its own, and the work runs while LangGraph goes on with the step
        (0.1-0.2 ms of a ticket). It runs in the transaction that saves the task's writes; or, when that one failed
        first, in the one that saves the checkpoint ending the step (LangGraph saves that checkpoint without waiting
        for the writes, and a run recovered after a crash takes saved writes without running their task again). So
        the work is committed with the task's result and with nothing else: both are saved, or neither is and the
        step runs again (`triage recover`). `work` must not commit or roll back. Work of a task that failed or
        paused is dropped (its writes are then its error or its interrupt), and so is work whose step was never
        saved once the run ends.

        False, and nothing kept, when it cannot be so: no graph task is running, the graph runs on another saver, or
        with a durability other than "sync" (with "async" the previous step's checkpoint may still be on its way).
        """
        from langgraph.config import get_config

        try:
            configurable = get_config()["configurable"]
        except RuntimeError:  # not inside a graph's task
            return False
        saver, durability, task_id, namespace, began = (configurable.get(key) for key in _TASK_KEYS)
        if saver is not self or durability != "sync" or not task_id or not isinstance(namespace, str):
            return False
        step_namespace = namespace.rpartition("|")[0] if "|" in namespace else ""
        checkpoint_id = (began or {}).get(step_namespace)
        if not checkpoint_id:
            return False
        key = (str(configurable["thread_id"]), step_namespace, str(checkpoint_id))
        self._kept.setdefault(key, {})[str(task_id)] = _Kept(work)
        return True

    def drop_kept(self, thread_id: str) -> None:
        """Forget the work kept for the thread's tasks (a run ended: what is left belongs to steps never saved)."""
        for key in [key for key in self._kept if key[0] == thread_id]:
            del self._kept[key]

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Save a checkpoint and drop its parent's absorbed writes (one transaction), retrying while busy.

        Work `before_task_saved` kept for a task of the step that ends with it, and not yet done with the task's
        writes, is done first (for the checkpoint of a step: not for a run's input or a state update).
        """
        before: list[_Kept] = []
        if self._kept and metadata.get("source") == "loop":  # a step's checkpoint (not an input, not an update)
            step = _step_of(config)
            before = list(self._kept.pop(step, {}).values())
            for stale in [key for key in self._kept if key[:2] == step[:2]]:
                del self._kept[stale]  # kept by tasks of an earlier step that was never saved
        hold = held_in_context(config)
        return await self._write(lambda: self._put(config, checkpoint, metadata, before=before, hold=hold))

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Save a task's writes, after the work `before_task_saved` kept for the task, retrying while busy."""
        before: list[_Kept] = []
        if self._kept:
            step = _step_of(config)
            by_task = self._kept.get(step, {})
            if any(channel in (ERROR, INTERRUPT) for channel, _ in writes):
                by_task.pop(task_id, None)  # the task failed or paused: its result is not saved
                if not by_task:
                    self._kept.pop(step, None)
            before = [by_task[task_id]] if task_id in by_task else []
        hold = held_in_context(config)
        await self._write(lambda: self._put_writes(config, writes, task_id, task_path, before=before, hold=hold))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """A thread's checkpoint (the newest, or the one `config` names) with its pending writes, in one hop.

        AsyncSqliteSaver.aget_tuple's two statements, run together on the connection's thread instead of in six
        hops (cursor, execute, fetch, execute, fetch, close): every run reads the checkpoint when it starts, and
        the app reads the state again when it ends.
        """
        await self.setup()
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = configurable.get("checkpoint_ns", "")
        wanted = get_checkpoint_id(config)
        writes_sql = pending_writes_sql(self._has_task_path)

        def read(conn: sqlite3.Connection) -> tuple[Any, list[Any]] | None:
            if wanted:
                cursor = conn.execute(
                    f"SELECT {_COLUMNS} WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                    (thread_id, checkpoint_ns, wanted),
                )
            else:
                cursor = conn.execute(
                    f"SELECT {_COLUMNS} WHERE thread_id = ? AND checkpoint_ns = ? ORDER BY checkpoint_id DESC LIMIT 1",
                    (thread_id, checkpoint_ns),
                )
            row = cursor.fetchone()
            return None if row is None else (row, conn.execute(writes_sql, row[:3]).fetchall())

        async with self.lock:
            found = await on_connection_thread(self.conn, read)
        return None if found is None else self._tuple(*found)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints, newest first, as AsyncSqliteSaver.alist lists them, read `LIST_PAGE` at a time per hop.

        The stock saver takes about three hops a checkpoint (the next row, the writes query, their fetch); a thread's
        timeline (`triage show`, the eval) reads every checkpoint of the thread.
        """
        await self.setup()
        where, params = search_where(config, filter, before)
        query = f"SELECT {_COLUMNS} {where} ORDER BY checkpoint_id DESC"
        if limit is not None:
            query += " LIMIT ?"
            params = (*params, limit)
        writes_sql = pending_writes_sql(self._has_task_path)
        rows: sqlite3.Cursor | None = None

        def page(conn: sqlite3.Connection) -> list[tuple[Any, list[Any]]]:
            nonlocal rows
            if rows is None:
                rows = conn.execute(query, params)
            return [(row, conn.execute(writes_sql, row[:3]).fetchall()) for row in rows.fetchmany(LIST_PAGE)]

        async with self.lock:
            try:
                while True:
                    found = await on_connection_thread(self.conn, page)
                    for row, writes in found:
                        yield self._tuple(row, writes)
                    if len(found) < LIST_PAGE:
                        break
            finally:
                if rows is not None:
                    opened = rows
                    await on_connection_thread(self.conn, lambda conn: opened.close())

    def _tuple(self, row: Sequence[Any], writes: list[Any]) -> CheckpointTuple:
        """A checkpoint row (`_COLUMNS`) and its pending writes as the tuple LangGraph's savers return."""
        thread_id, checkpoint_ns, checkpoint_id, parent_id, type_, checkpoint, metadata = row
        here = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}
        return CheckpointTuple(
            {"configurable": {**here, "checkpoint_id": checkpoint_id}},
            self.serde.loads_typed((type_, checkpoint)),
            json.loads(metadata) if metadata is not None else {},
            {"configurable": {**here, "checkpoint_id": parent_id}} if parent_id else None,
            load_pending_writes(_expanded(writes), self.serde),
        )

    def get_next_version(self, current: str | int | None, channel: None) -> Any:
        """The next version of a channel: an integer, or the SQLite saver's string in a thread begun with those."""
        if isinstance(current, str):
            return AsyncSqliteSaver.get_next_version(self, current, channel)
        return 1 if current is None else current + 1

    async def _put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        *,
        before: Sequence[_Kept],
        hold: tuple[str, str] | None = None,
    ) -> RunnableConfig:
        # AsyncSqliteSaver.aput's statement, plus the delete, committed together: a crash leaves either the parent
        # with its writes or the successor that absorbed them, never the parent without them. The kept work not done
        # yet is done first (`_saved_with`).
        await self.setup()
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        checkpoint_ns = configurable["checkpoint_ns"]
        parent_id = configurable.get("checkpoint_id")
        type_, serialized = self.serde.dumps_typed(checkpoint)
        serialized_metadata = _metadata_json(get_checkpoint_metadata(config, metadata))
        row = (str(thread_id), checkpoint_ns, checkpoint["id"], parent_id, type_, serialized, serialized_metadata)

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                "type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            if parent_id is not None:
                conn.execute(
                    "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? "
                    "AND substr(channel, 1, 2) != '__'",
                    (str(thread_id), checkpoint_ns, parent_id),
                )

        async with self.lock:
            await on_connection_thread(self.conn, lambda conn: _saved_with(conn, before, _held(put, hold)), writes=True)
        return {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint["id"]}
        }

    async def _put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
        *,
        before: Sequence[_Kept] = (),
        hold: tuple[str, str] | None = None,
    ) -> None:
        # AsyncSqliteSaver.aput_writes's statement, in one hop to the connection's thread instead of four, after the
        # kept work not done yet (`_saved_with`).
        await self.setup()
        configurable = config["configurable"]
        verb = "REPLACE" if all(channel in WRITES_IDX_MAP for channel, _ in writes) else "IGNORE"
        where = (str(configurable["thread_id"]), str(configurable["checkpoint_ns"]), str(configurable["checkpoint_id"]))
        if _batched(writes, task_id):
            packed = ormsgpack.packb([[channel, *self.serde.dumps_typed(value)] for channel, value in writes])
            rows = [(*where, task_id, task_path, 0, BATCH_CHANNEL, BATCH_TYPE, packed)]
        else:
            rows = [
                (*where, task_id, task_path, WRITES_IDX_MAP.get(channel, idx), channel, *self.serde.dumps_typed(value))
                for idx, (channel, value) in enumerate(writes)
            ]

        def put(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"INSERT OR {verb} INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, "
                "channel, type, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        async with self.lock:
            await on_connection_thread(self.conn, lambda conn: _saved_with(conn, before, _held(put, hold)), writes=True)

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


class CheckpointSaver(RunRecorder, SqliteSaver):
    """The process's one checkpoint saver on SQLite: `SqliteSaver`, remembering what a run saved (`RunRecorder`)."""

    @contextmanager
    def recording(self, thread_id: str) -> Iterator[RunRecord]:
        """`RunRecorder.recording`; when the thread's last recorded run ends, its kept work left is dropped."""
        try:
            with super().recording(thread_id) as record:
                yield record
        finally:
            if thread_id not in self._records:
                self.drop_kept(thread_id)
