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
