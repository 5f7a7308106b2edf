"""Each exactly-once safeguard on its own: the effects ledger without the refund tool's idempotency key, and the
tool's key without the ledger. Either alone must keep a re-run executor from refunding twice.

The re-run is LangGraph's own replay: the approved thread is run again from the checkpoint just before `execute`,
which is what a process that died before `execute` checkpointed its result would do on recovery.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rows
from triage import TriageApp
from triage.context import Context
from triage.errors import PermanentToolError
from triage.gateway import ToolGateway
from triage.helpdesk import Helpdesk
from triage.journal import Journal
from triage.policies import load_policy_bundle
from triage.settings import Settings


def approved_refund(app: TriageApp) -> str:
    paused = app.run({"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "Charged twice for my order."})
    assert paused.status == "awaiting_approval"
    done = app.resume(paused.thread_id, {"approver": "alice", "decision": "approve"})
    assert done.status == "completed"
    return paused.thread_id


def replay_execute(app: TriageApp, thread_id: str) -> dict[str, Any]:
    """Run the thread again from the checkpoint whose next step is `execute`; return the final state."""

    async def replay() -> dict[str, Any]:
        engine = await app._get_engine()
        config = {"configurable": {"thread_id": thread_id}}
        history = [s async for s in engine.graph.aget_state_history(config)]
        [before] = [s for s in history if s.next == ("execute",)]
        context = Context(services=engine.services)
        await engine.graph.ainvoke(None, before.config, context=context, durability="sync")
        return dict((await engine.graph.aget_state(config)).values)

    return app._portal.call(replay())


def refund_rows(settings: Settings, thread_id: str) -> list[dict[str, Any]]:
    return rows(settings.helpdesk_path, "SELECT id, amount_cents FROM refunds WHERE thread_id = ?", (thread_id,))


def ledger_rows(settings: Settings, thread_id: str) -> list[dict[str, Any]]:
    return rows(
        settings.checkpoints_path, "SELECT idempotency_key, kind FROM effects_ledger WHERE thread_id = ?", (thread_id,)
    )


def refund_receipts(state: dict[str, Any]) -> list[str]:
    return [a["receipt_id"] for a in state["actions"] if a["kind"] == "refund"]


def fresh_tool_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the tool's safeguard away: every call gets a fresh idempotency key, so issue_refund would write again."""
    call = ToolGateway.call

    async def with_fresh_key(
        self: ToolGateway, caller: str, tool_name: str, args: Any, *, thread_id: str, idempotency_key: str | None = None
    ) -> Any:
        return await call(self, caller, tool_name, args, thread_id=thread_id, idempotency_key=uuid.uuid4().hex)

    monkeypatch.setattr(ToolGateway, "call", with_fresh_key)


def test_replayed_executor_refunds_once_with_both_safeguards(app: TriageApp, settings: Settings) -> None:
    thread = approved_refund(app)
    [refund] = refund_rows(settings, thread)
    state = replay_execute(app, thread)
    assert state["status"] == "completed"
    assert refund_rows(settings, thread) == [refund]
    assert refund_receipts(state)[-1] == refund["id"]
    # The refund's record names the ledger entry that guards it.
    [entry] = ledger_rows(settings, thread)
    recorded = [a["details"]["idempotency_key"] for a in state["actions"] if a["kind"] == "refund"]
    assert set(recorded) == {entry["idempotency_key"]}


def test_ledger_alone_prevents_a_second_refund(
    app: TriageApp, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread = approved_refund(app)
    [refund] = refund_rows(settings, thread)
    fresh_tool_keys(monkeypatch)
    state = replay_execute(app, thread)
    assert state["status"] == "completed", state.get("status_reason")
    assert refund_rows(settings, thread) == [refund]
    assert refund_receipts(state)[-1] == refund["id"]
    assert len(ledger_rows(settings, thread)) == 1


def test_tool_key_alone_prevents_a_second_refund(
    app: TriageApp, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread = approved_refund(app)
    [refund] = refund_rows(settings, thread)
    asked: list[str] = []

    async def forgetful_receipt(self: Journal, key: str) -> None:
        asked.append(key)
        return None  # the ledger lookup finds nothing: the executor calls the tool again

    monkeypatch.setattr(Journal, "receipt", forgetful_receipt)
    state = replay_execute(app, thread)
    assert asked, "the executor asks the ledger first"
    assert state["status"] == "completed", state.get("status_reason")
    assert refund_rows(settings, thread) == [refund]
    assert refund_receipts(state)[-1] == refund["id"]
    assert len(ledger_rows(settings, thread)) == 1


def test_without_either_safeguard_the_replay_does_not_complete(
    app: TriageApp, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: with both safeguards gone the replay tries a second refund (the refundable-amount check is all
    that stops it), so the two tests above do test something."""
    thread = approved_refund(app)
    [refund] = refund_rows(settings, thread)

    async def forgetful_receipt(self: Journal, key: str) -> None:
        return None

    monkeypatch.setattr(Journal, "receipt", forgetful_receipt)
    fresh_tool_keys(monkeypatch)
    with pytest.raises(PermanentToolError, match="refundable"):
        replay_execute(app, thread)
    assert refund_rows(settings, thread) == [refund]


# -- the layers on their own ---------------------------------------------------------------------------------------


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[ToolGateway]:
    helpdesk = await Helpdesk.open(tmp_path / "helpdesk.sqlite")
    yield ToolGateway(helpdesk=helpdesk, permissions=load_policy_bundle().permissions)
    await helpdesk.close()


async def test_issue_refund_twice_with_one_key_refunds_once(gateway: ToolGateway, tmp_path: Path) -> None:
    db = tmp_path / "helpdesk.sqlite"
    [payment] = rows(
        db, "SELECT id, amount_cents FROM payments WHERE customer_id = 'cus_mid_dup' ORDER BY id DESC LIMIT 1"
    )
    args = {"customer_id": "cus_mid_dup", "payment_id": payment["id"], "amount_cents": 1000}
    first = await gateway.call("execute", "issue_refund", args, thread_id="thr_1")
    again = await gateway.call("execute", "issue_refund", args, thread_id="thr_1")
    assert (first["created"], again["created"], again["id"]) == (True, False, first["id"])
    assert len(rows(db, "SELECT id FROM refunds WHERE payment_id = ?", (payment["id"],))) == 1
    # Another thread asking for the same money is another refund (of what is left).
    other = await gateway.call("execute", "issue_refund", args, thread_id="thr_2")
    assert other["created"] and other["id"] != first["id"]
    [status] = rows(db, "SELECT status FROM payments WHERE id = ?", (payment["id"],))
    assert status == {"status": "partially_refunded"}


async def test_journal_records_an_effect_once(app: TriageApp) -> None:
    engine = await app._portal.acall(app._get_engine())
    journal = engine.services.journal

    async def twice() -> tuple[Any, Any, Any]:
        first = await journal.record_effect(
            "key-1", thread_id="t", kind="refund", receipt={"id": "re_1"}, policy_version="v"
        )
        second = await journal.record_effect(
            "key-1", thread_id="t", kind="refund", receipt={"id": "re_2"}, policy_version="v"
        )
        return first, second, await journal.receipt("key-1")

    first, second, stored = await app._portal.acall(twice())
    assert first == second == stored == {"id": "re_1"}
    assert await app._portal.acall(journal.receipt("key-2")) is None
    assert [line["event"] for line in await app._portal.acall(journal.trail("t"))] == ["effect"]


@pytest.mark.parametrize("ledger", ["kept", "forgotten"])
def test_one_approval_yields_one_refund_even_when_replayed_with_another_edit(
    app: TriageApp, settings: Settings, monkeypatch: pytest.MonkeyPatch, ledger: str
) -> None:
    """Studio can fork a thread from an earlier checkpoint: answering the same approval again with a different edit
    finds the refund the approval already produced (its key comes from the original approval, not the amount), in
    the ledger, or without it, through the key the executor hands the refund tool."""
    paused = app.run(
        {"customer_id": "cus_large_dup", "subject": "Charged twice", "body": "Charged twice for my order."}
    )
    edit = {"approver": "sam", "decision": "edit", "reason": "part was a preorder"}
    done = app.resume(paused.thread_id, {**edit, "args": {"amount_cents": 40000}})
    assert done.status == "completed"
    [refund] = refund_rows(settings, paused.thread_id)
    assert refund["amount_cents"] == 40000

    if ledger == "forgotten":

        async def forgetful_receipt(self: Journal, key: str) -> None:
            return None

        monkeypatch.setattr(Journal, "receipt", forgetful_receipt)

    async def fork_with_another_edit() -> dict[str, Any]:
        from langgraph.types import Command

        engine = await app._get_engine()
        config = {"configurable": {"thread_id": paused.thread_id}}
        history = [s async for s in engine.graph.aget_state_history(config)]
        before_asking = [s for s in history if s.next == ("approve",) and not s.interrupts][-1]  # the oldest
        context = Context(services=engine.services)
        await engine.graph.ainvoke(None, before_asking.config, context=context, durability="sync")  # asks again
        answer = Command(resume={**edit, "args": {"amount_cents": 30000}})
        await engine.graph.ainvoke(answer, config, context=context, durability="sync")
        return dict((await engine.graph.aget_state(config)).values)

    state = app._portal.call(fork_with_another_edit())
    assert state["status"] == "completed"
    assert refund_rows(settings, paused.thread_id) == [refund]
    assert refund_receipts(state)[-1] == refund["id"]
