"""`run_to_its_end`: work that must not be abandoned half-way (a claimed decision's run) outlives its caller's
cancellation, except the one that says the caller's hold on the thread was lost."""

from __future__ import annotations

import asyncio

import pytest

from triage.leases import HOLD_LOST, run_to_its_end


class _Work:
    """A claim, then a wait for `go`, then the run: the test decides when each step may happen."""

    def __init__(self, *, fail: bool = False) -> None:
        self.steps: list[str] = []
        self.claimed = asyncio.Event()
        self.go = asyncio.Event()
        self.fail = fail

    async def run(self) -> str:
        self.steps.append("claimed")
        self.claimed.set()
        await self.go.wait()
        self.steps.append("ran")
        if self.fail:
            raise ValueError("the run failed")
        return "done"


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_the_work_s_result_and_its_error_come_back_as_they_are() -> None:
    async def both() -> None:
        for fail in (False, True):
            work = _Work(fail=fail)
            work.go.set()
            if fail:
                with pytest.raises(ValueError, match="the run failed"):
                    await run_to_its_end(work.run())
            else:
                assert await run_to_its_end(work.run()) == "done"

    asyncio.run(both())


@pytest.mark.parametrize("fail", [False, True])
def test_a_caller_cancelled_twice_waits_for_the_work_then_is_cancelled(fail: bool) -> None:
    async def cancel_twice() -> None:
        work = _Work(fail=fail)
        caller = asyncio.ensure_future(run_to_its_end(work.run()))
        await work.claimed.wait()
        for _ in range(2):
            caller.cancel()
            await _turns()
        assert not caller.done(), "the caller waits for the work"
        work.go.set()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert work.steps == ["claimed", "ran"]

    asyncio.run(cancel_twice())


def test_a_timeout_around_it_is_raised_once_the_work_has_ended() -> None:
    async def with_timeout() -> None:
        work = _Work()
        scopes: list[asyncio.Timeout] = []

        async def guarded() -> str:
            async with asyncio.timeout(None) as scope:
                scopes.append(scope)
                return await run_to_its_end(work.run())

        caller = asyncio.ensure_future(guarded())
        await work.claimed.wait()
        scopes[0].reschedule(asyncio.get_running_loop().time())  # the caller's time is up
        await _turns()
        assert not caller.done()
        work.go.set()
        with pytest.raises(TimeoutError):
            await caller
        assert work.steps == ["claimed", "ran"]

    asyncio.run(with_timeout())


def test_a_lost_hold_stops_the_work_at_its_next_wait() -> None:
    async def lose_the_hold() -> None:
        work = _Work()
        caller = asyncio.ensure_future(run_to_its_end(work.run()))
        await work.claimed.wait()
        caller.cancel(HOLD_LOST)
        await asyncio.wait((caller,), timeout=10)
        assert caller.cancelled(), "the work was not stopped"
        assert work.steps == ["claimed"], "stopped: another process may be running the thread"

    asyncio.run(lose_the_hold())


def test_work_cancelled_itself_cancels_its_caller() -> None:
    async def stop_everything() -> None:
        work = _Work()
        caller = asyncio.ensure_future(run_to_its_end(work.run()))
        await work.claimed.wait()
        for task in asyncio.all_tasks():  # as the portal does to every task when it stops
            if task is not asyncio.current_task():
                task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert work.steps == ["claimed"]

    asyncio.run(stop_everything())
