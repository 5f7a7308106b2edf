"""Run in a subprocess by test_release_crashes: follow up a release, SIGKILLing this process at a chosen point.

The kill is synchronised on the point itself, never on time: the hook that reaches it prints `killed at POINT` and
kills the process from inside, so the test knows the kill landed in the window it meant (an earlier death would not
print the line). Recovery runs afterwards from a fresh process (`triage recover`).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from triage import TriageApp
from triage.checkpoints import SqliteSaver
from triage.gateway import ToolGateway
from triage.journal import Journal
from triage.settings import Settings


def _die(point: str) -> None:
    print(f"killed at {point}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    """Kill the process at `point`.

    - `call:TOOL:N`: the N-th call of TOOL (close_ticket, send_message, note_ticket) took effect in the helpdesk; the
      effects ledger has not recorded it;
    - `ledger:KIND:N`: the ledger recorded the N-th effect of KIND (ticket_closed, release_notification,
      ticket_noted); whatever comes next (the next close, the first outbox write, ...) has not run;
    - `audit:EVENT:N`: the N-th audit line EVENT (release_followup) of a conversation is written, the next is not;
    - `checkpoint:N`: the N-th checkpoint is written.
    """
    kind, _, rest = point.partition(":")
    name, _, number = rest.rpartition(":")
    target, count = int(number), 0

    def reached() -> None:
        nonlocal count
        count += 1
        if count == target:
            _die(point)

    if kind == "call":
        call = ToolGateway.call

        async def call_then_die(self: ToolGateway, caller: str, tool: str, *args: Any, **kwargs: Any) -> Any:
            result = await call(self, caller, tool, *args, **kwargs)
            if tool == name:
                reached()
            return result

        ToolGateway.call = call_then_die  # type: ignore[method-assign]
    elif kind == "ledger":
        record = Journal.record_effect

        async def record_then_die(self: Journal, *args: Any, **kwargs: Any) -> Any:
            result = await record(self, *args, **kwargs)
            if kwargs["kind"] == name:
                reached()
            return result

        Journal.record_effect = record_then_die  # type: ignore[method-assign]
    elif kind == "audit":
        audit = Journal.audit

        async def audit_then_die(self: Journal, thread_id: str, event: str, **kwargs: Any) -> None:
            await audit(self, thread_id, event, **kwargs)
            if event == name:
                reached()

        Journal.audit = audit_then_die  # type: ignore[method-assign]
    elif kind == "checkpoint":
        put = SqliteSaver.aput  # the saver the app uses (it does not call LangGraph's `aput`)

        async def put_then_die(self: SqliteSaver, *args: Any, **kwargs: Any) -> Any:
            result = await put(self, *args, **kwargs)
            reached()
            return result

        SqliteSaver.aput = put_then_die  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown crash point {point!r}")


def main() -> None:
    home, cache, thread_id, version, fixes, notes, point = sys.argv[1:8]
    # A process killed while it holds a thread (a resume, a recover) lets go after 2 s, not the default 30.
    app = TriageApp(Settings(home=Path(home), cache_home=Path(cache), conversation_lease_seconds=2.0))
    app.warm_up()
    if point != "none":
        arm(point)
    result = app.release(version, fixes, notes, thread_id=thread_id)
    print(f"finished {result.status}", flush=True)
    app.close()


if __name__ == "__main__":
    main()
