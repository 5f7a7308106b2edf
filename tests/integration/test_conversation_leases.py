"""Follow-ups to one conversation from several processes take turns: a lease row in the checkpoint store, taken
atomically, renewed while the turn runs, and expiring when its holder dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HoldCheckpointWrite, race_in_processes, rows
from tests.integration.conversation_race_driver import follow_up
from triage import TriageApp
from triage.errors import ConversationBusyError
from triage.policies.conversation import clip
from triage.services import Services
from triage.settings import Settings

FIRST = {"customer_id": "cus_new", "subject": "Change my email", "body": "I want to change the email on my account."}
BODIES = ("Please use first.choice@example.org instead.", "Actually, use second.choice@example.org.")


def _conversation(settings: Settings) -> str:
    with TriageApp(settings) as app:
        first = app.run(FIRST)
    assert first.status == "completed" and first.conversation_id
    return first.conversation_id


LEFT_OVER = [{"conversation_id": "c1", "holder": "c"}, {"conversation_id": "c2", "holder": "b"}]
"""The leases `lease_scenario` leaves behind."""


async def lease_scenario(settings: Settings) -> None:
    """Take, refuse, renew, give back and expire leases on the store `settings` open (SQLite or PostgreSQL)."""
    services = await Services.open(settings)
    journal = services.journal
    try:
        assert await journal.take_lease("c1", "a", seconds=60)
        assert not await journal.take_lease("c1", "b", seconds=60), "a running lease is not taken over"
        assert not await journal.renew_lease("c1", "b", seconds=60), "only its holder renews it"
        assert await journal.renew_lease("c1", "a", seconds=60)
        assert await journal.take_lease("c2", "b", seconds=60), "another conversation is free"
        await journal.release_lease("c1", "b")  # not b's: left alone
        assert not await journal.take_lease("c1", "b", seconds=60)
        await journal.release_lease("c1", "a")
        assert await journal.take_lease("c1", "b", seconds=0), "given back: free"
        assert await journal.take_lease("c1", "c", seconds=60), "expired: free"
        assert not await journal.renew_lease("c1", "b", seconds=60), "an expired holder has lost it"
    finally:
        await services.aclose()


def test_a_lease_is_taken_by_one_holder_until_it_expires_or_is_given_back(settings: Settings) -> None:
    asyncio.run(lease_scenario(settings))
    leases = rows(settings.checkpoints_path, "SELECT conversation_id, holder FROM conversation_leases ORDER BY 1")
    assert leases == LEFT_OVER


def test_prune_drops_expired_leases_and_keeps_running_ones(settings: Settings) -> None:
    asyncio.run(lease_scenario(settings))  # leaves c1 held by c and c2 held by b, both running
    with TriageApp(settings) as app:
        app.prune(older_than=timedelta(days=30))
    assert rows(settings.checkpoints_path, "SELECT conversation_id, holder FROM conversation_leases ORDER BY 1") == (
        LEFT_OVER
    )

    async def expire_one() -> None:  # c2's holder died: its lease ran out
        services = await Services.open(settings)
        try:
            await services.journal.release_lease("c2", "b")
            assert await services.journal.take_lease("c2", "dead", seconds=0)
        finally:
            await services.aclose()

    asyncio.run(expire_one())
    with TriageApp(settings) as app:
        app.prune(older_than=timedelta(days=30))
    leases = rows(settings.checkpoints_path, "SELECT conversation_id, holder FROM conversation_leases ORDER BY 1")
    assert leases == [{"conversation_id": "c1", "holder": "c"}]


def _race(settings: Settings, model_cache: Path, conversation_id: str, wait_seconds: float) -> list[dict[str, Any]]:
    return race_in_processes(
        follow_up, [(str(settings.home), str(model_cache), conversation_id, body, wait_seconds) for body in BODIES]
    )


@pytest.mark.slow
def test_follow_ups_raced_from_two_processes_become_two_turns_one_after_the_other(
    settings: Settings, model_cache: Path
) -> None:
    conversation_id = _conversation(settings)

    outcomes = _race(settings, model_cache, conversation_id, wait_seconds=60)

    assert all("error" not in o for o in outcomes), outcomes
    second, third = sorted(outcomes, key=lambda o: o["turn"])
    assert (second["turn"], third["turn"]) == (2, 3), outcomes
    # The later turn saw the earlier one finished: it ran after it, not beside it.
    assert third["earlier"] == [clip(f"{FIRST['subject']}\n{FIRST['body']}"), clip(second["body"])]
    requests = rows(
        settings.helpdesk_path,
        "SELECT kind FROM account_requests WHERE thread_id = ? ORDER BY created_at",
        (conversation_id,),
    )
    assert requests == [{"kind": "email_change"}, {"kind": "email_change"}]
    assert rows(settings.checkpoints_path, "SELECT * FROM conversation_leases") == [], "both leases given back"
    with TriageApp(settings) as app:
        thread = app.thread(conversation_id)
    assert thread.result.turn == 3 and thread.result.status == "completed"


@pytest.mark.slow
def test_a_follow_up_that_will_not_wait_is_refused_while_another_process_holds_the_conversation(
    settings: Settings, model_cache: Path
) -> None:
    conversation_id = _conversation(settings)

    outcomes = _race(settings, model_cache, conversation_id, wait_seconds=0)

    ran = [o for o in outcomes if "turn" in o]
    refused = [o for o in outcomes if "error" in o]
    # Both may run if the first finished before the second tried; never two at once.
    assert ran and sorted(o["turn"] for o in ran) == list(range(2, 2 + len(ran))), outcomes
    for loser in refused:
        assert loser["error"] == "ConversationBusyError", loser
        assert "taking another follow-up in another process" in loser["message"]


@contextlib.contextmanager
def held_elsewhere(settings: Settings, conversation_id: str, lease_seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the conversation's lease (taken when this yields) until the test kills it."""
    driver = Path(__file__).with_name("conversation_race_driver.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    holder = subprocess.Popen(
        [sys.executable, str(driver), str(settings.home), conversation_id, str(lease_seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().startswith("held ")
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


@pytest.mark.slow
def test_a_holder_killed_with_the_lease_blocks_the_conversation_only_until_it_expires(settings: Settings) -> None:
    conversation_id = _conversation(settings)
    with held_elsewhere(settings, conversation_id, lease_seconds=2) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        killed_at = time.monotonic()

        impatient = settings.model_copy(update={"conversation_wait_seconds": 0.0})
        with TriageApp(impatient) as app, pytest.raises(ConversationBusyError, match="in another process"):
            app.run({"body": BODIES[0], "conversation_id": conversation_id})
        with TriageApp(settings.model_copy(update={"conversation_wait_seconds": 10.0})) as app:
            result = app.run({"body": BODIES[0], "conversation_id": conversation_id})
        assert result.turn == 2 and result.status == "completed"
        assert time.monotonic() - killed_at < 8, "the dead holder's lease ran out after its period"


async def test_a_follow_up_between_a_steps_writes_and_its_checkpoint_in_another_app_is_refused_as_busy(
    settings: Settings,
) -> None:
    """A first turn holds no lease. Stopped after `validate`'s writes are saved and before the checkpoint after it,
    the thread shows no next node: the follow-up took it for ended and ran a turn of its own beside the running one
    (found by review). It is refused as busy, and the running turn ends as it would have."""
    running, impatient = TriageApp(settings), TriageApp(settings.model_copy(update={"conversation_wait_seconds": 0.0}))
    hold = HoldCheckpointWrite(at=5)  # the third checkpoint: `validate`'s writes (the fourth write) are saved
    try:
        (await running._portal.acall(running._get_engine())).services.saver.faults = hold
        first = asyncio.create_task(running.arun(FIRST))
        assert await asyncio.to_thread(hold.reached.wait, 30)
        (thread,) = rows(settings.checkpoints_path, "SELECT DISTINCT thread_id FROM checkpoints")
        with pytest.raises(ConversationBusyError, match="still running its last turn"):
            await impatient.arun({"body": BODIES[0], "conversation_id": thread["thread_id"]})
        shown = (await impatient.athread(thread["thread_id"])).result
        assert shown.status_reason is not None and "still running, or its process stopped" in shown.status_reason
        hold.release.set()
        ended = await first
    finally:
        hold.release.set()
        await running.aclose()
        await impatient.aclose()
    assert (ended.status, ended.turn) == ("completed", 1), ended
    forks = rows(
        settings.checkpoints_path,
        "SELECT parent_checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
        "GROUP BY parent_checkpoint_id HAVING COUNT(*) > 1",
        (ended.thread_id,),
    )
    assert forks == [], "one line of checkpoints: no turn ran beside the first"
