"""`crash HOME CACHE THREAD` runs a ticket and SIGKILLs itself right after `finish`'s writes are saved (before the
checkpoint that ends its step); `recover HOME CACHE THREAD` recovers the thread and prints its status and the
customer's recent turns (`tests/integration/test_customer_memory.py`)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from triage import TriageApp
from triage.checkpoints import CheckpointSaver
from triage.settings import Settings

TICKET = {"customer_id": "cus_new", "subject": "Hours", "body": "When is your support team open?"}


def main(argv: list[str]) -> None:
    mode, home, cache, thread_id = argv[:4]
    app = TriageApp(Settings(home=Path(home), cache_home=Path(cache)))
    if mode == "crash":
        original = CheckpointSaver.aput_writes

        async def aput_writes(
            self: CheckpointSaver, config: Any, writes: Any, task_id: str, task_path: str = ""
        ) -> None:
            await original(self, config, writes, task_id, task_path)
            if any(channel == "conversation" for channel, _ in writes):  # finish's writes are saved
                os.kill(os.getpid(), signal.SIGKILL)

        CheckpointSaver.aput_writes = aput_writes  # type: ignore[method-assign]
        app.run(TICKET, thread_id=thread_id)
        print("not killed")
    else:
        result = app.recover(thread_id)
        memory = app.customer_memory("cus_new") or {}
        recent = [[turn["thread_id"], turn["turn"]] for turn in memory.get("recent", [])]
        print(json.dumps({"status": result.status, "recent": recent}))
    app.close()


if __name__ == "__main__":
    main(sys.argv[1:])
