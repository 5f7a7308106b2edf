"""The one place tools are called: checks the caller's grant, injects the call context, classifies errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import ValidationError

from triage.errors import PermanentToolError, PolicyFileError, ScopeDeniedError, TransientToolError
from triage.faults import FaultInjector
from triage.helpdesk import Helpdesk
from triage.helpdesk.store import is_transient
from triage.policies.bundle import Permissions
from triage.tools import ALL_TOOLS, ToolContext, tool_scope
from triage.tools.base import insert_row_once, invoke_tool, utc_now


class GrantError(PolicyFileError):
    """A graph was built with a node that uses a tool outside its grant; the message names the node, tool and scope."""


def check_grants(node: str, tool_names: Iterable[str], permissions: Permissions) -> None:
    """Fail at build time when `node` declares a tool its grant does not cover."""
    for name in tool_names:
        if name not in ALL_TOOLS:
            raise GrantError(f"node {node!r} declares unknown tool {name!r}; known: {', '.join(sorted(ALL_TOOLS))}")
        scope = tool_scope(ALL_TOOLS[name])
        if not permissions.allows(node, scope):
            raise GrantError(
                f"node {node!r} uses tool {name!r} which needs scope {scope!r}, not granted to {node!r} in "
                "permissions.toml; grant the scope or remove the tool from the node"
            )


def is_read_scope(scope: str) -> bool:
    """Whether a scope only reads (`payments:read`); every other verb writes, requests, executes or sends."""
    return scope.endswith(":read")


def over_broad_grants(permissions: Permissions, node_tools: Mapping[str, Iterable[str]]) -> list[str]:
    """Warnings for grants wider than the graph needs (`node_tools` maps every node of the graph to its tools).

    Warned: a write scope given to a node whose tools only read (or that has none), and a grant to a name that is
    not a node of the graph.
    """
    warnings = []
    for node, scopes in sorted(permissions.grants.items()):
        if node not in node_tools:
            warnings.append(
                f"permissions.toml grants {', '.join(sorted(scopes))} to {node!r}, which is not a node of the graph "
                f"(nodes: {', '.join(sorted(node_tools))}); remove the grant or fix the name"
            )
            continue
        needed = {tool_scope(ALL_TOOLS[name]) for name in node_tools[node] if name in ALL_TOOLS}
        if all(is_read_scope(scope) for scope in needed):
            for scope in sorted(s for s in scopes if not is_read_scope(s)):
                warnings.append(
                    f"permissions.toml gives the read-only node {node!r} the write scope {scope!r}, which none of "
                    "its tools needs; remove it"
                )
    return warnings


@dataclass
class ToolGateway:
    """Calls tools on behalf of graph nodes, deny by default."""

    helpdesk: Helpdesk
    permissions: Permissions
    tools: Mapping[str, BaseTool] = field(default_factory=lambda: ALL_TOOLS)
    faults: FaultInjector | None = None
    """Injected faults (tests and demos): each call may fail or slow down as the plan draws."""

    async def call(
        self,
        caller: str,
        tool_name: str,
        args: Mapping[str, Any],
        *,
        thread_id: str,
        idempotency_key: str | None = None,
        offered: Collection[str] | None = None,
    ) -> Any:
        """Call `tool_name` with `args` as node `caller` in thread `thread_id`.

        `idempotency_key` names the effect when the caller knows better than its arguments (an approved effect is
        keyed by its approval); by default it is derived from the thread, caller, tool and arguments. `offered`
        narrows the caller's grant to these tools (a model-driven step offered a few of its node's tools): any other
        tool is refused like an ungranted one.

        Raises:
            ScopeDeniedError: the caller is not granted the tool's scope (or was not offered the tool); the tool did
                nothing and the refusal is recorded in the `policy_violations` table.
            TransientToolError: a failure worth retrying (the database is busy).
            PermanentToolError: bad arguments, a missing row, a violated constraint.
        """
        made = self.tools.get(tool_name)
        if made is None:
            raise PermanentToolError(tool_name, "no such tool")
        scope = tool_scope(made)
        ctx = ToolContext(self.helpdesk, thread_id, caller, tool_name, args, given_key=idempotency_key)
        if not self.permissions.allows(caller, scope) or (offered is not None and tool_name not in offered):
            await self._record_violation(thread_id, caller, tool_name, scope, ctx.idempotency_key)
            raise ScopeDeniedError(tool_name, caller, scope)
        try:
            if self.faults is not None:
                return await self.faults.around_tool(tool_name, lambda: invoke_tool(made, args, ctx))
            return await invoke_tool(made, args, ctx)
        except ValidationError as exc:
            raise PermanentToolError(tool_name, f"invalid arguments: {exc.errors()[0]['msg']}") from exc
        except sqlite3.OperationalError as exc:
            if is_transient(exc):
                raise TransientToolError(tool_name, str(exc)) from exc
            raise PermanentToolError(tool_name, str(exc)) from exc
        except sqlite3.IntegrityError as exc:
            raise PermanentToolError(tool_name, str(exc)) from exc

    async def _record_violation(self, thread_id: str, node: str, tool: str, scope: str, key: str) -> None:
        """Write the refused call to the audit table, once per call's key; the refused tool itself did no I/O."""
        row = {"thread_id": thread_id, "node": node, "tool": tool, "scope": scope, "created_at": utc_now()}
        await self.helpdesk.write(lambda db: insert_row_once(db, "policy_violations", {**row, "idempotency_key": key}))
