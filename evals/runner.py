"""Run evaluation cases through the real `TriageApp`: compiled graph, SQLite checkpointer, seeded helpdesk.

Every case starts from the seeded helpdesk and an empty checkpoint store, so a refund requested by one case cannot
change what another case sees, and the figures do not depend on the order in which cases finish. With one process
each case gets a fresh copy of both files in a home of its own; with several (`workers`: this one and spawned ones),
each process runs its chunks of cases on one app and puts the template's rows back into its files between cases
(`RowRestorer`), which leaves the same state at a third of the cost. The model tier is loaded and the graph
compiled once per process, and shared by every case's app. Thread ids are derived from case ids.

A conversation case runs in one home and one thread: its turns are sent in order, turn 2 onwards as follow-ups to the
conversation turn 1 started, and each turn is judged by the same evaluators on what that turn did (its own actions,
its own nodes). A turn that holds its approval is left paused; the next (attached) turn is sent while it waits, and
the approvals are answered after it.

Latency figures are each run's own wall time (`RunResult.duration_ms`: the graph from input to its end or pause,
approvals answered included). They measure the graph rather than contention only when cases run one at a time in a
process, which is the default: on a small machine, cases run concurrently mostly wait for each other's CPU. The
homes are thrown away, so their SQLite files run with `synchronous=off` (see `eval_synchronous`): the figures leave
out the wait for the disk that every commit makes in a real home (`TRIAGE_SQLITE_SYNCHRONOUS=full` puts it back).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import multiprocessing.util
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from triage.app import CompiledGraphs, TriageApp
from triage.errors import TriageError
from triage.evals.dataset import ConversationCase, ConversationTurn, EvalCase
from triage.evals.evaluators import EFFECT_KINDS, describe_action, evaluate_case
from triage.evals.metrics import CaseEvaluation, attach_retries
from triage.models.tier import LocalModelTier, ModelTier
from triage.policies import PolicyBundle
from triage.policies.account import SAGA_KINDS
from triage.schemas import RunResult, TimelineEntry
from triage.settings import Settings

__all__ = [
    "CHUNK",
    "DEFAULT_CONCURRENCY",
    "Approvals",
    "CaseRun",
    "ConversationRun",
    "EvalRun",
    "EvalWorkerError",
    "TurnRun",
    "default_workers",
    "oracle_decision",
    "run_cases",
]

R = TypeVar("R")


class EvalWorkerError(TriageError):
    """A worker process of the eval died (killed, out of memory) before its cases finished."""


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
class TurnRun:
    """One turn of a conversation case after it ran: its result, its own timeline entries and its evaluation.

    For an attached turn, `result` is the paused turn's result once the approvals were answered.
    """

    number: int
    attached: bool
    result: RunResult | None
    timeline: list[TimelineEntry]
    evaluation: CaseEvaluation


@dataclass(frozen=True)
class ConversationRun:
    """A conversation case after its run: the turns that ran, in order (a turn that raised ends it)."""

    case: ConversationCase
    conversation_id: str
    turns: list[TurnRun]

    @property
    def success(self) -> bool:
        """Every turn ran and passed."""
        return len(self.turns) == len(self.case.turns) and all(t.evaluation.task_success for t in self.turns)


@dataclass(frozen=True)
class EvalRun:
    """All cases of one evaluation, in dataset order (conversation cases after the single ones)."""

    runs: list[CaseRun]
    wall_time_s: float
    policy_version: str
    model_tier: str = "local"
    model_version: str | None = None
    """Fingerprint of the model that classified the cases (None when the runs recorded several or none)."""
    evaluations: list[CaseEvaluation] = field(default_factory=list)
    conversations: list[ConversationRun] = field(default_factory=list)
    measured: dict[str, Any] = field(default_factory=dict)
    """How the latency figures were taken: `workers` (processes), `concurrency` (cases at once in each),
    `sqlite_synchronous` (whether commits waited for the disk) and `sqlite_on_loop` (whether statements ran on the
    event loop's thread)."""
    logged: list[str] = field(default_factory=list)
    """What triage logged at WARNING and above while the cases ran, in every process (`_LoggedLines`): a case that
    plants a fault makes the alarm an operator would get, which belongs in the report, not among the progress."""

    def __repr__(self) -> str:
        # A summary, not every run's result: `asyncio.run` formats the repr of its task, result included, as it
        # puts back the SIGINT handler (Python 3.11); for 1,000 cases that took 0.4 s at the end of each eval.
        return (
            f"EvalRun({len(self.runs)} cases, {len(self.conversations)} conversations, "
            f"{self.wall_time_s} s, policy {self.policy_version}, {self.model_tier})"
        )


async def run_cases(
    cases: Sequence[EvalCase],
    *,
    conversations: Sequence[ConversationCase] = (),
    settings: Settings | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_done: Callable[[CaseRun | ConversationRun], None] | None = None,
    workdir: Path | None = None,
    workers: int = 1,
) -> EvalRun:
    """Run every case (at most `concurrency` at a time, or across `workers` processes) and evaluate it.

    Args:
        cases: The cases, in the order the results should come back.
        conversations: Conversation cases: each one's turns run in order on one thread (see the module docstring).
        settings: Where the classifier cache and policy bundle come from (`cache_home`, `policy_dir`); the
            home is always a temporary folder.
        concurrency: Cases in flight at once (with `workers`, each worker process runs one case at a time).
        on_done: Called after each case, e.g. to advance a progress bar.
        workdir: Keep the per-case homes here instead of a deleted temporary folder (for debugging).
        workers: Processes the cases are shared across (`default_workers()` suits the machine), this one
            included. Each loads the model tier and compiles the graph once and runs its share in chunks of
            `CHUNK` cases; one (the default) runs them all in this process. The others are spawned, so a script
            that asks for more than one calls this under `if __name__ == "__main__":`.

    Raises:
        PolicyFileError: the policy folder in `settings` is invalid.
    """
    from triage.policies import load_policy_bundle

    base = settings or Settings()
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="triage-eval-") as tmp,
        _keeping_logs() as logged,
        _collector_around_set_up() as set_up_done,
    ):
        root = workdir or Path(tmp)
        cache = base.cache_dir if base.cache_home or base.home.exists() else root / "cache"
        # Every case decides with the home's active model (a trained one, or the packaged one). The homes are thrown
        # away, so their commits need not wait for the disk unless the settings ask for it.
        synchronous = eval_synchronous(base)
        shared = {
            "cache_home": cache,
            "models_home": base.models_dir,
            "sqlite_synchronous": synchronous,
            "sqlite_on_loop": eval_on_loop(base, synchronous),
        }
        template = root / "template"
        place = _Place(root=root, shared=shared, keep=workdir is not None)
        # Worker processes start first, before this one reads the policy (which imports LangChain): their start-up
        # overlaps this process's imports and the template's seeding below.
        pool = (
            _start_pool(base, place, workers - 1) if workers > 1 and len(cases) + len(conversations) > CHUNK else None
        )
        try:
            policy = load_policy_bundle(base.policy_dir)
            policy_version = policy.version
            models = _shared_models(base, cache, policy)
            graphs = CompiledGraphs()  # compiled once here, for every case's app: not per case
            await _seed_template(base.model_copy(update={"home": template, **shared}), models, graphs, root / "blank")
            set_up_done()
            if pool is not None:
                # This process is one of the workers: it has the models and the graph already, and its share
                # starts as soon as the template is seeded, while the other processes are still starting.
                here = _Worker(base, place, models, graphs, asyncio.get_running_loop())
                runs, talks = await _in_workers(
                    pool, cases, conversations, on_done, here=here, processes=workers - 1, logged=logged.lines
                )
            else:
                runs, talks = await _in_process(cases, conversations, base, place, models, graphs, concurrency, on_done)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        lines = logged.take()
    measured = {
        "workers": workers if pool is not None else 1,
        "concurrency": 1 if pool is not None else max(1, concurrency),
        "sqlite_synchronous": shared["sqlite_synchronous"],
        "sqlite_on_loop": shared["sqlite_on_loop"],
    }
    # The version the runs themselves recorded is authoritative; the bundle read above covers a run with none.
    results = [run.result for run in runs] + [turn.result for talk in talks for turn in talk.turns]
    recorded = {result.policy_version for result in results if result is not None and result.policy_version}
    versions = {result.model_version for result in results if result is not None}
    return EvalRun(
        runs=runs,
        wall_time_s=round(time.perf_counter() - started, 2),
        policy_version=recorded.pop() if len(recorded) == 1 else policy_version,
        model_version=versions.pop() if len(versions) == 1 else None,
        model_tier="+".join(["local", *(m for m in (base.cheap_model, base.strong_model) if m)])
        + ("(all-to-model)" if base.all_to_model and base.cheap_model else ""),
        evaluations=[run.evaluation for run in runs],
        conversations=talks,
        measured=measured,
        logged=lines,
    )


@contextmanager
def _collector_around_set_up() -> Iterator[Callable[[], None]]:
    """The cyclic garbage collector off while the eval sets up, then back as it was, what the set-up made frozen.

    The set-up (the policy, the model tier, the graph, the seeded template) makes objects that live as long as the
    eval, and the collector went through them as they came and in every full collection after: 0.39 s of this
    process's first 2.9 s, and 0.94 s of a 1,000-case eval, 0.15 s a full collection. Call the function yielded
    once the set-up is done: what exists then is frozen (`gc.freeze`: full collections skip it) until the block
    ends. A caller that froze objects of its own keeps its freeze, and nothing is frozen here.
    """
    enabled, freezing = gc.isenabled(), gc.get_freeze_count() == 0
    gc.disable()
    done = False

    def set_up_done() -> None:
        nonlocal done
        if not done:
            done = True
            if freezing:
                gc.freeze()
            if enabled:
                gc.enable()

    try:
        yield set_up_done
    finally:
        set_up_done()
        if freezing:
            gc.unfreeze()


class _LoggedLines(logging.Handler):
    """Keeps the lines triage logs at WARNING and above (with the exception's last line, if any)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{record.levelname}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            line += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        self.lines.append(line)

    def take(self) -> list[str]:
        """The lines kept so far, which are then forgotten."""
        lines, self.lines = self.lines, []
        return lines


@contextmanager
def _keeping_logs() -> Iterator[_LoggedLines]:
    """Keep what triage logs while the block runs, instead of Python printing it (no handler is configured).

    A block that raises leaves no report to carry the lines: they are printed to stderr then, as they would have
    been without the handler.
    """
    logger = logging.getLogger("triage")
    handler = _LoggedLines()
    logger.addHandler(handler)
    try:
        yield handler
    except BaseException:
        for line in handler.take():
            print(line, file=sys.stderr)
        raise
    finally:
        logger.removeHandler(handler)


CHUNK = 8
"""Cases a worker process runs per task: small enough to keep both the progress bar and the processes' shares even."""


def default_workers() -> int:
    """Processes for an eval on this machine: one per core, at most four (each holds its own model tier)."""
    return max(1, min(os.cpu_count() or 1, 4))


@dataclass(frozen=True)
class _Place:
    """Where a run's case homes go: `root` holds the template, the blank store and the homes."""

    root: Path
    shared: dict[str, Any]
    """Settings every case's home shares (the cache, the models, `synchronous`)."""
    keep: bool
    """Keep each case's home after its run (a `workdir` was given)."""


async def _case_in_home(
    index: int, case: EvalCase, base: Settings, place: _Place, models: ModelTier, graphs: CompiledGraphs
) -> CaseRun:
    home = place.root / "cases" / f"{index:05d}"
    await asyncio.to_thread(_copy_stores, place.root / "template", place.root / "blank", home)
    settings = base.model_copy(update={"home": home, "faults": case.faults, **place.shared})
    run = await _run_case(case, settings, models, graphs)
    if not place.keep:
        await asyncio.to_thread(shutil.rmtree, home, True)
    return run


async def _conversation_in_home(
    index: int, case: ConversationCase, base: Settings, place: _Place, models: ModelTier, graphs: CompiledGraphs
) -> ConversationRun:
    home = place.root / "conversations" / f"{index:05d}"
    await asyncio.to_thread(_copy_stores, place.root / "template", place.root / "blank", home)
    run = await _run_conversation(case, base.model_copy(update={"home": home, **place.shared}), models, graphs)
    if not place.keep:
        await asyncio.to_thread(shutil.rmtree, home, True)
    return run


async def _in_process(
    cases: Sequence[EvalCase],
    conversations: Sequence[ConversationCase],
    base: Settings,
    place: _Place,
    models: ModelTier,
    graphs: CompiledGraphs,
    concurrency: int,
    on_done: Callable[[CaseRun | ConversationRun], None] | None,
) -> tuple[list[CaseRun], list[ConversationRun]]:
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def bounded(run: Awaitable[R]) -> R:
        async with semaphore:
            done = await run
        if on_done is not None:
            on_done(done)  # type: ignore[arg-type]  # R is a CaseRun or a ConversationRun
        return done

    runs = await asyncio.gather(
        *(bounded(_case_in_home(i, case, base, place, models, graphs)) for i, case in enumerate(cases))
    )
    talks = await asyncio.gather(
        *(bounded(_conversation_in_home(i, case, base, place, models, graphs)) for i, case in enumerate(conversations))
    )
    return list(runs), list(talks)


def _start_pool(base: Settings, place: _Place, workers: int) -> ProcessPoolExecutor:
    """`workers` spawned processes, started now: each imports triage, loads the policy and compiles the graph.

    Spawned, not forked: this process runs threads (the progress bar, the apps' loops), and a fork copies their
    locks in whatever state they are. The model tier is read when a worker's first case starts, once the template's
    seeding has trained (or found) it.
    """
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(base, place),
    )
    for _ in range(workers):
        pool.submit(_ready)
    return pool


def _ready() -> None:
    """A task that only makes the pool start a process (and run `_start_worker` in it)."""


async def _in_workers(
    pool: ProcessPoolExecutor,
    cases: Sequence[EvalCase],
    conversations: Sequence[ConversationCase],
    on_done: Callable[[CaseRun | ConversationRun], None] | None,
    *,
    here: _Worker | None = None,
    processes: int = 1,
    logged: list[str] | None = None,
) -> tuple[list[CaseRun], list[ConversationRun]]:
    """Run the cases `CHUNK` at a time in the pool's `processes` and, with `here`, in this process too.

    Each takes the next chunk when it is done with one, and runs one case at a time. Conversations go first, as
    the longest tasks. A process of the pool that dies ends the run with `EvalWorkerError`. What the pool's
    processes log goes to `logged`.
    """
    loop = asyncio.get_running_loop()
    runs: list[CaseRun | None] = [None] * len(cases)
    talks: list[ConversationRun | None] = [None] * len(conversations)
    tasks: deque[tuple[str, list[tuple[int, Any]]]] = deque(
        ("conversation", [(i, conversations[i])]) for i in range(len(conversations))
    )
    indexed = list(enumerate(cases))
    tasks += [("case", indexed[i : i + CHUNK]) for i in range(0, len(indexed), CHUNK)]

    def record(kind: str, finished: list[tuple[int, Any]]) -> None:
        for index, run in finished:
            if kind == "case":
                runs[index] = run
            else:
                talks[index] = run
            if on_done is not None:
                on_done(run)

    async def in_pool() -> None:
        while tasks:
            kind, chunk = tasks.popleft()
            try:
                _, finished, lines = await loop.run_in_executor(pool, _run_chunk, kind, chunk)
            except BrokenProcessPool:
                raise EvalWorkerError(
                    "a worker process of the eval stopped before its cases finished (killed, or out of memory); "
                    "run the eval again, or with --workers 1 to keep it in one process"
                ) from None
            record(kind, finished)
            if logged is not None:
                logged.extend(lines)

    async def in_this_process(worker: _Worker) -> None:
        try:
            while tasks:
                kind, chunk = tasks.popleft()
                record(kind, await _chunk_on(worker, kind, chunk))
        finally:
            await _close_worker_home(worker)

    running = [asyncio.ensure_future(in_pool()) for _ in range(max(1, processes))]
    if here is not None:
        running.append(asyncio.ensure_future(in_this_process(here)))
    try:
        await asyncio.gather(*running)
    finally:  # one failed: the others stop too (the pool's chunks still out are cancelled by its shutdown)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return [run for run in runs if run is not None], [talk for talk in talks if talk is not None]


@dataclass
class _Worker:
    """What a worker process keeps between its chunks (set up by `_start_worker`)."""

    base: Settings
    place: _Place
    models: ModelTier
    graphs: CompiledGraphs
    loop: asyncio.AbstractEventLoop
    """The process's one event loop: every chunk runs on it, as the model tier's lock and the stores expect."""
    home: _WorkerHome | None = None
    """Where the plain cases run, opened by the first chunk; closed when the process exits (`_stop_worker`)."""


_worker: _Worker | None = None
_start_error: Exception | None = None
"""Why `_start_worker` failed in this process: raised by its first chunk (an initializer's error would print a
traceback and break the whole pool)."""


def _start_worker(base: Settings, place: _Place) -> None:
    import signal

    from triage.startup import defer_package_inits, set_up_frozen

    defer_package_inits()  # before the policy and the graph import LangChain and LangGraph
    from triage.policies import load_policy_bundle

    global _worker
    # Ctrl-C reaches the whole process group: the eval process handles it (its pool lets a running chunk finish,
    # then stops the workers), so a worker does not print a traceback of its own or die mid-case.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def set_up() -> tuple[CompiledGraphs, ModelTier]:
        policy = load_policy_bundle(base.policy_dir)
        graphs = CompiledGraphs()
        graphs.support(policy)
        return graphs, _shared_models(base, place.shared["cache_home"], policy)

    try:
        # What the set-up makes lives as long as the process: see `_collector_around_set_up`.
        graphs, models = set_up_frozen(set_up, collect=False)
    except Exception as exc:  # e.g. an invalid policy: the eval process reports it (it reads the same files)
        global _start_error
        _start_error = exc
        return
    _worker = _Worker(base, place, models, graphs, asyncio.new_event_loop())
    # Run as the worker process exits, before Python waits for its threads (the app's connections each have one).
    multiprocessing.util.Finalize(None, _stop_worker, exitpriority=10)


def _stop_worker() -> None:
    """Close the worker's home and app, then its event loop; the process is exiting.

    Then `gc.freeze()`: nothing is left to close, and the eval waits for this process to exit, which Python's final
    collection of everything the worker loaded made 0.23-0.29 s longer (0.03-0.04 s without it).
    """
    global _worker
    worker, _worker = _worker, None
    if worker is not None:
        try:
            worker.loop.run_until_complete(_close_worker_home(worker))
        finally:
            worker.loop.close()
        gc.freeze()


def _run_chunk(kind: str, chunk: list[tuple[int, Any]]) -> tuple[str, list[tuple[int, Any]], list[str]]:
    """Run a chunk of cases (or one conversation) in this worker process, one at a time; with what it logged."""
    if _start_error is not None:
        raise _start_error
    assert _worker is not None, "_start_worker runs first"
    with _keeping_logs() as logged:
        return kind, _worker.loop.run_until_complete(_chunk_on(_worker, kind, chunk)), logged.take()


async def _chunk_on(worker: _Worker, kind: str, chunk: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """Run a chunk of cases (or one conversation) on a worker's models and graph, one at a time."""
    if kind == "case" and not worker.place.keep:
        return await _cases_in_one_home(chunk, worker)
    run = _case_in_home if kind == "case" else _conversation_in_home
    return [(i, await run(i, case, worker.base, worker.place, worker.models, worker.graphs)) for i, case in chunk]


async def _cases_in_one_home(chunk: list[tuple[int, EvalCase]], worker: _Worker) -> list[tuple[int, CaseRun]]:
    """Run a chunk's cases one after another on the worker's one app, its files put back to the template's first.

    Opening an app (two SQLite connections on their own threads, the schema checks, the policy files) cost about a
    third of a case's CPU. A worker opens one app, in a home of its own, for all its chunks; before each case but
    its first, the files get the template's rows back in place (`RowRestorer`), which leaves each case the state a
    fresh copy would. Cases that inject faults get a home and an app of their own (the faults are the app's
    settings).
    """
    done = [
        (i, await _case_in_home(i, case, worker.base, worker.place, worker.models, worker.graphs))
        for i, case in chunk
        if case.faults
    ]
    plain = [(i, case) for i, case in chunk if not case.faults]
    if not plain:
        return done
    home = worker.home or await _open_worker_home(worker)
    try:
        for index, case in plain:
            if home.used:
                # On this thread, not another: a Ctrl-C cancels this task, and closing the restorers while a thread
                # still restored on their connections crashed the process (SIGSEGV, its workers left running).
                # A restore is 1-3 ms, and the loop waits for nothing else meanwhile.
                _restore_all(home.restorers)
            home.used = True
            done.append((index, await _case_on(home.app, case)))
    except BaseException:
        await _close_worker_home(worker)  # its files may be half restored: the next chunk starts afresh
        raise
    return done


@dataclass
class _WorkerHome:
    """The home, app and restorers a worker runs its plain cases on (`_cases_in_one_home`)."""

    path: Path
    app: TriageApp
    restorers: list[RowRestorer]
    used: bool = False
    """A case ran here since the files were copied: restore before the next."""


async def _open_worker_home(worker: _Worker) -> _WorkerHome:
    place = worker.place
    # SQLite opens the files it restores from (and a WAL file appears and goes beside them): each worker reads its
    # own copy, so the shared template and blank store are only ever copied, never opened, while workers run.
    sources = place.root / "workers" / f"{os.getpid()}-sources"
    if not sources.exists():
        await asyncio.to_thread(_copy_stores, place.root / "template", place.root / "blank", sources)
    path = place.root / "workers" / f"{os.getpid()}-home-{time.monotonic_ns()}"
    await asyncio.to_thread(_copy_stores, place.root / "template", place.root / "blank", path)
    restorers = await asyncio.to_thread(_row_restorers, sources, path)
    app = TriageApp(
        worker.base.model_copy(update={"home": path, **place.shared}),
        models=worker.models,
        graphs=worker.graphs,
        loop=asyncio.get_running_loop(),  # one case at a time: each call runs at once, with no hop to a thread
    )
    worker.home = _WorkerHome(path, app, restorers)
    return worker.home


async def _close_worker_home(worker: _Worker) -> None:
    home, worker.home = worker.home, None
    if home is None:
        return
    try:
        await home.app.aclose()
    finally:
        for restorer in home.restorers:
            restorer.close()
        await asyncio.to_thread(shutil.rmtree, home.path, True)


def _row_restorers(sources: Path, home: Path) -> list[RowRestorer]:
    """Restorers that put the rows of the helpdesk and checkpoint store in `sources` back into `home`'s files."""
    helpdesk = RowRestorer(sources / "helpdesk.sqlite", home / "helpdesk.sqlite", keep=KB_TABLES, track=True)
    try:
        # Every case writes most of the checkpoint store's few rows: noting its writes would only add to them.
        return [helpdesk, RowRestorer(sources / "checkpoints.sqlite", home / "checkpoints.sqlite")]
    except BaseException:
        helpdesk.close()
        raise


def _restore_all(restorers: Sequence[RowRestorer]) -> None:
    for restorer in restorers:
        restorer.restore()


KB_TABLES = "kb_"
"""The helpdesk's knowledge base (articles and their full-text index): no case writes it, so it is not copied back."""


def restore_rows(source: Path, target: Path, *, keep: str | None = None) -> None:
    """Make every table of `target` hold exactly `source`'s rows, in one transaction on a connection of its own.

    Both files have the same schema (`target` began as a copy of `source`). Tables whose names start with `keep`
    are left alone. `sqlite_sequence` comes back too, so AUTOINCREMENT ids start where the source's do. Apps with
    the file open see the change at their next read (SQLite's own cache check); none may be mid-transaction.
    """
    restorer = RowRestorer(source, target, keep=keep)
    try:
        restorer.restore()
    finally:
        restorer.close()


class RowRestorer:
    """`restore_rows` again and again on one connection, kept open with `source` attached (a worker's chunk).

    Opening the connection, attaching the source and reading its tables cost more than copying the rows back: 2.0
    ms a case for both files, against 4.7-5.2 ms with a connection each time.

    With `track`, only the rows written since the last restore are put back. Triggers in `target` (created here,
    before any case runs on it) note the rowid of each row that any connection inserts, updates (its old and new
    rowid) or deletes, in the writing transaction itself, so a rolled-back write notes nothing and a committed one
    cannot go unnoted. A restore deletes the noted rows and copies the source's rows of those rowids back. A refund
    updates one row of `payments`: copying its 350 rows back took 5.9 ms, a sixth of a case.

    Two writes are not noted row by row, and their tables are copied whole instead:
    - a table without rowid (`WITHOUT ROWID`): its triggers note the table;
    - a row that `REPLACE` deletes to make room for another (SQLite fires no delete trigger for it): after its
      rows are put back, a table that holds fewer rows than the source's lost such a row. Every other way a row
      can differ from the source's is noted, so the count is the only check needed.
    The first restore copies every table (what happened before the triggers is not known), and so does any restore
    for a table without its triggers (created, or dropped and created again, since).
    """

    def __init__(self, source: Path, target: Path, *, keep: str | None = None, track: bool = False) -> None:
        # SQLite's ATTACH creates a file that is not there: "restoring" from it would empty every table.
        for path in (source, target):
            if not path.is_file():
                raise FileNotFoundError(f"cannot restore rows: {path} is not there (was the eval's folder removed?)")
        self._target = target
        self._keep = keep
        self._track = track
        self._primed = False
        """A restore has run since the triggers were created: from then on, their notes say what was written."""
        self.copied_whole: tuple[str, ...] = ()
        """The tables the last restore copied whole, rather than row by row (for tests and debugging)."""
        self._source_rows: dict[str, tuple[str, int]] = {}
        """By table: its columns (quoted, in order) and how many rows the source holds (the source is never written)."""
        self._conn = sqlite3.connect(target, isolation_level=None, timeout=10, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA synchronous = OFF")  # the eval's homes are thrown away (`eval_synchronous`)
            self._conn.execute("ATTACH DATABASE ? AS source", (str(source),))
            self._in_source = set(self._tables("source"))
            if track:
                self._create_triggers()
        except BaseException:
            self._conn.close()
            raise

    def _tables(self, schema: str) -> dict[str, str]:
        """Name -> CREATE statement of each table of `schema` that is restored (its name does not start with keep)."""
        rows = self._conn.execute(f"SELECT name, sql FROM {schema}.sqlite_master WHERE type = 'table' ORDER BY name")
        return {
            name: str(sql)
            for name, sql in rows
            if not (self._keep and name.startswith(self._keep)) and name not in (_WRITTEN, _WRITTEN_ROWS)
        }

    def _create_triggers(self) -> None:
        """The tables of notes, and on each plain table a trigger per kind of write that notes its rows (or itself).

        A note is inserted only where none is (no conflict): a trigger's statements take the conflict clause of the
        statement that fired them (`INSERT OR ROLLBACK ...`), so a conflicting note would fail the app's write.
        """
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS main.{_WRITTEN} (name TEXT PRIMARY KEY) WITHOUT ROWID")
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS main.{_WRITTEN_ROWS} "
                "(name TEXT NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (name, rid)) WITHOUT ROWID"
            )
            for name, sql in self._tables("main").items():
                if name.startswith("sqlite_") or sql.upper().startswith("CREATE VIRTUAL"):
                    continue  # SQLite's own tables and virtual tables take no triggers: restored every time
                table = _literal(name)
                by_row = _WITHOUT_ROWID.search(sql) is None
                for write in _WRITES:
                    if by_row:
                        rowids = {"INSERT": ("NEW",), "DELETE": ("OLD",), "UPDATE": ("OLD", "NEW")}[write]
                        body = "".join(
                            f"INSERT INTO {_WRITTEN_ROWS} (name, rid) SELECT {table}, {row}.rowid WHERE NOT EXISTS "
                            f"(SELECT 1 FROM {_WRITTEN_ROWS} WHERE name = {table} AND rid = {row}.rowid); "
                            for row in rowids
                        )
                    else:
                        body = (
                            f"INSERT INTO {_WRITTEN} (name) SELECT {table} "
                            f"WHERE NOT EXISTS (SELECT 1 FROM {_WRITTEN} WHERE name = {table}); "
                        )
                    self._conn.execute(
                        f"CREATE TRIGGER IF NOT EXISTS main.{_quoted(_trigger_name(name, write))} "
                        f"AFTER {write} ON {_quoted(name)} BEGIN {body}END"
                    )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def _written(self, tables: Sequence[str]) -> tuple[list[str], list[str]]:
        """Of `tables`, those to copy back whole, and those whose noted rows to put back.

        Every table is copied whole on the first restore; after it, the tables noted whole and those without
        their triggers are, and the others with noted rows have those put back.
        """
        if not (self._track and self._primed):
            return list(tables), []
        whole = {name for (name,) in self._conn.execute(f"SELECT name FROM main.{_WRITTEN}")}
        by_row = {name for (name,) in self._conn.execute(f"SELECT DISTINCT name FROM main.{_WRITTEN_ROWS}")}
        triggers = {
            name for (name,) in self._conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'trigger'")
        }
        copied, rows = [], []
        for name in tables:
            if name in whole or not all(_trigger_name(name, write) in triggers for write in _WRITES):
                copied.append(name)
            elif name in by_row:
                rows.append(name)
        return copied, rows

    def restore(self) -> None:
        """Put `source`'s rows back into every table of `target` (see `restore_rows`), in one transaction."""
        tables = self._tables("main")  # read each time: a table created since is emptied too
        virtual = [name for name, sql in tables.items() if sql.upper().startswith("CREATE VIRTUAL")]
        if virtual:  # its rows are not its own (an index over a content table): copying them would corrupt it
            raise ValueError(f"cannot restore the rows of virtual tables {virtual} in {self._target}; keep them")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            copied, by_row = self._written(list(tables))
            for name in by_row:
                if not self._put_rows_back(name):
                    copied.append(name)
            for name in copied:
                self._conn.execute(f"DELETE FROM main.{_quoted(name)}")
                if name in self._in_source:
                    self._conn.execute(f"INSERT INTO main.{_quoted(name)} SELECT * FROM source.{_quoted(name)}")
            if self._track:
                self._conn.execute(f"DELETE FROM main.{_WRITTEN}")  # the copying's own notes included
                self._conn.execute(f"DELETE FROM main.{_WRITTEN_ROWS}")
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._primed = True
        self.copied_whole = tuple(sorted(copied))

    def _put_rows_back(self, name: str) -> bool:
        """Put back the source's rows of the rowids noted in `name`; False when the table must be copied whole.

        It must when it holds fewer rows than the source's then: a `REPLACE` deleted a row without a note.
        """
        if name not in self._in_source:
            return False
        if name not in self._source_rows:
            info = list(self._conn.execute(f"PRAGMA source.table_info({_quoted(name)})"))
            (count,) = self._conn.execute(f"SELECT count(*) FROM source.{_quoted(name)}").fetchone()
            self._source_rows[name] = (", ".join(_quoted(str(row[1])) for row in info), int(count))
        columns, count = self._source_rows[name]
        noted = f"SELECT rid FROM main.{_WRITTEN_ROWS} WHERE name = {_literal(name)}"
        self._conn.execute(f"DELETE FROM main.{_quoted(name)} WHERE rowid IN ({noted})")
        self._conn.execute(
            f"INSERT INTO main.{_quoted(name)} (rowid, {columns}) "
            f"SELECT rowid, {columns} FROM source.{_quoted(name)} WHERE rowid IN ({noted})"
        )
        (now,) = self._conn.execute(f"SELECT count(*) FROM main.{_quoted(name)}").fetchone()
        return bool(now == count)

    def close(self) -> None:
        self._conn.close()


_WRITTEN = "_eval_written_tables"
"""The table in which a tracking `RowRestorer`'s triggers note the tables without rowid written since its last
restore."""

_WRITTEN_ROWS = "_eval_written_rows"
"""The table in which a tracking `RowRestorer`'s triggers note the rowid of each row written since its last restore
(by table)."""

_WITHOUT_ROWID = re.compile(r"\bWITHOUT\s+ROWID\b", re.IGNORECASE)

_WRITES = ("INSERT", "UPDATE", "DELETE")
"""The kinds of write a tracked table has a trigger for."""


def _trigger_name(table: str, write: str) -> str:
    return f"_eval_written_{write.lower()}_{table}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def eval_synchronous(settings: Settings) -> str:
    """SQLite `synchronous` for the eval's throwaway homes: `off`, unless set (TRIAGE_SQLITE_SYNCHRONOUS).

    A commit that waits for the disk took half of a case's wall time (357 cases: 41.6 s against 19.8 s); it says
    nothing about the graph.
    """
    return settings.sqlite_synchronous if "sqlite_synchronous" in settings.model_fields_set else "off"


def eval_on_loop(settings: Settings, synchronous: str) -> bool:
    """Whether the eval's homes run their statements on the event loop (`Settings.sqlite_on_loop`), unless set.

    Each worker's home is its own, and at `synchronous = off` no statement waits for the disk: the hops to the
    connections' threads were a fifth of a case's wall time (1,000 cases: 26.4 and 24.0 s against 21.6 and 21.7 s,
    the same verdicts).
    """
    return settings.sqlite_on_loop if "sqlite_on_loop" in settings.model_fields_set else synchronous == "off"


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
        await app.awarm_up()
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
        retries: Retried attempts per node, over the run and every resume (`RunResult.retries`).
    """

    result: RunResult
    tiers: tuple[str, ...]
    unsafe_stopped: int = 0
    retries: Mapping[str, int] = field(default_factory=dict)


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


async def answer_approvals(app: TriageApp, result: RunResult, case: EvalCase) -> Approvals:
    """Answer every approval the run pauses on: from the case's script, else as `oracle_decision` says.

    Default approvers are alice, then sam for a second approval. The retries of `result` and of every resume are
    added up (a resume is a new invocation, not a retry of the paused node).
    """
    retries = Counter(result.retries)
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
        )
        retries.update(result.retries)
        rounds += 1
    return Approvals(result, tuple(tiers.values()), len(stopped), dict(retries))


async def _run_case(case: EvalCase, settings: Settings, models: ModelTier, graphs: CompiledGraphs) -> CaseRun:
    app = TriageApp(settings, models=models, graphs=graphs, loop=asyncio.get_running_loop())
    try:
        return await _case_on(app, case)
    finally:
        await app.aclose()


async def _case_on(app: TriageApp, case: EvalCase) -> CaseRun:
    """Run `case` on an open app (its stores as the template left them) and judge it; the app stays open."""
    started = time.perf_counter()
    result: RunResult | None = None
    tiers: tuple[str, ...] = ()
    retries: dict[str, int] = {}
    timeline: list[TimelineEntry] = []
    error: str | None = None
    unsafe_stopped = 0
    try:
        # Load the classifier first so that its start-up cost is not charged to the `classify` node.
        await app.awarm_up()
        started = time.perf_counter()
        thread_id = f"eval-{case.id}"
        result = await app.arun(case.ticket, thread_id=thread_id)
        answered = await answer_approvals(app, result, case)
        result, tiers, unsafe_stopped = answered.result, answered.tiers, answered.unsafe_stopped
        retries = dict(answered.retries)
        latency_ms = (time.perf_counter() - started) * 1000
        timeline = await app.atimeline(thread_id)
    except TriageError as exc:
        latency_ms = (time.perf_counter() - started) * 1000
        error = f"{type(exc).__name__}: {exc}"
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


async def _run_conversation(
    case: ConversationCase, settings: Settings, models: ModelTier, graphs: CompiledGraphs
) -> ConversationRun:
    """Send the case's turns in order to one conversation and judge each turn on what it did."""
    app = TriageApp(settings, models=models, graphs=graphs, loop=asyncio.get_running_loop())
    conversation_id = f"eval-{case.id}"
    turns: list[TurnRun] = []
    held: RunResult | None = None
    try:
        await app.awarm_up()
        for number in range(1, len(case.turns) + 1):
            turn = await _run_turn(app, case, number, conversation_id, held)
            turns.append(turn)
            held = turn.result if case.turns[number - 1].hold else None
            if turn.result is None:
                break  # the app refused the message or crashed: later turns have nothing to continue
    finally:
        await app.aclose()
    return ConversationRun(case=case, conversation_id=conversation_id, turns=turns)


async def _run_turn(
    app: TriageApp, conversation: ConversationCase, number: int, conversation_id: str, held: RunResult | None
) -> TurnRun:
    """Run turn `number`: send it (a follow-up after turn 1), answer its approvals unless it holds them, judge it.

    `held` is the previous turn's paused result when that turn held its approval (this turn is then attached).
    """
    spec = conversation.turns[number - 1]
    case = conversation.turn_case(number)
    ticket = spec.ticket.model_dump(exclude_none=True)
    if number > 1:
        ticket["conversation_id"] = conversation_id
    before: set[tuple[str, str, str]] = set()
    if number > 1:
        before = {_entry_key(e) for e in await app.atimeline(conversation_id)}
    started = time.perf_counter()
    result: RunResult | None = None
    tiers: tuple[str, ...] = ()
    unsafe_stopped = 0
    checks: list[str] = []
    timeline: list[TimelineEntry] = []
    error: str | None = None
    retries: dict[str, int] = {}
    try:
        result = await app.arun(ticket, thread_id=conversation_id if number == 1 else None)
        retries = dict(result.retries)
        checks = _conversation_checks(spec, number, conversation_id, result, held)
        if spec.hold:
            pending = result.pending_approval
            tiers = (str(pending["tier"]),) if pending else ()
        else:
            answered = await answer_approvals(app, result, case)
            result, tiers, unsafe_stopped = answered.result, answered.tiers, answered.unsafe_stopped
            retries = dict(answered.retries)
        if spec.reopened is not None and _reopened(result) != spec.reopened:
            checks.append("the follow-up did not reopen the conversation" if spec.reopened else "it was reopened")
        timeline = [e for e in await app.atimeline(conversation_id) if _entry_key(e) not in before]
    except TriageError as exc:
        error = f"{type(exc).__name__}: {exc}"
    latency_ms = (time.perf_counter() - started) * 1000
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
    if checks:
        evaluation = replace(evaluation, task_success=False, failures=(*evaluation.failures, *checks))
    evaluation = attach_retries(evaluation, retries)
    return TurnRun(number=number, attached=spec.attached, result=result, timeline=timeline, evaluation=evaluation)


def _entry_key(entry: TimelineEntry) -> tuple[str, str, str]:
    return (entry.namespace, entry.checkpoint_id, entry.node)


def _reopened(result: RunResult) -> bool:
    return "reopened" in (result.route_reason or "")


def _conversation_checks(
    spec: ConversationTurn, number: int, conversation_id: str, result: RunResult, held: RunResult | None
) -> list[str]:
    """What a turn must show as part of its conversation, beyond the case's expectations (empty: all shown)."""
    failures: list[str] = []
    if result.conversation_id != conversation_id:
        failures.append(f"turn {number} ran in conversation {result.conversation_id}, not {conversation_id}")
    if not spec.attached:
        if result.turn != number:
            failures.append(f"turn {number} was numbered {result.turn}")
        return failures
    pending = result.pending_approval or {}
    waiting = (held.pending_approval or {}) if held else {}
    if result.status != "awaiting_approval" or pending.get("approval_id") != waiting.get("approval_id"):
        failures.append(f"the pending decision was disturbed: {result.status}, approval {pending.get('approval_id')}")
    if held is None or len(result.follow_ups) != len(held.follow_ups) + 1:
        failures.append("the message was not attached for the approver")
    return failures
