"""Concurrent decisions on one approval: one is applied per round, a loser gets a typed refusal naming the winner
(or, for a dual approval, gives the second approval), and one approval yields at most one effect. Raced from
separate processes (each with the app open and warmed before a barrier) and from one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import race_in_processes, rows
from tests.integration.race_driver import decide
from triage import TriageApp
from triage.errors import ApprovalConflictError, ApprovalRefusedError, TriageError
from triage.journal import Journal
from triage.settings import Settings

TICKET = {"subject": "Charged twice", "body": "You charged me twice for the same order."}
ALICE_EDIT = {"approver": "alice", "decision": "edit", "args": {"amount_cents": 12000}, "reason": "partial"}
BOB_EDIT = {"approver": "bob", "decision": "edit", "args": {"amount_cents": 10000}, "reason": "less"}
ALICE = {"approver": "alice", "decision": "approve", "reason": "ok"}
SAM = {"approver": "sam", "decision": "approve", "reason": "ok"}
BOB_REJECT = {"approver": "bob", "decision": "reject", "reason": "it was a preorder"}

# (name, customer, decisions raced against each other)
SCENARIOS = [
    ("edit_vs_edit", "cus_mid_dup", [ALICE_EDIT, BOB_EDIT]),
    ("approve_vs_reject", "cus_mid_dup", [ALICE, BOB_REJECT]),
    ("dual_approvals", "cus_large_dup", [ALICE, SAM]),
    ("same_approver_twice", "cus_large_dup", [ALICE, ALICE]),
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    home = tmp_path_factory.mktemp("race-template") / "home"
    app = TriageApp(Settings(home=home, cache_home=model_cache))
    app.warm_up()
    app.close()
    return home


def paused_thread(seeded: Path, tmp_path: Path, model_cache: Path, customer: str) -> tuple[Settings, str]:
    settings = Settings(home=tmp_path / "home", cache_home=model_cache)
    shutil.copytree(seeded, settings.home)
    with TriageApp(settings) as app:
        result = app.run({**TICKET, "customer_id": customer})
    assert result.status == "awaiting_approval"
    return settings, result.thread_id


def check_outcome(settings: Settings, thread_id: str, outcomes: list[dict[str, Any]], scenario: str) -> None:
    """One decision applied per round, the loser refused with the winner's name, one effect at most."""
    won = [o for o in outcomes if "status" in o]
    lost = [o for o in outcomes if "error" in o]
    assert len(won) >= 1, outcomes
    for loser in lost:
        assert loser["error"] in ("ApprovalConflictError", "ApprovalRefusedError"), loser
        if loser["error"] == "ApprovalConflictError":
            assert any(w["decision"]["approver"] in loser["message"] for w in won), loser
    refunds = rows(settings.helpdesk_path, "SELECT amount_cents FROM refunds WHERE thread_id = ?", (thread_id,))
    ledger = rows(settings.checkpoints_path, "SELECT kind FROM effects_ledger WHERE thread_id = ?", (thread_id,))
    messages = rows(settings.helpdesk_path, "SELECT template FROM outbox WHERE thread_id = ?", (thread_id,))
    assert len(refunds) <= 1 and len(ledger) == len(refunds), (refunds, ledger)
    assert len(messages) <= 1, messages
    audit = rows(
        settings.checkpoints_path, "SELECT event, actor FROM audit_trail WHERE thread_id = ? ORDER BY id", (thread_id,)
    )
    decided = [a for a in audit if a["event"] in ("approved", "edited", "rejected")]
    # Every decision reported as applied is in the audit trail, and nothing else was.
    assert sorted(a["actor"] for a in decided) == sorted(w["decision"]["approver"] for w in won), (audit, outcomes)
    if scenario == "edit_vs_edit":
        assert len(won) == 1 and refunds == [{"amount_cents": won[0]["decision"]["args"]["amount_cents"]}]
    elif scenario == "approve_vs_reject":
        assert len(won) == 1
        rejected = won[0]["decision"]["decision"] == "reject"
        assert refunds == ([] if rejected else [{"amount_cents": 24000}])
        assert messages == [{"template": "approval.rejected" if rejected else "billing.duplicate_refunded"}]
    elif scenario == "same_approver_twice":
        assert len(won) == 1 and refunds == [], "one person's approval counts once; the dual tier needs another"
    elif scenario == "dual_approvals":
        assert refunds == ([{"amount_cents": 120000}] if len(won) == 2 else []), outcomes


def finish(settings: Settings, thread_id: str) -> None:
    """Whatever the race left pending is approved by whoever may still: one refund in the end, never two."""
    with TriageApp(settings) as app:
        for approver in ("sam", "alice"):
            pending = app.pending_approvals()
            if not pending:
                break
            try:
                app.resume(thread_id, {"approver": approver, "decision": "approve"})
            except ApprovalRefusedError:
                continue
    refunds = rows(settings.helpdesk_path, "SELECT id FROM refunds WHERE thread_id = ?", (thread_id,))
    assert len(refunds) <= 1
    ledger = rows(settings.checkpoints_path, "SELECT kind FROM effects_ledger WHERE thread_id = ?", (thread_id,))
    assert len(ledger) == len(refunds)


@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "customer", "decisions"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_race_from_separate_processes(
    seeded: Path, tmp_path: Path, model_cache: Path, scenario: str, customer: str, decisions: list[dict[str, Any]]
) -> None:
    settings, thread_id = paused_thread(seeded, tmp_path, model_cache, customer)
    outcomes = race_in_processes(
        decide, [(str(settings.home), str(model_cache), thread_id, decision) for decision in decisions]
    )
    check_outcome(settings, thread_id, outcomes, scenario)
    finish(settings, thread_id)


@pytest.mark.parametrize(("scenario", "customer", "decisions"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_race_in_one_event_loop(
    seeded: Path, tmp_path: Path, model_cache: Path, scenario: str, customer: str, decisions: list[dict[str, Any]]
) -> None:
    settings, thread_id = paused_thread(seeded, tmp_path, model_cache, customer)
    app = TriageApp(settings)
    app.warm_up()

    async def race() -> list[dict[str, Any]]:
        barrier = asyncio.Barrier(len(decisions))

        async def one(decision: dict[str, Any]) -> dict[str, Any]:
            await barrier.wait()
            try:
                result = await app.aresume(thread_id, decision)
            except TriageError as exc:
                return {"decision": decision, "error": type(exc).__name__, "message": str(exc)}
            return {"decision": decision, "status": result.status}

        return list(await asyncio.gather(*(one(d) for d in decisions)))

    try:
        outcomes = asyncio.run(race())
    finally:
        app.close()
    check_outcome(settings, thread_id, outcomes, scenario)
    # In one loop the decisions take turns on the thread (its hold), so the later one finds the first applied: a
    # single approval's loser is a conflict naming the winner, a dual approval's second approver gives the second
    # approval, and one person's second approval is refused.
    expected = {"dual_approvals": [], "same_approver_twice": ["ApprovalRefusedError"]}
    assert [o["error"] for o in outcomes if "error" in o] == expected.get(scenario, ["ApprovalConflictError"]), outcomes
    finish(settings, thread_id)


def test_conflict_error_names_the_winner() -> None:
    error = ApprovalConflictError("lost", approval_id="apr_1", winner="alice (approve)")
    assert (error.approval_id, error.winner) == ("apr_1", "alice (approve)")


def test_a_decision_that_loses_while_it_waits_for_the_thread_names_the_winner(
    seeded: Path, tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bob's decision waits for the thread; before he holds it, Alice (another app on the same home, as another
    # process would be) decides it and runs the thread to its end. Bob then finds the approval decided: he lost to
    # Alice and must be told so, not that the thread needs `recover`.
    import triage.leases

    settings, thread_id = paused_thread(seeded, tmp_path, model_cache, "cus_mid_dup")
    original = triage.leases.hold_conversation
    interleaved: list[str] = []

    @contextlib.asynccontextmanager
    async def alice_decides_first(journal: Journal, thread: str, **kwargs: Any) -> AsyncIterator[str]:
        if not interleaved:
            interleaved.append(thread)
            with TriageApp(settings) as alice:
                done = await asyncio.to_thread(alice.resume, thread, ALICE_EDIT)
            assert done.status == "completed"
        async with original(journal, thread, **kwargs) as holder:
            yield holder

    monkeypatch.setattr(triage.leases, "hold_conversation", alice_decides_first)
    with TriageApp(settings) as bob, pytest.raises(ApprovalConflictError, match="alice") as caught:
        bob.resume(thread_id, BOB_EDIT)
    assert interleaved == [thread_id] and caught.value.winner and "alice" in caught.value.winner
    refunds = rows(settings.helpdesk_path, "SELECT amount_cents FROM refunds WHERE thread_id = ?", (thread_id,))
    assert refunds == [{"amount_cents": 12000}]
