"""LangGraph's async SQLite store, with each batch of operations run in one hop to the connection's thread.

`AsyncSqliteStore.abatch` awaits every statement, fetch and cursor on its own (about four hops for reading one
customer's memory); here the same batch runs as LangGraph's own synchronous `SqliteStore.batch`, on the sqlite3
connection behind the aiosqlite one, in one hop (`triage.storefiles.on_connection_thread`). The SQL and the results
are LangGraph's in both; a store with a vector index or TTLs (triage configures neither) keeps the async path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from langgraph.store.base import Op, Result
from langgraph.store.sqlite import SqliteStore
from langgraph.store.sqlite.aio import AsyncSqliteStore

from triage.storefiles import on_connection_thread


class OneHopSqliteStore(AsyncSqliteStore):
    """`AsyncSqliteStore` whose batches run as `SqliteStore.batch` on the connection's own thread, in one hop."""

    _sync: SqliteStore | None = None

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Run the operations in one transaction, as `SqliteStore.batch` does, on the connection's thread."""
        if self.index_config or self.ttl_config:
            return await super().abatch(ops)
        if not self.is_setup:
            await self.setup()
        batch = list(ops)

        def run(conn: sqlite3.Connection) -> list[Result]:
            if self._sync is None:  # built on this thread: it registers a function on the connection
                self._sync = SqliteStore(conn, deserializer=self._deserializer)
                self._sync.is_setup = True  # the async store's setup ran the same migrations on this file
            return self._sync.batch(batch)

        async with self.lock:
            return await on_connection_thread(self.conn, run)
