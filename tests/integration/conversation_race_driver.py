"""Run in spawned processes by test_conversation_leases: follow-ups raced from separate processes, and a holder
that is killed while it holds a conversation's lease."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from triage import TriageApp
from triage.errors import TriageError
from triage.settings import Settings


def follow_up(
    home: str, cache: str, conversation_id: str, body: str, wait_seconds: float, barrier: Any, results: Any
) -> None:
    """Send a follow-up to `conversation_id` the moment every racer is ready; report what happened."""
    settings = Settings(home=Path(home), cache_home=Path(cache), conversation_wait_seconds=wait_seconds)
    app = TriageApp(settings)
    try:
        app.warm_up()
        app.thread(conversation_id)  # the stores are open before the race starts
        barrier.wait(timeout=120)
        started = time.monotonic()
        try:
            result = app.run({"body": body, "conversation_id": conversation_id})
        except TriageError as exc:
            results.put({"body": body, "error": type(exc).__name__, "message": str(exc)})
        else:
            results.put(
                {
                    "body": body,
                    "turn": result.turn,
                    "status": result.status,
                    "earlier": [t["message"] for t in result.conversation],
                    "seconds": time.monotonic() - started,
                }
            )
    finally:
        app.close()


async def _hold(home: str, conversation_id: str, lease_seconds: float) -> None:
    from triage.leases import hold_conversation
    from triage.services import Services

    services = await Services.open(Settings(home=Path(home)))
    async with hold_conversation(
        services.journal, conversation_id, lease_seconds=lease_seconds, wait_seconds=0
    ) as holder:
        print(f"held {holder}", flush=True)
        await asyncio.sleep(3600)  # until killed


if __name__ == "__main__":
    asyncio.run(_hold(sys.argv[1], sys.argv[2], float(sys.argv[3])))
