"""Drives a conversation's second turn in a process of its own and SIGKILLs it at a chosen checkpoint write.

`turn1|prepare|crash|crash-run2|recover HOME CACHE THREAD SCENARIO [POINT]` (`zygote` serves them from a forked
child each). `turn1` runs turn 1; `prepare` runs turn 1 and turn 2 to its approval; `crash-run2` runs turn 2 and
dies after the POINT-th saved set of writes (`writes:N`); `crash` gives turn 2 its approvals and dies likewise;
`recover` recovers the thread and approves what it still asks. Each prints a line of JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tests.integration.crash_worker import approve_all
from triage import TriageApp
from triage.checkpoints import CheckpointSaver
from triage.settings import Settings

HOURS = {"subject": "Hours", "body": "What are your opening hours?"}
DUPLICATE = {"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "You charged me twice for my order."}
PLAN_CHANGE = {
    "customer_id": "cus_plan_team",
    "subject": "Upgrade from Team to Business",
    "body": "We need SSO now, so we'd like to move from the Team plan to Business.",
}
BACK = {
    **PLAN_CHANGE,
    "subject": "Back to Team",
    "body": "Business is too much for us, please move us back to the Team plan.",
}
SECOND = {"refund": DUPLICATE, "plan_rollback": BACK}
FAULTS = {"plan_rollback": "fail=confirm_account_change"}
"""Turn 2's change fails at its last step, and is rolled back."""


def arm(point: str) -> None:
    """Die right after the N-th `aput_writes` of this process (`writes:N`)."""
    kind, _, number = point.partition(":")
    if kind != "writes":
        raise SystemExit(f"unknown crash point {point!r}")
    original, count = CheckpointSaver.aput_writes, 0

    async def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal count
        result = await original(self, *args, **kwargs)
        count += 1
        if count == int(number):
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    CheckpointSaver.aput_writes = patched  # type: ignore[method-assign]


def turn1(app: TriageApp, thread_id: str, scenario: str) -> None:
    if scenario == "refund":
        first = app.run({**HOURS, "customer_id": "cus_mid_dup"}, thread_id=thread_id)
    else:
        first = approve_all(app, app.run(PLAN_CHANGE, thread_id=thread_id))
    assert first.status == "completed", first.status_reason


def main(argv: list[str]) -> None:
    mode, home, cache, thread_id, scenario = argv[:5]
    faults = None if mode in ("turn1", "prepare") else FAULTS.get(scenario)
    # A killed turn's hold on the conversation runs out after 2 s: `recover` waits that out, not the default 30.
    settings = Settings(home=Path(home), cache_home=Path(cache), faults=faults, conversation_lease_seconds=2.0)
    app = TriageApp(settings)
    second = {**SECOND[scenario], "conversation_id": thread_id}
    if mode == "turn1":
        turn1(app, thread_id, scenario)
        result = app.thread(thread_id).result
    elif mode == "prepare":
        turn1(app, thread_id, scenario)
        result = app.run(second)
        assert result.status == "awaiting_approval" and result.turn == 2, (result.status, result.status_reason)
    elif mode == "crash-run2":
        arm(argv[5])
        result = approve_all(app, app.run(second))
    elif mode == "crash":
        arm(argv[5])
        result = approve_all(app, app.thread(thread_id).result)
    else:
        result = approve_all(app, app.recover(thread_id))
    print(json.dumps({"status": result.status, "reason": result.status_reason, "turn": result.turn}))
    app.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["zygote"]:
        from tests.integration.zygote import serve

        serve(main)
    else:
        main(sys.argv[1:])
