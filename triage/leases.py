"""One follow-up at a time per conversation, across processes: a lease row in the checkpoint store.

A conversation's next turn runs only while its process holds the conversation's lease (`Journal.take_lease`). The
lease is renewed while the turn runs and given back when it ends; a process that dies holding it stops renewing,
so the lease runs out and the conversation is free again after one lease period. A holder that stalls past its
lease (the store or its event loop stuck, the process paused) and finds it taken stops its work at the next wait.
Before that, should it try to save a step, the checkpoint store refuses: each checkpoint and step result of a held
thread is saved only while the lease is still its holder's (`held_in_context`; on SQLite read in the write's
own transaction, on PostgreSQL just before it). Within one process, follow-ups to one conversation also queue on
an `asyncio.Lock` (the app's), so they do not poll the store for each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

from triage.errors import ConversationBusyError, HoldLostError
from triage.journal import Journal

__all__ = ["HOLD_LOST", "held_in_context", "hold_conversation", "hold_lost", "lease_holder", "run_to_its_end"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_POLL_SECONDS = 0.02
"""The first wait before trying again for a lease another process holds (it doubles, up to `MAX_POLL_SECONDS`)."""
MAX_POLL_SECONDS = 0.5
HOLD_LOST = "the hold on the thread ran out and another process took it"
"""The message of the cancellation that stops work whose hold was lost (see `hold_conversation`)."""


_HELD: ContextVar[tuple[str, str] | None] = ContextVar("triage_held_thread", default=None)
"""The thread the running context holds (the body of `hold_conversation`), and as which holder."""


def held_in_context(config: Mapping[str, Any]) -> tuple[str, str] | None:
    """The thread a save under `config` is for and the holder its lease is held as here, or None when it is not.

    Here is the body of `hold_conversation` and the tasks it starts (LangGraph's among them): the savers read it to
    save a held thread's steps only while the lease is still its holder's.
    """
    held = _HELD.get()
    return held if held is not None and held[0] == str(config["configurable"]["thread_id"]) else None


def hold_lost(conversation_id: str, how: str = "stalled past its lease") -> HoldLostError:
    """The error of work stopped because another process took the thread's hold (see `HoldLostError`)."""
    return HoldLostError(
        f"stopped: the hold on {conversation_id} ran out before it was renewed (the store or this process {how}) "
        f"and another process took it meanwhile; nothing more of this run was saved; if none runs the thread now, "
        f"`triage recover {conversation_id}` continues it",
        thread_id=conversation_id,
    )


def lease_holder() -> str:
    """A holder id unique to this take of the lease, naming the host and process (for an operator)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def hold_conversation(
    journal: Journal,
    conversation_id: str,
    *,
    lease_seconds: float,
    wait_seconds: float,
    busy: str | None = None,
) -> AsyncIterator[str]:
    """Hold the conversation's lease for the body of the `async with`; yields the holder id.

    Waits up to `wait_seconds` while another process holds it, trying again with a growing pause. `busy` is what
    the refusal says (by default: send the follow-up again later).

    Raises:
        ConversationBusyError: another process still held it after `wait_seconds`.
        StoreUnavailableError: the lease ran out before it was renewed and another process took it: the body was
            stopped (cancelled at its next wait), as that process may have run the thread.
    """
    holder = lease_holder()
    deadline = time.monotonic() + wait_seconds
    pause = FIRST_POLL_SECONDS
    told = False
    try:
        while not await journal.take_lease(conversation_id, holder, seconds=lease_seconds):
            left = deadline - time.monotonic()
            if left > 0 and not told:  # a wait of up to `wait_seconds` says what it waits for
                _log.warning("%s is held by another process: waiting up to %.0f s for it", conversation_id, left)
                told = True
            if left <= 0:
                raise ConversationBusyError(
                    busy
                    or f"conversation {conversation_id} is taking another follow-up in another process: send this "
                    "one again once that one is answered"
                )
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, MAX_POLL_SECONDS)
    except asyncio.CancelledError:
        # A take cancelled on its way may still be written (the store finishes a statement it began): give it back,
        # or the thread would stay held by nobody for a lease period. Only this holder's row is removed.
        with contextlib.suppress(Exception):
            await asyncio.shield(journal.release_lease(conversation_id, holder))
        raise
    work = asyncio.current_task()
    renewing = asyncio.create_task(_renew(journal, conversation_id, holder, lease_seconds, work))
    stopped = False
    held = _HELD.set((conversation_id, holder))
    try:
        yield holder
    except asyncio.CancelledError:
        if not _lost(renewing) or work is None:
            raise
        stopped = True
        work.uncancel()  # this stop's own cancel; one from outside, come meanwhile, still counts
        raise hold_lost(conversation_id, f"stalled for {lease_seconds:g} s") from None
    finally:
        _HELD.reset(held)
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        if _lost(renewing) and not stopped and work is not None and work.cancelling():
            work.uncancel()  # the work ended before the stop reached it: its result stands
        try:
            await journal.release_lease(conversation_id, holder)
        except Exception:  # the work is done (or failed on its own): the lease runs out by itself
            _log.warning(
                "could not give back the hold on %s; it runs out within %.0f s",
                conversation_id,
                lease_seconds,
                exc_info=True,
            )


async def _renew(
    journal: Journal, conversation_id: str, holder: str, lease_seconds: float, work: asyncio.Task[object] | None
) -> bool:
    """Renew the lease every third of its period while the turn runs; returns True once it was lost.

    A renewal that fails (the store busy for a moment) is tried again at the next third: it never ends the hold
    early, nor turns the work it guards into a failure. A lease that ran out and is no longer this holder's was
    taken by another process meanwhile, which may have run the thread (a `triage recover`) and given it back: the
    work is stopped (cancelled at its next wait), so two processes do not run one thread. (Taking a missing lease
    again cannot tell that apart from a taker that ran nothing; review found it forked a thread a recover had run.)
    """
    while True:
        await asyncio.sleep(lease_seconds / 3)
        try:
            if await journal.renew_lease(conversation_id, holder, seconds=lease_seconds):
                continue
            _log.error("the hold on %s ran out before it was renewed: stopping the work that held it", conversation_id)
            if work is not None:
                work.cancel(HOLD_LOST)
            return True
        except Exception:
            _log.warning("could not renew the hold on %s; trying again", conversation_id, exc_info=True)


def _lost(renewing: asyncio.Task[bool]) -> bool:
    """Whether the renewal task found the lease taken (and stopped the work)."""
    return renewing.done() and not renewing.cancelled() and renewing.exception() is None and renewing.result()


async def run_to_its_end(work: Coroutine[Any, Any, T]) -> T:
    """Await `work` to its end even when the caller is cancelled meanwhile, then pass the cancellation on.

    For work under a hold that must not be left half-done (a claimed decision's run). `work` runs as a task of its
    own. A cancellation of the caller, however often it comes, waits for that task, so the caller's hold lasts as
    long as the work. The work is stopped only when the hold was lost (`HOLD_LOST`: another process may be running
    the thread), or when it is cancelled itself, as the portal cancels every task when it stops.
    """
    task = asyncio.ensure_future(work)
    interrupted = False
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError as stop:
            interrupted = True
            if stop.args == (HOLD_LOST,):
                task.cancel(HOLD_LOST)
    if interrupted:
        if not task.cancelled():
            task.exception()  # retrieved: what the work raised goes no further than the cancellation
        raise asyncio.CancelledError
    return task.result()
