"""Run in a subprocess by test_recover_races: approve a paused refund, and stall the whole process after it.

Once the refund is made, just before the step's result is saved, the process prints `stalled` and blocks its event
loop on reading a line from stdin: nothing of it runs meanwhile, its lease's renewal neither (as in a stopped VM or
a process paused by a swap storm). The test lets the lease run out, has another process take the thread and finish
it, and then sends the line. The process prints what its decision ended with: `finished STATUS`, or
`stopped ERROR: MESSAGE`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from triage import TriageApp
from triage.checkpoints import SqliteSaver
from triage.errors import TriageError
from triage.gateway import ToolGateway
from triage.settings import Settings


def main() -> None:
    home, cache, thread_id, lease_seconds = sys.argv[1:5]
    call, save, refunded = ToolGateway.call, SqliteSaver.aput_writes, []

    async def refund(self: ToolGateway, caller: str, tool: str, *args: Any, **kwargs: Any) -> Any:
        result = await call(self, caller, tool, *args, **kwargs)
        if tool == "issue_refund":
            refunded.append(kwargs["thread_id"])
        return result

    async def stall_then_save(self: SqliteSaver, *args: Any, **kwargs: Any) -> None:
        if refunded:  # the refund's step saves its result next
            refunded.clear()
            print("stalled", flush=True)
            sys.stdin.readline()  # blocks the event loop: the process is stalled, not waiting
        await save(self, *args, **kwargs)

    ToolGateway.call = refund  # type: ignore[method-assign]
    SqliteSaver.aput_writes = stall_then_save  # type: ignore[method-assign]
    settings = Settings(home=Path(home), cache_home=Path(cache), conversation_lease_seconds=float(lease_seconds))
    with TriageApp(settings) as app:
        try:
            done = app.resume(thread_id, {"approver": "alice", "decision": "approve", "reason": "checked"})
        except TriageError as exc:
            print(f"stopped {type(exc).__name__}: {exc}", flush=True)
        else:
            print(f"finished {done.status}", flush=True)


if __name__ == "__main__":
    main()
