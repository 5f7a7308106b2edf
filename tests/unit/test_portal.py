"""The portal's loop stops without leaving a caller waiting forever (Ctrl-C during `triage eval` used to hang)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from triage.portal import Portal


def _caller_blocked_on(portal: Portal) -> tuple[threading.Thread, dict[str, str]]:
    """A thread whose `portal.call` waits on a coroutine that never ends by itself, started and waiting."""
    started = threading.Event()
    outcome: dict[str, str] = {}

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    def caller() -> None:
        try:
            portal.call(forever())
            outcome["returned"] = "normally"
        except BaseException as exc:
            outcome["raised"] = type(exc).__name__

    thread = threading.Thread(target=caller, daemon=True)
    thread.start()
    assert started.wait(5), "the call reached the portal's loop"
    return thread, outcome


def test_stopping_the_portal_releases_a_caller_still_waiting() -> None:
    portal = Portal()
    thread, outcome = _caller_blocked_on(portal)
    portal.stop()
    thread.join(5)
    assert not thread.is_alive(), "the caller still waits on a loop that no longer runs"
    assert outcome == {"raised": "CancelledError"}


def test_stopping_from_inside_a_running_loop_releases_the_caller_too() -> None:
    """`TriageApp.aclose` stops the portal from a coroutine: the leftovers cannot run on the caller's thread."""
    portal = Portal()
    thread, outcome = _caller_blocked_on(portal)

    async def close() -> None:
        portal.stop()

    asyncio.run(close())
    thread.join(5)
    assert not thread.is_alive()
    assert outcome == {"raised": "CancelledError"}


def test_a_stopped_portal_starts_again_for_the_next_call() -> None:
    portal = Portal()

    async def answer() -> int:
        return 42

    assert portal.call(answer()) == 42
    portal.stop()
    assert portal.call(answer()) == 42
    with pytest.raises(ZeroDivisionError):
        portal.call(_fails())
    portal.stop()


async def _fails() -> None:
    raise ZeroDivisionError


def test_a_portal_on_its_callers_loop_runs_calls_there_and_leaves_the_loop_running() -> None:
    """Given a loop, `acall` from it awaits the coroutine in the caller's own task: no thread, no hop."""
    outer = asyncio.new_event_loop()
    portal = Portal(outer)
    seen: dict[str, object] = {}

    async def where() -> tuple[int, asyncio.AbstractEventLoop]:
        return threading.get_ident(), asyncio.get_running_loop()

    async def caller() -> None:
        seen["caller"] = threading.get_ident()
        seen["task"] = asyncio.current_task()
        seen["ran"] = await portal.acall(where())
        seen["task_after"] = asyncio.current_task()
        seen["threads"] = [t.name for t in threading.enumerate()]

    try:
        outer.run_until_complete(caller())
        assert seen["ran"] == (seen["caller"], outer)
        assert seen["task"] is seen["task_after"]
        assert "triage-portal" not in seen["threads"], "the portal started a loop thread of its own"
        portal.stop()
        assert not outer.is_closed(), "the owner's loop is the owner's to close"
        assert outer.run_until_complete(portal.acall(_answer())) == 42, "still usable after stop"
    finally:
        outer.close()


def test_a_portal_on_its_callers_loop_refuses_a_sync_call_that_would_wait_for_ever() -> None:
    """A sync call from the loop's own thread (running or not) would never be answered: it raises, and the
    coroutine is closed unrun; from another thread while the loop runs, it is answered."""
    outer = asyncio.new_event_loop()
    portal = Portal(outer)
    try:
        idle = _answer()
        with pytest.raises(RuntimeError, match="async methods"):
            portal.call(idle)  # the loop is not running
        assert idle.cr_frame is None, "the coroutine was closed"

        async def from_the_loop() -> None:
            with pytest.raises(RuntimeError, match="async methods"):
                portal.call(_answer())
            answered = await asyncio.to_thread(portal.call, _answer())  # another thread, the loop running
            assert answered == 42

        outer.run_until_complete(from_the_loop())

        async def from_another_loop() -> None:
            with pytest.raises(RuntimeError, match="async methods"):
                await portal.acall(_answer())  # the owner's loop is not running: no one would answer

        asyncio.run(from_another_loop())
    finally:
        outer.close()


async def _answer() -> int:
    return 42
