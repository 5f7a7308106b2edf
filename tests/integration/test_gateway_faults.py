"""The gateway classifies what a tool's failure means (retry, give up) and passes the call context on; faults are
injected by tools that fail the way SQLite does."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.tools import InjectedToolArg
from pydantic import BaseModel

from tests.conftest import rows
from triage.errors import PermanentToolError, ScopeDeniedError, TransientToolError
from triage.gateway import GrantError, ToolGateway, check_grants
from triage.helpdesk import Helpdesk
from triage.policies import load_policy_bundle
from triage.tools import ALL_TOOLS, ToolContext
from triage.tools.base import helpdesk_tool, idempotency_key

PERMISSIONS = load_policy_bundle().permissions


class FaultArgs(BaseModel):
    """What the fault tool is told to raise."""

    fault: str


@helpdesk_tool(scope="kb:read", args_schema=FaultArgs)
async def faulty(fault: str, ctx: Annotated[ToolContext, InjectedToolArg]) -> dict[str, Any]:
    """Raise the named database error, or return the call context it was given."""
    if fault == "locked":
        raise sqlite3.OperationalError("database is locked")
    if fault == "busy":
        raise sqlite3.OperationalError("database table is BUSY")
    if fault == "no such table":
        raise sqlite3.OperationalError("no such table: nope")
    if fault == "integrity":
        raise sqlite3.IntegrityError("UNIQUE constraint failed: refunds.id")
    return {"thread_id": ctx.thread_id, "caller": ctx.caller, "key": ctx.idempotency_key, "same": ctx.helpdesk}


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[ToolGateway]:
    helpdesk = await Helpdesk.open(tmp_path / "helpdesk.sqlite")
    yield ToolGateway(helpdesk=helpdesk, permissions=PERMISSIONS, tools={**ALL_TOOLS, "faulty": faulty})
    await helpdesk.close()


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("locked", TransientToolError, "faulty: database is locked"),
        ("busy", TransientToolError, "faulty: database table is BUSY"),
        ("no such table", PermanentToolError, "faulty: no such table: nope"),
        ("integrity", PermanentToolError, "faulty: UNIQUE constraint failed: refunds.id"),
    ],
)
async def test_database_failures_are_classified(
    gateway: ToolGateway, fault: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        await gateway.call("general", "faulty", {"fault": fault}, thread_id="thr_f")
    assert type(caught.value) is error
    assert str(caught.value) == message
    assert isinstance(caught.value.__cause__, sqlite3.Error)


async def test_tool_gets_the_call_context(gateway: ToolGateway) -> None:
    got = await gateway.call("technical", "faulty", {"fault": "none"}, thread_id="thr_c")
    assert got == {
        "thread_id": "thr_c",
        "caller": "technical",
        "key": idempotency_key("thr_c", "technical", "faulty", {"fault": "none"}),
        "same": gateway.helpdesk,
    }


async def test_bad_arguments_and_unknown_tools_are_permanent(gateway: ToolGateway) -> None:
    with pytest.raises(PermanentToolError) as caught:
        await gateway.call("general", "faulty", {"fault": 3}, thread_id="t")
    assert str(caught.value) == "faulty: invalid arguments: Input should be a valid string"
    with pytest.raises(PermanentToolError) as unknown:
        await gateway.call("general", "no_such_tool", {}, thread_id="t")
    assert str(unknown.value) == "no_such_tool: no such tool"


async def test_refusal_is_recorded_with_the_scope(gateway: ToolGateway, tmp_path: Path) -> None:
    with pytest.raises(ScopeDeniedError):
        await gateway.call("classify", "faulty", {"fault": "locked"}, thread_id="thr_r")
    [violation] = rows(
        tmp_path / "helpdesk.sqlite", "SELECT thread_id, node, tool, scope, created_at FROM policy_violations"
    )
    assert {k: violation[k] for k in ("thread_id", "node", "tool", "scope")} == {
        "thread_id": "thr_r",
        "node": "classify",
        "tool": "faulty",
        "scope": "kb:read",
    }
    assert violation["created_at"].startswith("20")


def test_check_grants_messages() -> None:
    check_grants("billing", ["list_payments", "request_refund"], PERMISSIONS)  # granted: no error
    check_grants("classify", [], PERMISSIONS)
    with pytest.raises(GrantError) as unknown:
        check_grants("billing", ["list_payments", "teleport"], PERMISSIONS)
    assert str(unknown.value).startswith("node 'billing' declares unknown tool 'teleport'; known: ")
    assert ", ".join(sorted(ALL_TOOLS)) in str(unknown.value)
    with pytest.raises(GrantError) as refused:
        check_grants("general", ["search_kb", "issue_refund"], PERMISSIONS)
    assert str(refused.value) == (
        "node 'general' uses tool 'issue_refund' which needs scope 'refunds:write', not granted to 'general' in "
        "permissions.toml; grant the scope or remove the tool from the node"
    )
