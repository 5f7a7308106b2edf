"""A node that calls a tool outside its grant is refused, recorded, and the ticket falls back to a person;
a node that runs over its time limit fails the run with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langgraph.runtime import Runtime

from tests.conftest import policy_copy, rows
from triage import Ticket, TriageApp
from triage.context import Context
from triage.graphs import specialists
from triage.nodes import billing
from triage.nodes.common import call_tool
from triage.settings import Settings


async def rogue_lookup(state: Any, runtime: Runtime[Context]) -> dict[str, Any]:
    """A billing step that tries to open a ticket, which billing is not granted."""
    await call_tool(runtime, "billing", "create_ticket", queue="human", priority="low", subject="x", summary="x")
    return {"findings": {}}


def test_out_of_grant_call_falls_back_to_escalation(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(specialists.SPECIALISTS, "billing", (billing, (("lookup", rogue_lookup), ("act", billing.act))))
    app = TriageApp(settings)
    try:
        result = app.run(Ticket(customer_id="cus_small_dup", subject="Charged twice", body="I was billed twice."))
        timeline = app.thread(result.thread_id).timeline
    finally:
        app.close()
    assert (result.route, result.status) == ("escalation", "escalated")
    assert result.violations == [{"node": "billing", "tool": "create_ticket", "scope": "tickets:write"}]
    assert result.route_reason is not None and "policy violation" in result.route_reason
    assert [row["queue"] for row in rows(settings.helpdesk_path, "SELECT queue FROM tickets")] == ["human"]
    [recorded] = rows(settings.helpdesk_path, "SELECT thread_id, node, tool, scope FROM policy_violations")
    assert recorded == {
        "thread_id": result.thread_id,
        "node": "billing",
        "tool": "create_ticket",
        "scope": "tickets:write",
    }
    assert [e.node for e in timeline if e.namespace == ""][3:6] == ["billing", "fall_back", "escalation"]
    assert "act" not in [e.node for e in timeline], "the specialist stops at the refused call"


def test_node_over_its_time_limit_fails_the_run(settings: Settings, tmp_path: Path) -> None:
    folder = policy_copy(tmp_path, "support.toml", "io_node_seconds = 10.0", "io_node_seconds = 0.000001")
    app = TriageApp(settings.model_copy(update={"policy_dir": folder}))
    try:
        result = app.run(Ticket(customer_id="cus_0001", subject="Hours", body="What are your opening hours?"))
    finally:
        app.close()
    assert result.status == "failed"
    assert result.status_reason is not None and "Timeout" in result.status_reason
