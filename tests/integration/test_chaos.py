"""Chaos: tickets run with 30% of tool calls failing or slowed by injected faults (and some checkpoint writes
failing). Every ticket ends terminal with a reason, or is recoverable and then recovered; transient faults are
retried with backoff, permanent ones are not; no effect happens twice.

The default run triages 60 tickets; the long variant 300: `pytest -m long tests/integration/test_chaos.py`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rows
from tests.integration.crash_worker import TICKETS
from tests.integration.invariants import effects_happened_once
from triage import TriageApp
from triage.errors import StoreUnavailableError, TriageError
from triage.schemas import RunResult
from triage.settings import Settings

TOOL_FAULTS = "transient=0.12,rate_limit=0.05,timeout=0.05,permanent=0.03,slow=0.05,slow_seconds=0.02"
CHECKPOINT_FAULTS = "transient=0.05,slow=0.02,slow_seconds=0.01"
MORE_TICKETS: list[dict[str, Any]] = [
    {"customer_id": "cus_failed_pay", "subject": "Card declined", "body": "My card payment failed, why?"},
    {"customer_id": "cus_refunded", "subject": "Refund", "body": "Where is my refund?"},
    {"customer_id": "cus_leaving", "subject": "Delete my account", "body": "Please delete my account and data."},
    {"subject": "Opening hours", "body": "When can I call you?"},
]


async def approve_or_recover(app: TriageApp, result: RunResult) -> RunResult:
    """One step forward for a thread that is not terminal."""
    if result.status == "awaiting_approval" and result.pending_approval is not None:
        approver = "sam" if result.pending_approval["approvals_received"] else "alice"
        return await app.aresume(result.thread_id, {"approver": approver, "decision": "approve", "reason": "ok"})
    return await app.arecover(result.thread_id)


def settled(result: RunResult) -> bool:
    return result.status in ("completed", "escalated") or (
        result.status == "failed" and result.failure_class == "permanent"
    )


def run_chaos(settings: Settings, count: int) -> dict[str, Any]:
    app = TriageApp(settings)
    figures: Counter[str] = Counter()
    retried: Counter[str] = Counter()

    def counted(result: RunResult) -> RunResult:
        retried.update(result.retries)
        return result

    async def one(ticket: dict[str, Any], gate: asyncio.Semaphore) -> RunResult:
        async with gate:
            for _ in range(10):
                try:
                    return counted(await app.arun(ticket))
                except StoreUnavailableError as exc:
                    assert exc.thread_id is None, "a run that started returns its thread"
                    figures["not_started_resubmitted"] += 1
            raise AssertionError("a ticket could not start in 10 tries")

    async def chaos() -> list[RunResult]:
        gate = asyncio.Semaphore(12)
        tickets = list(itertools.islice(itertools.cycle(TICKETS + MORE_TICKETS), count))
        results = list(await asyncio.gather(*(one(t, gate) for t in tickets)))
        for _ in range(12):
            pending = [r for r in results if not settled(r)]
            if not pending:
                break
            figures["recovery_steps"] += len(pending)
            for index, result in enumerate(results):
                if not settled(result):
                    try:
                        results[index] = counted(await approve_or_recover(app, result))
                    except TriageError:
                        results[index] = counted(await app.arecover(result.thread_id))
        return results

    try:
        app.warm_up()
        results = asyncio.run(chaos())
        engine = app._portal.call(app._get_engine())
        tool_faults = engine.services.gateway.faults
        checkpoint_faults = engine.services.saver.faults
        assert tool_faults is not None and checkpoint_faults is not None
        # Permanent failures are not retried: recover leaves them as they are.
        for result in results:
            if result.status == "failed":
                again = app.recover(result.thread_id)
                assert (again.status, again.status_reason) == (result.status, result.status_reason)
    finally:
        app.close()
    assert all(settled(r) for r in results), Counter((r.status, r.failure_class) for r in results)
    assert all(r.status_reason for r in results)
    failed = [r.thread_id for r in results if r.status == "failed"]
    for thread_id in failed:
        still_open = rows(
            settings.helpdesk_path,
            "SELECT id FROM refund_requests WHERE thread_id = ? AND status IN ('requested', 'approved')",
            (thread_id,),
        )
        assert still_open == [], "a failed run releases its refund requests"
    retries = sum(retried.values())
    assert retries > 0, "transient faults are retried by the nodes' retry policy"
    effects = effects_happened_once(settings)
    report = {
        "tickets": count,
        "terminal": sum(settled(r) for r in results),
        "by_status": dict(Counter(r.status for r in results)),
        "tool_faults": dict(tool_faults.injected),
        "checkpoint_faults": dict(checkpoint_faults.injected),
        "node_retries": retries,
        **figures,
        **effects,
    }
    print(f"\nchaos suite: {report}")
    return report


def chaos_settings(tmp_path: Path, model_cache: Path, seed: int) -> Settings:
    return Settings(
        home=tmp_path / "home",
        cache_home=model_cache,
        faults=f"{TOOL_FAULTS},seed={seed}",
        checkpoint_faults=f"{CHECKPOINT_FAULTS},seed={seed + 1}",
    )


@pytest.mark.slow
def test_chaos_every_ticket_ends_terminal_and_no_effect_twice(tmp_path: Path, model_cache: Path) -> None:
    report = run_chaos(chaos_settings(tmp_path, model_cache, seed=7), count=60)
    assert sum(report["tool_faults"].values()) > 0 and report["terminal"] == 60


@pytest.mark.long
def test_chaos_300_tickets(tmp_path: Path, model_cache: Path) -> None:
    report = run_chaos(chaos_settings(tmp_path, model_cache, seed=11), count=300)
    assert report["terminal"] == 300
