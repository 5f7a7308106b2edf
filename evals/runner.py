"""Run evaluation cases through the real `TriageApp`: compiled graph, SQLite checkpointer, seeded helpdesk.

Every case gets its own temporary home with a fresh copy of the seeded helpdesk, so a refund requested by one case
cannot change what another case sees, and the figures do not depend on the order in which concurrent cases finish.
The trained classifier is shared through one cache folder. Thread ids are derived from case ids.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triage.app import TriageApp
from triage.errors import TriageError
from triage.evals.dataset import EvalCase
from triage.evals.evaluators import evaluate_case
from triage.evals.metrics import CaseEvaluation, attach_retries
from triage.schemas import RunResult, TimelineEntry
from triage.settings import Settings
from triage.telemetry import AttemptCounter

__all__ = ["DEFAULT_CONCURRENCY", "CaseRun", "EvalRun", "run_cases"]

DEFAULT_CONCURRENCY = 8
"""How many cases run at once."""


@dataclass(frozen=True)
class CaseRun:
    """One case after its run: the result, the timeline read back from the checkpoints, and its evaluation."""

    case: EvalCase
    result: RunResult | None
    timeline: list[TimelineEntry]
    evaluation: CaseEvaluation


@dataclass(frozen=True)
class EvalRun:
    """All cases of one evaluation, in dataset order."""

    runs: list[CaseRun]
    wall_time_s: float
    policy_version: str
    model_tier: str = "local"
    evaluations: list[CaseEvaluation] = field(default_factory=list)


async def run_cases(
    cases: Sequence[EvalCase],
    *,
    settings: Settings | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_done: Callable[[CaseRun], None] | None = None,
    workdir: Path | None = None,
) -> EvalRun:
    """Run every case concurrently (at most `concurrency` at a time) and evaluate it.

    Args:
        cases: The cases, in the order the results should come back.
        settings: Where the classifier cache and policy bundle come from (`cache_home`, `policy_dir`); the
            home is always a temporary folder.
        concurrency: Cases in flight at once.
        on_done: Called after each case, e.g. to advance a progress bar.
        workdir: Keep the per-case homes here instead of a deleted temporary folder (for debugging).

    Raises:
        PolicyFileError: the policy folder in `settings` is invalid.
    """
    from triage.policies import load_policy_bundle

    base = settings or Settings()
    policy_version = load_policy_bundle(base.policy_dir).version
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="triage-eval-") as tmp:
        root = workdir or Path(tmp)
        cache = base.cache_dir if base.cache_home or base.home.exists() else root / "cache"
        template = root / "template"
        await _seed_template(base.model_copy(update={"home": template, "cache_home": cache}))
        semaphore = asyncio.Semaphore(max(1, concurrency))

        async def one(index: int, case: EvalCase) -> CaseRun:
            async with semaphore:
                home = root / "cases" / f"{index:05d}"
                _copy_helpdesk(template, home)
                run = await _run_case(case, base.model_copy(update={"home": home, "cache_home": cache}))
                if workdir is None:
                    shutil.rmtree(home, ignore_errors=True)
            if on_done is not None:
                on_done(run)
            return run

        runs = await asyncio.gather(*(one(i, case) for i, case in enumerate(cases)))
    # The version the runs themselves recorded is authoritative; the bundle read above covers a run with none.
    recorded = {run.result.policy_version for run in runs if run.result is not None and run.result.policy_version}
    return EvalRun(
        runs=list(runs),
        wall_time_s=round(time.perf_counter() - started, 2),
        policy_version=recorded.pop() if len(recorded) == 1 else policy_version,
        model_tier="+".join(["local", *(m for m in (base.cheap_model, base.strong_model) if m)])
        + ("(all-to-model)" if base.all_to_model and base.cheap_model else ""),
        evaluations=[run.evaluation for run in runs],
    )


async def _seed_template(settings: Settings) -> None:
    """Create and seed one helpdesk, and train (or load) the classifier once, before the cases start."""
    app = TriageApp(settings)
    try:
        await app.arun({"subject": "warm-up", "body": "What are your opening hours?"}, thread_id="eval-warm-up")
    finally:
        await app.aclose()


def _copy_helpdesk(template: Path, home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    for file in template.glob("helpdesk.sqlite*"):
        shutil.copy2(file, home / file.name)


DEFAULT_APPROVERS = ("alice", "sam")
"""Who answers unscripted approvals, in order: an agent, then a supervisor (enough for a dual approval)."""
MAX_APPROVAL_ROUNDS = 6


async def answer_approvals(
    app: TriageApp, result: RunResult, case: EvalCase, *, callbacks: list[Any] | None = None
) -> tuple[RunResult, tuple[str, ...]]:
    """Answer every approval the run pauses on from the case's script (default: approve, alice then sam).

    Returns the final result and the tiers of the approvals asked for, in order.
    """
    script = list(case.approver_script or [])
    tiers: list[str] = []
    rounds = 0
    while result.status == "awaiting_approval" and result.pending_approval and rounds < MAX_APPROVAL_ROUNDS:
        pending = result.pending_approval
        if pending["approval_id"] not in {t.split(":", 1)[0] for t in tiers}:
            tiers.append(f"{pending['approval_id']}:{pending['tier']}")
        step = script.pop(0) if script else None
        decision = step.decision if step else "approve"
        approver = (step.approver if step else None) or DEFAULT_APPROVERS[
            min(len(pending["approvals_received"]), len(DEFAULT_APPROVERS) - 1)
        ]
        result = await app.aresume(
            result.thread_id,
            {
                "approver": approver,
                "decision": decision,
                "reason": step.reason if step else "approved by the eval's default approver",
                "args": step.args if step else None,
            },
            callbacks=callbacks,
        )
        rounds += 1
    return result, tuple(t.split(":", 1)[1] for t in tiers)


async def _run_case(case: EvalCase, settings: Settings) -> CaseRun:
    app = TriageApp(settings)
    started = time.perf_counter()
    result: RunResult | None = None
    tiers: tuple[str, ...] = ()
    retries: dict[str, int] = {}
    timeline: list[TimelineEntry] = []
    error: str | None = None
    try:
        # Load the classifier first so that its start-up cost is not charged to the `classify` node.
        await asyncio.to_thread(app.warm_up)
        started = time.perf_counter()
        thread_id = f"eval-{case.id}"
        attempts = AttemptCounter()
        result = await app.arun(case.ticket, thread_id=thread_id, callbacks=[attempts])
        result, tiers = await answer_approvals(app, result, case, callbacks=[attempts])
        retries = attempts.retries()
        latency_ms = (time.perf_counter() - started) * 1000
        timeline = (await app.athread(thread_id)).timeline
    except TriageError as exc:
        latency_ms = (time.perf_counter() - started) * 1000
        error = f"{type(exc).__name__}: {exc}"
    finally:
        await app.aclose()
    if result is not None and result.duration_ms is not None:
        latency_ms = result.duration_ms
    evaluation = evaluate_case(
        case, result, timeline, latency_ms=latency_ms, error=error, approval_tiers=tiers if result else ()
    )
    evaluation = attach_retries(evaluation, retries)
    return CaseRun(case=case, result=result, timeline=timeline, evaluation=evaluation)
