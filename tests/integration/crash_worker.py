"""Run in subprocesses by test_crashes.

`work HOME CACHE SEED`: triage tickets and approve what pauses, in a loop, until the test SIGKILLs it.
`zygote CACHE` (as `python -m tests.integration.crash_worker`): import everything once, then fork a `work HOME SEED`
child (`work` for HOME SEED) per request (`tests.integration.zygote`): kills stay cheap on a busy machine.
`batch HOME CACHE N`: triage N tickets (approving what pauses) and print their statuses as JSON.
`recover CACHE HOME...`: from a fresh process, give every thread of every home its way forward (recover what is
not terminal, then approve what waits), and print what it found as JSON.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from triage import TriageApp
from triage.schemas import RunResult
from triage.settings import Settings

TICKETS: list[dict[str, Any]] = [
    {"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "You charged me twice for my order."},
    {"customer_id": "cus_large_dup", "subject": "Double charge", "body": "The same charge appears twice."},
    {"customer_id": "cus_small_dup", "subject": "Charged twice", "body": "I was billed twice this month."},
    {"customer_id": "cus_locked", "subject": "Locked out", "body": "My account is locked after some attempts."},
    {"subject": "Password", "body": "How do I reset my password?"},
    {"customer_id": "cus_angry", "subject": "Terrible", "body": "This is the worst service, I want a manager now!"},
]


def approve_all(app: TriageApp, result: RunResult) -> RunResult:
    """Approve a paused thread until it goes on: alice first, the supervisor sam for a dual tier's second."""
    for _ in range(4):
        if result.status != "awaiting_approval" or result.pending_approval is None:
            break
        approver = "sam" if result.pending_approval["approvals_received"] else "alice"
        result = app.resume(result.thread_id, {"approver": approver, "decision": "approve", "reason": "checked"})
    return result


def work(home: str, cache: str, seed: int) -> None:
    app = TriageApp(Settings(home=Path(home), cache_home=Path(cache)))
    app.warm_up()
    print("ready", flush=True)
    tickets = list(TICKETS)
    random.Random(seed).shuffle(tickets)
    started = 0
    while True:
        for ticket in tickets:
            started += 1
            print(f"start {started}", flush=True)
            approve_all(app, app.run(ticket))


def batch(home: str, cache: str, count: int) -> None:
    app = TriageApp(Settings(home=Path(home), cache_home=Path(cache)))
    try:
        statuses = []
        for number in range(count):
            result = approve_all(app, app.run(TICKETS[number % len(TICKETS)]))
            statuses.append({"thread_id": result.thread_id, "status": result.status, "reason": result.status_reason})
    finally:
        app.close()
    print(json.dumps(statuses))


def recover(cache: str, homes: list[str]) -> None:
    report = []
    for home in homes:
        app = TriageApp(Settings(home=Path(home), cache_home=Path(cache)))
        try:
            before = Counter(t.status for t in app.threads(limit=10_000))
            continued = 0
            for thread in app.threads(limit=10_000):
                if thread.status in ("completed", "escalated"):
                    continue
                result = app.recover(thread.thread_id)
                continued += thread.status != "awaiting_approval" or result.status != "awaiting_approval"
                approve_all(app, result)
            after = Counter(t.status for t in app.threads(limit=10_000))
        finally:
            app.close()
        report.append({"home": home, "before": before, "after": after, "continued": continued})
    print(json.dumps(report))


if __name__ == "__main__":
    if sys.argv[1] == "work":
        work(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "zygote":
        from tests.integration.zygote import serve

        serve(lambda args: work(args[0], sys.argv[2], int(args[1])))
    elif sys.argv[1] == "batch":
        batch(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        recover(sys.argv[2], sys.argv[3:])
