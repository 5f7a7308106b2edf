"""Per-customer memory across conversations, in LangGraph's `BaseStore`.

One item per customer, namespace `("customers", <customer_id>)`, key `memory`: the requests they have open, the
outcomes of their recent turns, a short summary and their preferences (the language they write in). `finish` writes
it at the end of every turn (through `runtime.store`), specialists read it when they hand a ticket to people, `triage
show` shows it, retention forgets the threads it prunes, and an executed account deletion deletes it.

On SQLite it lives in the checkpoint store (LangGraph's `AsyncSqliteStore`, each batch in one hop, on the saver's own
connection and lock: one connection per process and file); on PostgreSQL it is LangGraph's `AsyncPostgresStore` on
the saver's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from langgraph.store.base import BaseStore

if TYPE_CHECKING:
    from triage.checkpoints import SqliteSaver

SETUP_ATTEMPTS = 5
"""Tries of the memory store's setup when processes opening one new home at once race on its migrations."""
NAMESPACE = "customers"
KEY = "memory"
RECENT_TURNS = 10
"""Outcomes of a customer's latest turns kept in their memory."""
OPEN_REQUESTS = 20
"""Open requests kept in a customer's memory (the newest)."""


def namespace(customer_id: str) -> tuple[str, str]:
    """The store namespace of one customer's memory."""
    return (NAMESPACE, customer_id)


async def open_sqlite_memory(saver: SqliteSaver) -> BaseStore:
    """LangGraph's SQLite store on the checkpoint saver's connection, serialised by the saver's lock."""
    from triage.stores.sqlite_memory import OneHopSqliteStore

    store = OneHopSqliteStore(saver.conn)
    store.lock = saver.lock  # one connection, one lock: store transactions never interleave with the saver's
    store.saver = saver
    for attempt in range(SETUP_ATTEMPTS - 1):
        try:
            await store.setup()
            return store
        except sqlite3.IntegrityError:
            # Another process recorded the same migration first (LangGraph's setup reads the version, then inserts
            # it, outside one transaction): read the version again and go on from there.
            await asyncio.sleep(0.05 * (attempt + 1))
    await store.setup()  # the last try: its error is the caller's
    return store


async def open_postgres_memory(pool: Any) -> BaseStore:
    """LangGraph's PostgreSQL store on the saver's pool (autocommit, dict rows); the caller runs `setup`."""
    from langgraph.store.postgres.aio import AsyncPostgresStore

    return AsyncPostgresStore(pool)


async def close_memory(store: BaseStore) -> None:
    """Stop the store's batching task (LangGraph's async stores start one and leave it running past their loop)."""
    task = getattr(store, "_task", None)
    if isinstance(task, asyncio.Task) and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def update_memory(
    store: BaseStore, customer_id: str, update: Callable[[dict[str, Any] | None], dict[str, Any]]
) -> None:
    """Write a customer's memory as `update` makes it from what is remembered (None: nothing).

    For the end of a graph step. On SQLite, inside a task of a graph on the store's saver, it is written in the
    transaction that saves the task's result, and the node does not wait for it (`OneHopSqliteStore.update_with_step`);
    otherwise in one hop, synced to disk with the step's checkpoint (`OneHopSqliteStore.aupdate`). Elsewhere read,
    then written.
    """
    from triage.stores.sqlite_memory import OneHopSqliteStore

    if isinstance(store, OneHopSqliteStore):
        if not store.update_with_step(namespace(customer_id), KEY, update):
            await store.aupdate(namespace(customer_id), KEY, update)
        return
    await store.aput(namespace(customer_id), KEY, update(await read_memory(store, customer_id)))


async def read_memory(store: BaseStore | None, customer_id: str | None) -> dict[str, Any] | None:
    """A customer's memory, or None (no store, anonymous, or nothing remembered)."""
    if store is None or not customer_id:
        return None
    item = await store.aget(namespace(customer_id), KEY)
    return dict(item.value) if item is not None else None


def updated_memory(
    previous: Mapping[str, Any] | None,
    *,
    customer_id: str,
    thread_id: str,
    turn: Mapping[str, Any],
    language: str | None,
    filed: Sequence[str],
    closed: Iterable[str],
    at: datetime | None = None,
) -> dict[str, Any]:
    """A customer's memory once a turn has ended (pure: the caller reads and writes the store).

    `filed` are the requests the turn opened, `closed` those it carried out or declined.
    """
    memory = dict(previous or {})
    when = (at or datetime.now(UTC)).isoformat(timespec="seconds")
    done = set(closed)
    open_requests = [r for r in memory.get("open_requests", []) if r["id"] not in done]
    known = {r["id"] for r in open_requests}
    open_requests += [{"id": r, "thread_id": thread_id, "at": when} for r in filed if r not in done | known]
    recent = [o for o in memory.get("recent", []) if not (o["thread_id"] == thread_id and o["turn"] == turn["turn"])]
    recent.append(
        {
            "thread_id": thread_id,
            "turn": turn["turn"],
            "route": turn.get("route"),
            "intent": turn.get("intent"),
            "status": turn.get("status"),
            "reply_template": turn.get("reply_template"),
            "answered_with": turn.get("answered_with"),
            "at": when,
        }
    )
    preferences = dict(memory.get("preferences", {}))
    if language:
        preferences["language"] = language
    memory.update(
        customer_id=customer_id,
        open_requests=open_requests[-OPEN_REQUESTS:],
        recent=recent[-RECENT_TURNS:],
        preferences=preferences,
        updated_at=when,
    )
    memory["summary"] = summary_of(memory)
    return memory


def summary_of(memory: Mapping[str, Any]) -> str:
    """One or two sentences a person can read at a glance."""
    recent = memory.get("recent", [])
    threads = len({o["thread_id"] for o in recent})
    parts = [f"{len(recent)} recent turn(s) in {threads} conversation(s)"]
    if recent:
        last = recent[-1]
        parts.append(f"last: {last['route']}/{last['intent']} -> {last['status']} on {str(last['at'])[:10]}")
    opened = memory.get("open_requests", [])
    if opened:
        parts.append("open requests: " + ", ".join(r["id"] for r in opened[-5:]))
    language = memory.get("preferences", {}).get("language")
    if language:
        parts.append(f"writes in {language}")
    return "; ".join(parts) + "."


async def forget_customer(store: BaseStore | None, customer_id: str) -> None:
    """Delete everything remembered about a customer (an account deletion)."""
    if store is not None:
        await store.adelete(namespace(customer_id), KEY)


async def close_requests(store: BaseStore | None, customer_id: str, request_ids: Iterable[str]) -> bool:
    """Drop requests closed outside the customer's own turns (a release closing their tickets); whether it changed.

    Closing one already gone changes nothing, so a re-run is harmless.
    """
    done = set(request_ids)
    memory = await read_memory(store, customer_id)
    if store is None or memory is None or not done:
        return False
    opened = memory.get("open_requests", [])
    still = [r for r in opened if r["id"] not in done]
    if len(still) == len(opened):
        return False
    memory["open_requests"] = still
    memory["summary"] = summary_of(memory)
    await store.aput(namespace(customer_id), KEY, memory)
    return True


async def forget_threads(store: BaseStore | None, thread_ids: Iterable[str]) -> int:
    """Drop pruned threads from every customer's memory; a memory left with nothing is deleted. How many changed."""
    gone = set(thread_ids)
    if store is None or not gone:
        return 0
    changed = 0
    offset = 0
    while True:
        items = await store.asearch((NAMESPACE,), limit=100, offset=offset)
        if not items:
            return changed
        offset += len(items)
        for item in items:
            memory = dict(item.value)
            recent = [o for o in memory.get("recent", []) if o["thread_id"] not in gone]
            opened = [r for r in memory.get("open_requests", []) if r["thread_id"] not in gone]
            if (len(recent), len(opened)) == (len(memory.get("recent", [])), len(memory.get("open_requests", []))):
                continue
            changed += 1
            if not recent and not opened:
                await store.adelete(item.namespace, item.key)
                offset -= 1
            else:
                memory.update(recent=recent, open_requests=opened)
                memory["summary"] = summary_of(memory)
                await store.aput(item.namespace, item.key, memory)
