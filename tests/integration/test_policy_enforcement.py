"""A node that calls a tool outside its grant is refused, recorded, and the ticket falls back to a person;
a node that runs over its time limit fails the run with the reason."""

from __future__ import annotations

import sqlite3
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


def test_a_refused_call_whose_step_runs_again_is_recorded_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal is written, then the step's save is lost and `recover` runs it again: one row, keyed by the call."""
    from tests.conftest import store_fails_from_the_save_of
    from triage.errors import StoreUnavailableError

    monkeypatch.setitem(specialists.SPECIALISTS, "billing", (billing, (("lookup", rogue_lookup), ("act", billing.act))))
    app = TriageApp(settings)
    try:
        stop = store_fails_from_the_save_of(app, "violations")
        with pytest.raises(StoreUnavailableError) as raised:
            app.run(Ticket(customer_id="cus_small_dup", subject="Charged twice", body="I was billed twice."))
        assert stop(), "the refusal's step was not saved"
        assert len(rows(settings.helpdesk_path, "SELECT id FROM policy_violations")) == 1
        assert raised.value.thread_id is not None
        done = app.recover(raised.value.thread_id)
    finally:
        app.close()
    assert (done.route, done.status) == ("escalation", "escalated"), done.status_reason
    assert done.violations == [{"node": "billing", "tool": "create_ticket", "scope": "tickets:write"}]
    assert len(rows(settings.helpdesk_path, "SELECT id FROM policy_violations")) == 1


def helpdesk_from_before_the_violation_key(settings: Settings) -> sqlite3.Connection:
    """A used home whose helpdesk has `policy_violations` as it was before refused calls were keyed; a connection."""
    with TriageApp(settings) as app:
        app.run(Ticket(customer_id="cus_0001", subject="Hours", body="What are your opening hours?"))
    db = sqlite3.connect(settings.helpdesk_path)
    with db:
        db.execute("DROP INDEX one_violation_per_call")
        db.execute("ALTER TABLE policy_violations DROP COLUMN idempotency_key")
    return db


def test_a_helpdesk_from_before_the_violation_key_gets_the_column_and_keeps_its_rows(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helpdesk made before refused calls were keyed is brought up to date when opened: its rows stay, with no
    key, and the next refusal is recorded with one."""
    monkeypatch.setitem(specialists.SPECIALISTS, "billing", (billing, (("lookup", rogue_lookup), ("act", billing.act))))
    db = helpdesk_from_before_the_violation_key(settings)
    with db:
        db.execute(
            "INSERT INTO policy_violations (thread_id, node, tool, scope, created_at) "
            "VALUES ('thr_old', 'billing', 'create_ticket', 'tickets:write', '2026-01-01T00:00:00+00:00')"
        )
    db.close()
    with TriageApp(settings) as app:
        result = app.run(Ticket(customer_id="cus_small_dup", subject="Charged twice", body="I was billed twice."))
    recorded = rows(settings.helpdesk_path, "SELECT thread_id, idempotency_key FROM policy_violations ORDER BY id")
    assert [r["thread_id"] for r in recorded] == ["thr_old", result.thread_id]
    assert recorded[0]["idempotency_key"] is None and recorded[1]["idempotency_key"]


def test_two_openers_bringing_an_old_helpdesk_up_to_date_at_once_both_open(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both find the column missing before either adds it (as two processes started together would): the second
    ALTER finds it there, and neither open fails."""
    import asyncio

    import aiosqlite

    from triage.helpdesk.store import Helpdesk

    helpdesk_from_before_the_violation_key(settings).close()
    execute = aiosqlite.Connection.execute

    async def both() -> list[Any]:
        checked = asyncio.Barrier(2)

        def racing(self: aiosqlite.Connection, sql: str, *args: Any) -> Any:
            if not sql.startswith("ALTER TABLE"):
                return execute(self, sql, *args)

            async def after_both_checked() -> Any:
                await checked.wait()
                return await execute(self, sql, *args)

            return after_both_checked()

        monkeypatch.setattr(aiosqlite.Connection, "execute", racing)
        opening = (Helpdesk.open(settings.helpdesk_path) for _ in range(2))
        opened = await asyncio.gather(*opening, return_exceptions=True)
        for helpdesk in opened:
            if isinstance(helpdesk, Helpdesk):
                await helpdesk.close()
        return opened

    opened = asyncio.run(both())
    assert all(isinstance(helpdesk, Helpdesk) for helpdesk in opened), opened
