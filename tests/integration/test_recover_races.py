"""`recover` holds the thread as a follow-up holds its conversation: recoveries raced on one thread (in one event
loop, or from two processes released by a barrier) run it once, and a recover waits for, or is refused by, another
process that holds the thread (found by review: recover took no lock, so two of them each retried the failed step,
forking the thread)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import policy_copy, race_in_processes, rows
from tests.integration.test_conversation_leases import held_elsewhere
from tests.integration.test_recover import ALICE, DUPLICATE, inject, requests
from triage import TriageApp
from triage.errors import ConversationBusyError, TriageError
from triage.faults import FaultInjector, FaultPlan
from triage.journal import Journal
from triage.settings import Settings


def _failed_thread(app: TriageApp) -> tuple[str, str]:
    """A thread whose approved refund failed on a transient fault, and the checkpoint its retry starts from."""
    paused = app.run(DUPLICATE)
    inject(app, "transient=1.0")
    failed = app.resume(paused.thread_id, ALICE)
    inject(app, None)
    assert (failed.status, failed.failure_class) == ("failed", "transient")
    return paused.thread_id, _latest(app.settings, paused.thread_id)["parent_checkpoint_id"]


def _latest(settings: Settings, thread_id: str) -> dict[str, Any]:
    [row] = rows(
        settings.checkpoints_path,
        "SELECT checkpoint_id, parent_checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
        "ORDER BY checkpoint_id DESC LIMIT 1",
        (thread_id,),
    )
    return row


def _children(settings: Settings, thread_id: str, parent: str) -> int:
    """The checkpoints that follow `parent` directly: the failed step's, and one for each run that retried it."""
    found = rows(
        settings.checkpoints_path,
        "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' AND parent_checkpoint_id = ?",
        (thread_id, parent),
    )
    return len(found)


def _effects_once(settings: Settings, thread_id: str) -> None:
    refunds = rows(settings.helpdesk_path, "SELECT amount_cents FROM refunds WHERE thread_id = ?", (thread_id,))
    assert refunds == [{"amount_cents": 24000}]
    assert requests(settings, thread_id) == ["executed"]
    assert len(rows(settings.helpdesk_path, "SELECT id FROM outbox WHERE thread_id = ?", (thread_id,))) == 1
    assert rows(settings.checkpoints_path, "SELECT * FROM conversation_leases") == [], "the thread was given back"


def test_recovers_raced_in_one_event_loop_retry_the_failed_step_once(app: TriageApp, settings: Settings) -> None:
    thread_id, retried_from = _failed_thread(app)

    async def race() -> list[Any]:
        return list(await asyncio.gather(app.arecover(thread_id), app.arecover(thread_id)))

    first, second = asyncio.run(race())

    assert first.status == second.status == "completed", (first.status_reason, second.status_reason)
    assert _children(settings, thread_id, retried_from) == 2, "the failed step, and one retry of it"
    _effects_once(settings, thread_id)
    assert app._conversation_locks == {}, "no lock is kept for a thread that no call holds or awaits"


def _recover(home: str, cache: str, thread_id: str, barrier: Any, results: Any) -> None:
    """Recover `thread_id` the moment every racer is ready (the app warm and its stores open); report the result."""
    app = TriageApp(Settings(home=Path(home), cache_home=Path(cache)))
    try:
        app.warm_up()
        app.thread(thread_id)
        barrier.wait(timeout=120)
        try:
            result = app.recover(thread_id)
        except TriageError as exc:
            results.put({"error": type(exc).__name__, "message": str(exc)})
        else:
            results.put({"status": result.status})
    finally:
        app.close()


@pytest.mark.slow
def test_recovers_raced_from_two_processes_retry_the_failed_step_once(settings: Settings, model_cache: Path) -> None:
    with TriageApp(settings) as app:
        thread_id, retried_from = _failed_thread(app)
    outcomes = race_in_processes(_recover, [(str(settings.home), str(model_cache), thread_id)] * 2)

    assert outcomes == [{"status": "completed"}] * 2, outcomes
    assert _children(settings, thread_id, retried_from) == 2, "the failed step, and one retry of it"
    _effects_once(settings, thread_id)


@pytest.mark.slow
def test_a_recover_is_refused_while_another_process_holds_the_thread_and_runs_once_it_lets_go(
    settings: Settings, model_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with TriageApp(settings) as app:
        thread_id, retried_from = _failed_thread(app)
    with held_elsewhere(settings, thread_id, lease_seconds=2) as holder:
        impatient = settings.model_copy(update={"conversation_wait_seconds": 0.0})
        with TriageApp(impatient) as app, pytest.raises(ConversationBusyError) as refused:
            app.recover(thread_id)
        assert f"`triage recover {thread_id}` again once that is done" in str(refused.value)
        assert _children(settings, thread_id, retried_from) == 1, "nothing ran"

        holder.send_signal(signal.SIGKILL)  # it dies holding the thread: its lease runs out after 2 s
        holder.wait(timeout=10)
        killed_at = time.monotonic()
        with TriageApp(settings.model_copy(update={"conversation_wait_seconds": 10.0})) as app:
            done = app.recover(thread_id)
        waits = [r.getMessage() for r in caplog.records if r.name == "triage.leases"]
        assert waits == [f"{thread_id} is held by another process: waiting up to 10 s for it"], "it says why it waits"
        assert done.status == "completed", done.status_reason
        assert time.monotonic() - killed_at < 8
    assert _children(settings, thread_id, retried_from) == 2
    _effects_once(settings, thread_id)


def test_a_sweep_passes_over_a_thread_another_process_holds_and_expires_it_once_free(
    settings: Settings, tmp_path: Path
) -> None:
    """The held thread's expiry is neither recorded nor lost: a later sweep applies it (found by review: the sweep
    stopped at the held thread, whose timeout it had recorded but not applied, and no later sweep listed it)."""
    folder = policy_copy(tmp_path, "approvals.toml", "expiry_hours = 24", "expiry_hours = 0.0000001")
    expiring = settings.model_copy(update={"policy_dir": folder, "conversation_wait_seconds": 0.0})
    with TriageApp(expiring) as app:
        held, free = (app.run({**DUPLICATE, "customer_id": c}).thread_id for c in ("cus_mid_dup", "cus_large_dup"))
    with held_elsewhere(settings, held, lease_seconds=2) as holder:
        with TriageApp(expiring) as app:
            assert [r.thread_id for r in app.sweep()] == [free]
            assert app.thread(held).result.status == "awaiting_approval"
            assert [p.thread_id for p in app.pending_approvals()] == [held], "still pending, still listed"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    time.sleep(2.5)  # the dead holder's lease has run out
    with TriageApp(expiring) as app:
        assert [(r.thread_id, r.status) for r in app.sweep()] == [(held, "escalated")]


def test_a_renewal_that_fails_neither_fails_the_work_nor_leaves_the_hold(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewal that fails once (the store busy for a moment) is tried again (found by review: its error came out
    of the resume after the refund was made, and the hold was never given back)."""
    quick = settings.model_copy(update={"conversation_lease_seconds": 0.3})  # renewed every 0.1 s
    renew, failed = Journal.renew_lease, []

    async def busy_once(self: Journal, *args: Any, **kwargs: Any) -> bool:
        if not failed:
            failed.append("renewal")
            raise sqlite3.OperationalError("database is locked (injected fault)")
        return await renew(self, *args, **kwargs)

    slow_faults = FaultInjector(FaultPlan.parse("slow=1.0,slow_seconds=0.05"))  # a resume that outlasts a renewal
    with TriageApp(quick) as app:
        paused = app.run(DUPLICATE)
        monkeypatch.setattr(Journal, "renew_lease", busy_once)
        app._portal.call(app._get_engine()).services.gateway.faults = slow_faults
        done = app.resume(paused.thread_id, ALICE)
    assert failed and done.status == "completed", done.status_reason
    assert rows(settings.checkpoints_path, "SELECT * FROM conversation_leases") == []


def test_a_decision_cancelled_while_it_takes_the_hold_gives_the_hold_back(
    app: TriageApp, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store finishes a statement it began, so a take cancelled on its way can still be written: it is given
    back (found by review: the thread stayed held by nobody, and the next decision was refused as busy)."""
    import triage.stores.sql as sql_module

    paused = app.run(DUPLICATE)
    committed = sql_module._committed

    def slow_lease_take(sql: str, params: Any) -> Any:
        run = committed(sql, params)
        if "INSERT INTO conversation_leases" not in sql:
            return run

        def slow(conn: Any) -> int:
            changed = run(conn)
            time.sleep(0.5)  # the disk is slow: the caller gives up before the take returns
            return int(changed)

        return slow

    monkeypatch.setattr(sql_module, "_committed", slow_lease_take)
    with pytest.raises(TimeoutError):
        app._portal.call(asyncio.wait_for(app.aresume(paused.thread_id, ALICE), 0.2))
    monkeypatch.undo()
    time.sleep(0.6)
    assert rows(settings.checkpoints_path, "SELECT * FROM conversation_leases") == []
    assert app.resume(paused.thread_id, ALICE).status == "completed"


def _claim_then_stall(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Each claim is written, then stalls `seconds` before it returns (a slow disk): its caller can give up between
    the two."""
    claim = Journal.claim

    async def stalled(self: Journal, *args: Any, **kwargs: Any) -> bool:
        won = await claim(self, *args, **kwargs)
        await asyncio.sleep(seconds)
        return won

    monkeypatch.setattr(Journal, "claim", stalled)


def test_a_decision_whose_caller_gives_up_after_its_claim_is_taken_in_all_the_same(
    app: TriageApp, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller's timeout after the claim is written waits for the run the claim starts (found by review: the
    decision stayed recorded but untaken, the thread paused on an approval the index showed as decided, until a
    `triage recover`)."""
    paused = app.run(DUPLICATE)
    _claim_then_stall(monkeypatch, 0.5)
    with pytest.raises(TimeoutError):  # on the app's own loop: the timeout is raised once the run has ended
        app._portal.call(asyncio.wait_for(app.aresume(paused.thread_id, ALICE), 0.2))
    monkeypatch.undo()

    assert app.thread(paused.thread_id).result.status == "completed"
    [approval] = rows(settings.checkpoints_path, "SELECT state, decided_by FROM approval_index")
    assert approval == {"state": "approved", "decided_by": "alice"}
    _effects_once(settings, paused.thread_id)


def test_a_decision_cancelled_from_another_loop_runs_on_and_a_recover_after_it_finds_it_done(
    app: TriageApp, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From another event loop the caller's cancellation returns at once, and the run goes on, holding the thread
    until it ends; a recover then finds it done and runs nothing again."""
    paused = app.run(DUPLICATE)
    _claim_then_stall(monkeypatch, 0.3)

    async def give_up() -> None:
        decision = asyncio.ensure_future(app.aresume(paused.thread_id, ALICE))
        await asyncio.sleep(0.15)  # the claim is written and stalls
        decision.cancel()
        with pytest.raises(asyncio.CancelledError):
            await decision

    asyncio.run(give_up())
    deadline = time.monotonic() + 30
    while paused.thread_id in app._conversation_locks:  # held until the run the claim started has ended
        assert time.monotonic() < deadline, "the thread is still held"
        time.sleep(0.02)
    monkeypatch.undo()

    assert app.thread(paused.thread_id).result.status == "completed"
    assert app.recover(paused.thread_id).status == "completed"
    _effects_once(settings, paused.thread_id)


def test_a_decision_cancelled_twice_on_the_apps_loop_is_taken_in_before_the_cancellation_is_raised(
    app: TriageApp, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused = app.run(DUPLICATE)
    _claim_then_stall(monkeypatch, 0.3)

    async def cancel_twice() -> None:
        decision = asyncio.ensure_future(app.aresume(paused.thread_id, ALICE))
        await asyncio.sleep(0.15)
        decision.cancel()
        await asyncio.sleep(0.05)
        decision.cancel()
        with pytest.raises(asyncio.CancelledError):
            await decision
        assert (await app.athread(paused.thread_id)).result.status == "completed"

    app._portal.call(cancel_twice())
    _effects_once(settings, paused.thread_id)


def test_two_decisions_raced_and_both_cancelled_after_their_claims_take_the_approval_in_once(
    app: TriageApp, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Released together, both callers give up while the first one's claim stalls: that decision runs the thread to
    its end, the other, cancelled while it waited for the thread, records nothing, and the refund is made once."""
    paused = app.run(DUPLICATE)
    _claim_then_stall(monkeypatch, 0.3)
    bob = {**ALICE, "approver": "bob"}

    async def race_and_give_up() -> None:
        ready = asyncio.Barrier(2)

        async def decide(decision: dict[str, Any]) -> Any:
            await ready.wait()
            return await app.aresume(paused.thread_id, decision)

        decisions = [asyncio.ensure_future(decide(d)) for d in (ALICE, bob)]
        await asyncio.sleep(0.15)
        for decision in decisions:
            decision.cancel()
        outcomes = await asyncio.gather(*decisions, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
        assert (await app.athread(paused.thread_id)).result.status == "completed"

    app._portal.call(race_and_give_up())
    [approval] = rows(settings.checkpoints_path, "SELECT state FROM approval_index")
    assert approval == {"state": "approved"}
    _effects_once(settings, paused.thread_id)


def test_a_sweep_passes_over_an_approval_edited_since_it_was_listed(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit elsewhere makes the listed approval stale; the sweep goes on to the next overdue one (found by
    review: the sweep stopped there, leaving the rest pending)."""
    folder = policy_copy(tmp_path, "approvals.toml", "expiry_hours = 24", "expiry_hours = 0.0000001")
    expiring = settings.model_copy(update={"policy_dir": folder})
    with TriageApp(expiring) as app:
        edited = app.run({**DUPLICATE, "customer_id": "cus_large_dup"}).thread_id
        time.sleep(1.1)  # requested_at has whole seconds: the edited one is listed first
        swept = app.run(DUPLICATE).thread_id
    listing = TriageApp._apending

    async def listed_then_edited(self: TriageApp, *args: Any) -> Any:
        pending = await listing(self, *args)
        if args[0] and pending and pending[0].thread_id == edited:  # the sweep's list; then an edit elsewhere
            edit = {"approver": "alice", "decision": "edit", "args": {"amount_cents": 100000}, "reason": "less"}
            with TriageApp(expiring) as alice:
                await asyncio.to_thread(alice.resume, edited, edit)
        return pending

    monkeypatch.setattr(TriageApp, "_apending", listed_then_edited)
    with TriageApp(expiring) as app:
        assert [(r.thread_id, r.status) for r in app.sweep()] == [(swept, "escalated")]
        monkeypatch.undo()
        assert app.thread(edited).result.status == "awaiting_approval", "the edit's own approval stays pending"


TAKEN_MEANWHILE = pytest.mark.parametrize(
    "meanwhile",
    [
        "UPDATE conversation_leases SET holder = 'thief', expires_at = '2999-01-01T00:00:00+00:00' "
        "WHERE conversation_id = ?",
        "DELETE FROM conversation_leases WHERE conversation_id = ?",
    ],
    ids=["taken", "taken-and-given-back"],
)
"""What another process does to a thread's lease while its holder is paused: takes it, or takes it and gives it back
(after running the thread, say)."""


def hold_taken_at_the_refund(
    monkeypatch: pytest.MonkeyPatch,
    take: Callable[[str], None],
    saved: Callable[[str], Any] = lambda thread_id: None,
    *,
    pause: float = 0.0,
) -> list[tuple[str, Any]]:
    """At the first refund call, `take` runs on the thread's lease, as another process would while this one is
    paused; then the call waits `pause` seconds, if any (a holder stalled on a wait: its renewal can look meanwhile).
    Returns the thread it took, with what `saved` counted for it at that moment, once it came."""
    from triage.gateway import ToolGateway

    call, taken = ToolGateway.call, []

    async def refund_after_a_pause(self: ToolGateway, caller: str, tool: str, *args: Any, **kwargs: Any) -> Any:
        if tool == "issue_refund" and not taken:
            take(kwargs["thread_id"])
            taken.append((kwargs["thread_id"], saved(kwargs["thread_id"])))
            if pause:
                await asyncio.sleep(pause)
        return await call(self, caller, tool, *args, **kwargs)

    monkeypatch.setattr(ToolGateway, "call", refund_after_a_pause)
    return taken


def _taking(settings: Settings, meanwhile: str) -> Callable[[str], None]:
    """`meanwhile` run on the thread's lease row from a connection of its own, as another process would."""

    def take(thread_id: str) -> None:
        with sqlite3.connect(settings.checkpoints_path) as other:
            other.execute(meanwhile, (thread_id,))

    return take


@TAKEN_MEANWHILE
def test_a_decision_whose_hold_another_process_took_stops_and_the_thread_is_recovered_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    """A holder stalled past its lease finds at its next renewal that another process took the thread, and may
    have run it and given it back (a recover). It stops at its next wait instead of running on beside or over that
    process's work (found by review: it ran on to the end; and taking a missing lease again forked a thread a
    recover had run), says so, and a recover then makes the refund once."""
    quick = settings.model_copy(update={"conversation_lease_seconds": 0.3})  # renewed every 0.1 s
    with TriageApp(quick) as app:
        paused = app.run(DUPLICATE)
        stalled = hold_taken_at_the_refund(monkeypatch, _taking(quick, meanwhile), pause=0.5)  # the lease runs out
        with pytest.raises(TriageError, match="another process took it meanwhile") as stopped:
            app.resume(paused.thread_id, ALICE)
        assert getattr(stopped.value, "thread_id", None) == paused.thread_id
        assert f"triage recover {paused.thread_id}" in str(stopped.value)
        assert [thread for thread, _ in stalled] == [paused.thread_id]
        assert rows(quick.helpdesk_path, "SELECT * FROM refunds WHERE thread_id = ?", (paused.thread_id,)) == []
        with sqlite3.connect(quick.checkpoints_path) as thief:  # the other process is done with it
            thief.execute("DELETE FROM conversation_leases")
        done = app.recover(paused.thread_id)
    assert done.status == "completed", done.status_reason
    refunded = rows(quick.helpdesk_path, "SELECT amount_cents FROM refunds WHERE thread_id = ?", (paused.thread_id,))
    assert refunded == [{"amount_cents": 24000}]


def _saved(settings: Settings, thread_id: str) -> tuple[int, int]:
    """How many checkpoints and writes rows the thread has (every namespace)."""
    query = "SELECT count(*) AS n FROM {} WHERE thread_id = ?"
    [checkpoints] = rows(settings.checkpoints_path, query.format("checkpoints"), (thread_id,))
    [writes] = rows(settings.checkpoints_path, query.format("writes"), (thread_id,))
    return checkpoints["n"], writes["n"]


async def renews_never(*_: Any) -> bool:
    """A renewal that has not looked at the lease yet: a process paused past its lease runs on for a moment."""
    await asyncio.Event().wait()
    return False


@TAKEN_MEANWHILE
def test_a_holder_whose_hold_was_taken_saves_nothing_before_its_renewal_notices(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    """A process paused past its lease (a stopped VM, a swap storm) runs on for a moment before its renewal looks.
    Its next save is refused in the save's own transaction: it writes nothing over the thread another process took
    (and may have run), says so, records no failure, and a recover then finishes the thread with one refund (the
    paused run's refund call went through; the effects ledger keeps the recover's from making another)."""
    from triage import leases

    quick = settings.model_copy(update={"conversation_lease_seconds": 0.3})
    monkeypatch.setattr(leases, "_renew", renews_never)
    with TriageApp(quick) as app:
        paused = app.run(DUPLICATE)
        taken = hold_taken_at_the_refund(monkeypatch, _taking(quick, meanwhile), lambda thread: _saved(quick, thread))
        with pytest.raises(TriageError, match="another process took it meanwhile") as stopped:
            app.resume(paused.thread_id, ALICE)
        assert getattr(stopped.value, "thread_id", None) == paused.thread_id
        [(thread, at_take)] = taken
        assert thread == paused.thread_id and _saved(quick, thread) == at_take, "a step saved after the hold was taken"
        with sqlite3.connect(quick.checkpoints_path) as thief:  # the other process is done with it
            thief.execute("DELETE FROM conversation_leases")
        done = app.recover(paused.thread_id)
    assert done.status == "completed", done.status_reason
    _effects_once(quick, paused.thread_id)


def test_a_process_stalled_past_its_lease_saves_nothing_over_the_thread_another_process_recovered(
    settings: Settings,
) -> None:
    """Two processes. The first approves a refund and stalls at the refund call, its event loop blocked (its lease's
    renewal cannot run). Once the lease has run out, `triage recover` in a second process takes the thread and
    finishes it. Then the first runs on: the refund call finds the effect made, and the step's save is refused, so
    it stops with `HoldLostError` and the finished thread keeps exactly what the recover saved."""
    import os
    import subprocess
    import sys

    from tests.integration.zygote import triage_cli

    with TriageApp(settings) as app:
        paused = app.run(DUPLICATE)
    assert paused.status == "awaiting_approval", paused.status_reason
    lease = 1.0
    driver = Path(__file__).with_name("stall_driver.py")
    args = [str(settings.home), str(settings.cache_home), paused.thread_id, str(lease)]
    stalled = subprocess.Popen(
        [sys.executable, str(driver), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert stalled.stdout is not None and stalled.stdin is not None
        assert stalled.stdout.readline().strip() == "stalled"
        held = rows(settings.checkpoints_path, "SELECT expires_at FROM conversation_leases")
        assert len(held) == 1, held
        time.sleep(lease + 0.5)  # the stalled holder's lease runs out; nothing renews it
        env = {
            **os.environ,
            "TRIAGE_HOME": str(settings.home),
            "TRIAGE_CACHE_HOME": str(settings.cache_home),
            "TRIAGE_CONVERSATION_LEASE_SECONDS": str(lease),
        }
        recovered = triage_cli(["recover", paused.thread_id, "--json"], env=env, timeout=120)
        assert recovered.returncode == 0, recovered.stderr + recovered.stdout
        assert "completed" in recovered.stdout, recovered.stdout
        finished = _saved(settings, paused.thread_id), _latest(settings, paused.thread_id)
        out, _ = stalled.communicate("go\n", timeout=120)
    finally:
        if stalled.poll() is None:
            stalled.kill()
            stalled.wait()
    assert out.startswith("stopped HoldLostError:") and "another process took it meanwhile" in out, out
    assert (_saved(settings, paused.thread_id), _latest(settings, paused.thread_id)) == finished
    _effects_once(settings, paused.thread_id)
