"""Run in a subprocess by test_exactly_once: triage a duplicate charge and approve the refund, SIGKILLing this
process at a chosen point; or recover the thread afterwards from a fresh process.

`count|crash|recover HOME CACHE THREAD [POINT]` runs once; `zygote` (run as `python -m tests.integration.crash_driver`)
imports all this once and forks a fresh process for each such run the test asks for (see `tests.integration.zygote`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from triage import TriageApp
from triage.checkpoints import CheckpointSaver
from triage.journal import Journal
from triage.settings import Settings

TICKET = {"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "You charged me twice for my order."}
APPROVAL = {"approver": "alice", "decision": "approve", "reason": "duplicate confirmed"}


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(crash_at: str) -> None:
    """`checkpoint:N` dies right after the N-th checkpoint write; `writes:N` right after the N-th save of a node's
    writes (before the checkpoint that applies them); `claim` after the approval decision is recorded
    but before the graph takes it in; `effect` after the refund is made but before the ledger records it; `ledger`
    after the ledger records it but before the executor's checkpoint."""
    kind, _, number = crash_at.partition(":")
    if kind == "writes":  # a node's writes are saved, the checkpoint that applies them is not: `next` looks empty
        target, original_writes = int(number), CheckpointSaver.aput_writes
        saved = 0

        async def aput_writes(self: CheckpointSaver, *args: Any, **kwargs: Any) -> Any:
            nonlocal saved
            result = await original_writes(self, *args, **kwargs)
            saved += 1
            if saved == target:
                _die()
            return result

        CheckpointSaver.aput_writes = aput_writes  # type: ignore[method-assign]
    elif kind == "checkpoint":
        target, original = int(number), CheckpointSaver.aput
        count = 0

        async def aput(self: CheckpointSaver, *args: Any, **kwargs: Any) -> Any:
            nonlocal count
            result = await original(self, *args, **kwargs)
            count += 1
            if count == target:
                _die()
            return result

        CheckpointSaver.aput = aput  # type: ignore[method-assign]
    elif kind == "claim":
        claim = Journal.claim

        async def claim_then_die(self: Journal, *args: Any, **kwargs: Any) -> Any:
            await claim(self, *args, **kwargs)
            _die()

        Journal.claim = claim_then_die  # type: ignore[method-assign]
    elif kind in ("effect", "ledger"):
        record = Journal.record_effect

        async def record_effect(self: Journal, *args: Any, **kwargs: Any) -> Any:
            if kind == "effect":
                _die()
            result = await record(self, *args, **kwargs)
            _die()
            return result

        Journal.record_effect = record_effect  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    mode, home, cache, thread_id = argv[:4]
    # A process killed while it holds a thread (a resume, a recover) lets go after 2 s, not the default 30.
    app = TriageApp(Settings(home=Path(home), cache_home=Path(cache), conversation_lease_seconds=2.0))
    if mode == "count":
        original, writes = CheckpointSaver.aput, []

        async def aput(self: CheckpointSaver, *args: Any, **kwargs: Any) -> Any:
            writes.append(1)
            return await original(self, *args, **kwargs)

        CheckpointSaver.aput = aput  # type: ignore[method-assign]
    if mode in ("crash", "count"):
        if mode == "crash":
            arm(argv[4])
        result = app.run(TICKET, thread_id=thread_id)
        result = app.resume(thread_id, APPROVAL)
        print(json.dumps({"status": result.status, "checkpoints": len(writes) if mode == "count" else None}))
    else:  # recover: finish whatever the crash left, approving once more if the crash came before the decision
        result = app.recover(thread_id)
        for _ in range(3):
            if result.status != "awaiting_approval":
                break
            result = app.resume(thread_id, APPROVAL)
        print(json.dumps({"status": result.status, "actions": [a.kind for a in result.actions]}))
    app.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["zygote"]:
        from tests.integration.zygote import serve

        serve(main)
    else:
        main(sys.argv[1:])
