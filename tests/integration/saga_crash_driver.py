"""Run in a subprocess by test_account_change_crashes: carry out an account change whose last step fails, SIGKILLing
this process at a chosen point of the rollback; or recover the thread afterwards from a fresh process."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from triage import TriageApp
from triage.gateway import ToolGateway
from triage.journal import Journal
from triage.settings import Settings

TICKETS = {
    "plan_change": {
        "customer_id": "cus_plan_team",
        "subject": "Upgrade from Team to Business",
        "body": "We need SSO now, so we'd like to move from the Team plan to Business.",
    },
    "closure": {
        "customer_id": "cus_small_dup",
        "subject": "Close account",
        "body": "I want to close my Northwind account permanently.",
    },
}
COMPENSATIONS = {"revert_subscription_change", "void_account_credit", "revert_seat_change", "cancel_period_refund"}
COMPENSATIONS |= {"cancel_data_jobs"}


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    """`rollback`: die once the decision to roll back is recorded, before any compensation; `undo-call:N`: after the
    N-th compensation took effect in the helpdesk, before the ledger records it; `compensation:N`: after the ledger
    records the N-th compensation, before the next one."""
    kind, _, number = point.partition(":")
    count = 0
    if kind in ("rollback", "compensation"):
        record = Journal.record_effect

        async def record_effect(self: Journal, *args: Any, **kwargs: Any) -> Any:
            nonlocal count
            result = await record(self, *args, **kwargs)
            if kind == "rollback" and kwargs["kind"] == "rollback":
                _die()
            if kind == "compensation" and kwargs["kind"].startswith("compensation:"):
                count += 1
                if count == int(number):
                    _die()
            return result

        Journal.record_effect = record_effect  # type: ignore[method-assign]
    elif kind == "undo-call":
        call = ToolGateway.call

        async def call_then_die(self: ToolGateway, caller: str, tool: str, *args: Any, **kwargs: Any) -> Any:
            nonlocal count
            result = await call(self, caller, tool, *args, **kwargs)
            if tool in COMPENSATIONS:
                count += 1
                if count == int(number):
                    _die()
            return result

        ToolGateway.call = call_then_die  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown crash point {point!r}")


def main() -> None:
    mode, home, cache, thread_id, change = sys.argv[1:6]
    # A process killed while it holds a thread (a resume, a recover) lets go after 2 s, not the default 30.
    app = TriageApp(Settings(home=Path(home), cache_home=Path(cache), conversation_lease_seconds=2.0))
    if mode == "crash":
        arm(sys.argv[6])
        result = app.run(TICKETS[change], thread_id=thread_id)
    else:
        result = app.recover(thread_id)
    for approver in ("alice", "sam"):
        if result.status == "awaiting_approval":
            result = app.resume(thread_id, {"approver": approver, "decision": "approve", "reason": "checked"})
    print(json.dumps({"status": result.status, "reason": result.status_reason}))
    app.close()


if __name__ == "__main__":
    main()
