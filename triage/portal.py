"""A private event loop on a daemon thread, so sync callers and async callers share one set of async resources."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Portal:
    """Runs coroutines on one loop; aiosqlite connections and savers live there and nowhere else.

    By default the loop is the portal's own, on a daemon thread started at the first call. Given `loop`, the portal
    uses that loop, which its owner runs: a coroutine on it that calls `acall` then awaits the work directly, with
    no hop to another thread and back (two wake-ups of a sleeping loop, 0.1-1 ms each here). `call` then works only
    from another thread while that loop runs, and `stop` leaves the loop to its owner.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop: asyncio.AbstractEventLoop | None = loop
        self._adopted = loop is not None
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._started:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="triage-portal", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the portal loop and wait for it (from a thread that is not running that loop).

        Raises:
            RuntimeError: the portal runs on its owner's loop, and that loop is not running or this thread runs
                it (waiting here would wait for ever); `coro` is closed unrun.
        """
        loop = self._ensure_loop()
        if self._adopted and (not loop.is_running() or _running_loop() is loop):
            coro.close()
            raise RuntimeError(_ON_ITS_OWNERS_LOOP)
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the portal loop and await it, from that loop or any other.

        Raises:
            RuntimeError: the portal runs on its owner's loop, called from another loop while that one is not
                running (it would wait for ever); `coro` is closed unrun.
        """
        loop = self._ensure_loop()
        if _running_loop() is loop:
            return await coro
        if self._adopted and not loop.is_running():
            coro.close()
            raise RuntimeError(_ON_ITS_OWNERS_LOOP)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def stop(self) -> None:
        """Stop the loop and join its thread; the portal can start again later.

        Whatever still runs on the loop (a call whose caller was interrupted, a call that arrived as the loop was
        stopping) is cancelled before the loop closes, so every waiting `call` returns (CancelledError) instead of
        waiting forever for a loop that no longer runs. A loop given to the portal is its owner's: it is left as
        it is.
        """
        if self._adopted:
            return
        with self._started:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if thread.is_alive():
                return  # still busy after 10 s: left to its daemon thread rather than closed under it
            # The caller may be running a loop of its own, so the leftovers run on a thread of their own.
            cleaner = threading.Thread(target=_cancel_leftovers, args=(loop,), name="triage-portal-stop", daemon=True)
            cleaner.start()
            cleaner.join(timeout=10)
            if not cleaner.is_alive():
                loop.close()


_ON_ITS_OWNERS_LOOP = (
    "this app runs on its caller's event loop: call its async methods from that loop, not the sync ones"
)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel every task left on a stopped loop and let each finish its cancellation."""
    loop.run_until_complete(asyncio.sleep(0))  # calls queued before the stop become tasks first
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
