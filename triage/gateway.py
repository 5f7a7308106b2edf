"""The one place tools are called: checks the caller's grant, injects the call context, classifies errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import ValidationError

from triage.errors import PermanentToolError, ScopeDeniedError, TransientToolError
from triage.helpdesk import Helpdesk
from triage.helpdesk.store import is_transient
from triage.policies.bundle import Permissions
from triage.tools import ALL_TOOLS, ToolContext, tool_scope
from triage.tools.base import idempotency_key, invoke_tool, utc_now


class GrantError(ValueError):
    """A graph was built with a node that uses a tool outside its grant."""


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


@dataclass
class ToolGateway:
    """Calls tools on behalf of graph nodes, deny by default."""

    helpdesk: Helpdesk
    permissions: Permissions
    tools: Mapping[str, BaseTool] = field(default_factory=lambda: ALL_TOOLS)

    async def call(self, caller: str, tool_name: str, args: Mapping[str, Any], *, thread_id: str) -> Any:
        """Call `tool_name` with `args` as node `caller` in thread `thread_id`.

        Raises:
            ScopeDeniedError: the caller is not granted the tool's scope; the tool did nothing and the refusal is
                recorded in the `policy_violations` table.
            TransientToolError: a failure worth retrying (the database is busy).
            PermanentToolError: bad arguments, a missing row, a violated constraint.
        """
        made = self.tools.get(tool_name)
        if made is None:
            raise PermanentToolError(tool_name, "no such tool")
        scope = tool_scope(made)
        if not self.permissions.allows(caller, scope):
            await self._record_violation(thread_id, caller, tool_name, scope)
            raise ScopeDeniedError(tool_name, caller, scope)
        ctx = ToolContext(
            helpdesk=self.helpdesk,
            thread_id=thread_id,
            caller=caller,
            idempotency_key=idempotency_key(thread_id, caller, tool_name, args),
        )
        try:
            return await invoke_tool(made, args, ctx)
        except ValidationError as exc:
            raise PermanentToolError(tool_name, f"invalid arguments: {exc.errors()[0]['msg']}") from exc
        except sqlite3.OperationalError as exc:
            if is_transient(exc):
                raise TransientToolError(tool_name, str(exc)) from exc
            raise PermanentToolError(tool_name, str(exc)) from exc
        except sqlite3.IntegrityError as exc:
            raise PermanentToolError(tool_name, str(exc)) from exc

    async def _record_violation(self, thread_id: str, node: str, tool: str, scope: str) -> None:
        """Write the refused call to the audit table; the refused tool itself did no I/O."""
        async with self.helpdesk.transaction() as conn:
            await conn.execute(
                "INSERT INTO policy_violations (thread_id, node, tool, scope, created_at) VALUES (?, ?, ?, ?, ?)",
                (thread_id, node, tool, scope, utc_now()),
            )
