"""What every helpdesk tool shares: the injected call context, its declared scope, idempotent writes."""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite
from langchain_core.tools import BaseTool, tool
from pydantic import BaseModel

from triage.helpdesk import Helpdesk
from triage.storefiles import on_connection_thread

SCOPE_KEY = "scope"
COMPENSATION_KEY = "compensation"
IRREVERSIBLE_KEY = "irreversible"
READ_SCOPE_SUFFIX = ":read"
"""A tool whose scope ends so only reads; every other tool has an effect, and must say how it is undone."""


@dataclass(frozen=True)
class ToolContext:
    """Injected into every tool call by the gateway; never part of the schema a model sees."""

    helpdesk: Helpdesk
    thread_id: str
    caller: str
    tool: str
    args: Mapping[str, Any]
    """The call's arguments, as the caller gave them."""
    given_key: str | None = None
    """The key the caller named the effect by (an approved effect is keyed by its approval), if it named one."""

    @functools.cached_property
    def idempotency_key(self) -> str:
        """The key of the call's effect: the caller's, or one derived from the thread, caller, tool and arguments.

        Derived when first asked for: a tool with an effect asks, a read does not (its key would be thrown away).
        """
        return self.given_key or idempotency_key(self.thread_id, self.caller, self.tool, self.args)


def helpdesk_tool(
    *, scope: str, args_schema: type[BaseModel], compensation: str | None = None, irreversible: str | None = None
) -> Callable[[Callable[..., Any]], BaseTool]:
    """Declare a LangChain tool that needs `scope`; its function takes the fields of `args_schema` and `ctx`.

    A tool with an effect (any scope but `...:read`) declares how it is undone, exactly one of:
    `compensation`, the tool that undoes its effect (it takes `customer_id` and the effect's `receipt_id`): a step
    of a multi-step change may only be followed by others when it declares one; or `irreversible`, why no tool can
    undo it (a message may already be read: a correction is a new message). A read-only tool declares neither.

    Raises:
        TypeError: both are declared, or a read-only tool declares one.
    """
    if compensation is not None and irreversible is not None:
        raise TypeError("declare a compensation or why there is none (irreversible), not both")
    if scope.endswith(READ_SCOPE_SUFFIX) and (compensation is not None or irreversible is not None):
        raise TypeError(f"a read-only tool ({scope}) has no effect to undo: declare no compensation")

    def wrap(func: Callable[..., Any]) -> BaseTool:
        made = tool(args_schema=args_schema)(func)
        made.metadata = {SCOPE_KEY: scope, COMPENSATION_KEY: compensation, IRREVERSIBLE_KEY: irreversible}
        return made

    return wrap


async def invoke_tool(made: BaseTool, args: Mapping[str, Any], ctx: ToolContext) -> Any:
    """Validate `args` with the tool's `args_schema` and await its coroutine with `ctx` injected.

    The arguments the function receives are the ones LangChain's `ainvoke` would pass (the validated fields given
    in `args`, plus fields with a default), without its per-call callback and type-hint machinery. A tool that is
    not a coroutine with a pydantic schema goes through `ainvoke`.

    Raises:
        pydantic.ValidationError: `args` do not fit the schema.
    """
    schema = made.args_schema
    coroutine = getattr(made, "coroutine", None)
    if coroutine is None or not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return await made.ainvoke({**args, "ctx": ctx})
    validated = schema.model_validate(args)
    passed = validated.model_fields_set | _defaulted_fields(schema)
    return await coroutine(**{name: getattr(validated, name) for name in passed}, ctx=ctx)


@functools.cache
def _defaulted_fields(schema: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, field in schema.model_fields.items() if not field.is_required())


def tool_scope(made: BaseTool) -> str:
    """The scope a tool declared with `helpdesk_tool`."""
    scope = (made.metadata or {}).get(SCOPE_KEY)
    if not isinstance(scope, str):
        raise TypeError(f"tool {made.name!r} declares no scope; define it with helpdesk_tool(scope=...)")
    return scope


def compensation_of(made: BaseTool) -> str | None:
    """The tool that undoes `made`'s effect, as it declared with `helpdesk_tool(compensation=...)`, if any."""
    compensation = (made.metadata or {}).get(COMPENSATION_KEY)
    return compensation if isinstance(compensation, str) else None


def has_effect(made: BaseTool) -> bool:
    """Whether a tool changes something (its scope is not a `...:read` one)."""
    return not tool_scope(made).endswith(READ_SCOPE_SUFFIX)


def irreversible_reason(made: BaseTool) -> str | None:
    """Why no tool undoes `made`'s effect, as it declared with `helpdesk_tool(irreversible=...)`, if it did."""
    reason = (made.metadata or {}).get(IRREVERSIBLE_KEY)
    return reason if isinstance(reason, str) else None


def idempotency_key(thread_id: str, caller: str, tool_name: str, args: Mapping[str, Any]) -> str:
    """A key that is the same whenever the same node asks for the same effect in the same thread."""
    canonical = json.dumps(dict(args), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(f"{thread_id}|{caller}|{tool_name}|{canonical}".encode()).hexdigest()


def receipt_id(prefix: str, key: str) -> str:
    """A row id derived from the idempotency key, so a repeated write names the same row."""
    return f"{prefix}_{key[:16]}"


def utc_now() -> str:
    """The current time as ISO-8601 UTC text, the helpdesk's timestamp format."""
    return datetime.now(UTC).isoformat(timespec="seconds")


async def insert_once(conn: aiosqlite.Connection, table: str, row: Mapping[str, Any]) -> bool:
    """Insert `row` unless a row with its idempotency key exists; return whether it was inserted (one hop)."""
    return await on_connection_thread(conn, lambda db: insert_row_once(db, table, row))


def insert_row_once(db: sqlite3.Connection, table: str, row: Mapping[str, Any]) -> bool:
    """`insert_once` on the connection's own thread (inside `Helpdesk.write`'s work)."""
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    cursor = db.execute(
        f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT(idempotency_key) DO NOTHING",
        tuple(row.values()),
    )
    return cursor.rowcount == 1


async def fetch_all(conn: aiosqlite.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Run a query and return its rows as plain dicts (in one hop to the connection's thread)."""
    return await on_connection_thread(conn, lambda db: _dict_rows(db, sql, params))


async def fetch_together(
    conn: aiosqlite.Connection, queries: Mapping[str, tuple[str, tuple[Any, ...]]]
) -> dict[str, list[dict[str, Any]]]:
    """Run several queries (name: sql and parameters) in one read transaction and one hop: each name's rows.

    The rows are one consistent view of the helpdesk (no other writer's commit lands between two queries), and
    the queries cost one hand-off to the connection's thread instead of one each. Use it inside
    `Helpdesk.read()`, as `fetch_all`.
    """

    def read(db: sqlite3.Connection) -> dict[str, list[dict[str, Any]]]:
        opened = not db.in_transaction  # inside one already (left by a cancelled write): that one's view
        if opened:
            db.execute("BEGIN")
        try:
            return {name: _dict_rows(db, sql, params) for name, (sql, params) in queries.items()}
        finally:
            if opened:
                db.execute("COMMIT")

    return await on_connection_thread(conn, read)


def _dict_rows(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [dict(row) for row in db.execute(sql, params).fetchall()]


async def fetch_one(conn: aiosqlite.Connection, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
    """Run a query and return its first row as a dict, or None (in one hop to the connection's thread)."""

    def read(db: sqlite3.Connection) -> dict[str, Any] | None:
        row = db.execute(sql, params).fetchone()
        return None if row is None else dict(row)

    return await on_connection_thread(conn, read)
