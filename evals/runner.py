"""Run evaluation cases through the real `TriageApp`: compiled graph, SQLite checkpointer, seeded helpdesk.

Every case gets its own temporary home with a fresh copy of the seeded helpdesk, so a refund requested by one case
cannot change what another case sees, and the figures do not depend on the order in which concurrent cases finish.
The model tier is loaded and the graph compiled once, and shared by every case's app. Thread ids are derived from
case ids.

Latency figures are each run's own wall time (`RunResult.duration_ms`: the graph from input to its end or pause,
approvals answered included). They measure the graph rather than contention only when cases run one at a time,
which is the default: on a small machine, cases run concurrently mostly wait for each other's CPU.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from triage.app import CompiledGraphs, TriageApp
from triage.errors import TriageError
from triage.evals.dataset import EvalCase
from triage.evals.evaluators import EFFECT_KINDS, describe_action, evaluate_case
from triage.evals.metrics import CaseEvaluation, attach_retries
from triage.models.tier import LocalModelTier, ModelTier
from triage.policies import PolicyBundle
from triage.policies.account import SAGA_KINDS
from triage.schemas import RunResult, TimelineEntry
from triage.settings import Settings
from triage.telemetry import AttemptCounter

__all__ = ["DEFAULT_CONCURRENCY", "Approvals", "CaseRun", "EvalRun", "oracle_decision", "run_cases"]

DEFAULT_CONCURRENCY = 1
"""How many cases run at once. One: the work is CPU-bound in one process, so more cases in flight do not finish
sooner on a few cores, and each case's latency would include the time it waits for the others."""


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
    model_version: str | None = None
    """Fingerprint of the model that classified the cases (None when the runs recorded several or none)."""
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
    policy = load_policy_bundle(base.policy_dir)
    policy_version = policy.version
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="triage-eval-") as tmp:
        root = workdir or Path(tmp)
        cache = base.cache_dir if base.cache_home or base.home.exists() else root / "cache"
        # Every case decides with the home's active model (a trained one, or the packaged one).
        shared = {"cache_home": cache, "models_home": base.models_dir}
        template = root / "template"
        models = _shared_models(base, cache, policy)
        graphs = CompiledGraphs()  # compiled once here, for every case's app: not per case
        await _seed_template(base.model_copy(update={"home": template, **shared}), models, graphs, root / "blank")
        semaphore = asyncio.Semaphore(max(1, concurrency))

        async def one(index: int, case: EvalCase) -> CaseRun:
            async with semaphore:
                home = root / "cases" / f"{index:05d}"
                _copy_stores(template, root / "blank", home)
                run = await _run_case(
                    case, base.model_copy(update={"home": home, "faults": case.faults, **shared}), models, graphs
                )
                if workdir is None:
                    shutil.rmtree(home, ignore_errors=True)
            if on_done is not None:
                on_done(run)
            return run

        runs = await asyncio.gather(*(one(i, case) for i, case in enumerate(cases)))
    # The version the runs themselves recorded is authoritative; the bundle read above covers a run with none.
    recorded = {run.result.policy_version for run in runs if run.result is not None and run.result.policy_version}
    versions = {run.result.model_version for run in runs if run.result is not None}
    return EvalRun(
        runs=list(runs),
        wall_time_s=round(time.perf_counter() - started, 2),
        policy_version=recorded.pop() if len(recorded) == 1 else policy_version,
        model_version=versions.pop() if len(versions) == 1 else None,
        model_tier="+".join(["local", *(m for m in (base.cheap_model, base.strong_model) if m)])
        + ("(all-to-model)" if base.all_to_model and base.cheap_model else ""),
        evaluations=[run.evaluation for run in runs],
    )


def _shared_models(settings: Settings, cache: Path, policy: PolicyBundle) -> ModelTier:
    """The model tiers every case's app uses (the active local model, and any configured models): loaded once."""
    from triage.models.cascade import build_model_tier

    return build_model_tier(LocalModelTier(cache, settings.models_dir), settings, policy)


async def _seed_template(settings: Settings, models: ModelTier, graphs: CompiledGraphs, blank: Path) -> None:
    """Create and seed one helpdesk, and train (or load) the classifier once, before the cases start.

    The checkpoint store as created, before the warm-up ticket, is kept in `blank`: each case starts from a copy of
    it, which costs a fraction of creating its tables (and the memory store's) again.
    """
    app = TriageApp(settings, models=models, graphs=graphs)
    try:
        await asyncio.to_thread(app.warm_up)
    finally:
        await app.aclose()
    blank.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(_copy_files, settings.home, "checkpoints.sqlite*", blank)
    app = TriageApp(settings, models=models, graphs=graphs)
    try:
        await app.arun({"subject": "warm-up", "body": "What are your opening hours?"}, thread_id="eval-warm-up")
    finally:
        await app.aclose()


def _copy_stores(template: Path, blank: Path, home: Path) -> None:
    """A case's home: the seeded helpdesk and an empty checkpoint store."""
    home.mkdir(parents=True, exist_ok=True)
    _copy_files(template, "helpdesk.sqlite*", home)
    _copy_files(blank, "checkpoints.sqlite*", home)


def _copy_files(source: Path, pattern: str, target: Path) -> None:
    for file in source.glob(pattern):
        shutil.copy2(file, target / file.name)


DEFAULT_APPROVERS = ("alice", "sam")
"""Who answers unscripted approvals, in order: an agent, then a supervisor (enough for a dual approval)."""
MAX_APPROVAL_ROUNDS = 6


@dataclass(frozen=True)
class Approvals:
    """How a run's approvals were answered.

    Attributes:
        result: The run's final result.
        tiers: The tiers of the approvals asked for, in order.
        unsafe_stopped: Effects (refunds, deletions, exports) the case does not expect that were proposed and
            rejected at approval: the approval step did its job.
    """

    result: RunResult
    tiers: tuple[str, ...]
    unsafe_stopped: int = 0


def oracle_decision(case: EvalCase, pending: Mapping[str, Any]) -> tuple[Literal["approve", "reject"], str]:
    """The eval's default approver: approve exactly what the case expects, reject everything else.

    An effect (`refund`, `account_deletion`, `data_export`) is approved when the case expects that action with
    the same key arguments (e.g. the refund's amount); a low-confidence `reply` when the case expects a message (or
    states no actions at all, as route-only cases do). Returns the decision and the reason recorded with it.
    """
    action, args = str(pending["action"]), dict(pending.get("args") or {})
    expected = case.expected.actions
    if action == "reply":
        if expected is None or any(a.kind == "message" for a in expected):
            return "approve", "oracle: the case expects a reply"
        return "reject", "oracle: the case expects no reply"
    change = case.expected.change
    if action in SAGA_KINDS:
        if change is not None and change.kind == action:
            return "approve", f"oracle: the case expects {action}"
        return "reject", f"oracle: the case does not expect {action}"
    wanted = [a for a in expected or [] if a.kind == action]
    if any(all(args.get(key) == value for key, value in a.key_args().items()) for a in wanted):
        return "approve", f"oracle: the case expects {action}"
    shown = describe_action(action, {"amount_cents": args["amount_cents"]} if "amount_cents" in args else {})
    return "reject", f"oracle: the case does not expect {shown}"


async def answer_approvals(
    app: TriageApp, result: RunResult, case: EvalCase, *, callbacks: Callable[[], list[Any]] | None = None
) -> Approvals:
    """Answer every approval the run pauses on: from the case's script, else as `oracle_decision` says.

    Default approvers are alice, then sam for a second approval. `callbacks` makes fresh callback handlers for
    each resume (a resume is a new invocation, not a retry of the paused node).
    """
    script = list(case.approver_script or [])
    tiers: dict[str, str] = {}
    stopped: set[str] = set()
    rounds = 0
    while result.status == "awaiting_approval" and result.pending_approval and rounds < MAX_APPROVAL_ROUNDS:
        pending = result.pending_approval
        tiers.setdefault(pending["approval_id"], pending["tier"])
        step = script.pop(0) if script else None
        if step is not None:
            decision, reason = step.decision, step.reason
        else:
            decision, reason = oracle_decision(case, pending)
            if decision == "reject" and pending["action"] in (*EFFECT_KINDS, *SAGA_KINDS):
                stopped.add(pending["approval_id"])
        approver = (step.approver if step else None) or DEFAULT_APPROVERS[
            min(len(pending["approvals_received"]), len(DEFAULT_APPROVERS) - 1)
        ]
        result = await app.aresume(
            result.thread_id,
            {"approver": approver, "decision": decision, "reason": reason, "args": step.args if step else None},
            callbacks=callbacks() if callbacks else None,
        )
        rounds += 1
    return Approvals(result, tuple(tiers.values()), len(stopped))


async def _run_case(case: EvalCase, settings: Settings, models: ModelTier, graphs: CompiledGraphs) -> CaseRun:
    app = TriageApp(settings, models=models, graphs=graphs)
    started = time.perf_counter()
    result: RunResult | None = None
    tiers: tuple[str, ...] = ()
    retries: dict[str, int] = {}
    timeline: list[TimelineEntry] = []
    error: str | None = None
    unsafe_stopped = 0
    try:
        # Load the classifier first so that its start-up cost is not charged to the `classify` node.
        await asyncio.to_thread(app.warm_up)
        started = time.perf_counter()
        thread_id = f"eval-{case.id}"
        # One attempt counter per invocation: the approve node runs again on every resume, which is not a retry.
        counters: list[AttemptCounter] = []

        def fresh() -> list[Any]:
            counters.append(AttemptCounter())
            return [counters[-1]]

        result = await app.arun(case.ticket, thread_id=thread_id, callbacks=fresh())
        answered = await answer_approvals(app, result, case, callbacks=fresh)
        result, tiers, unsafe_stopped = answered.result, answered.tiers, answered.unsafe_stopped
        for counter in counters:
            for node, count in counter.retries().items():
                retries[node] = retries.get(node, 0) + count
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
        case,
        result,
        timeline,
        latency_ms=latency_ms,
        error=error,
        approval_tiers=tiers if result else (),
        unsafe_stopped=unsafe_stopped,
    )
    evaluation = attach_retries(evaluation, retries)
    return CaseRun(case=case, result=result, timeline=timeline, evaluation=evaluation)
