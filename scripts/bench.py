"""Performance benchmark: `make bench`, or `.venv/bin/python scripts/bench.py [--quick] [--json FILE]`.

Prints, in one run, the figures of BENCHMARKS.md:

- latency per ticket, p50/p95: `TriageApp.arun` interleaved ticket by ticket with a bare LangGraph graph of the
  same shape (the same node names, the same specialist subgraphs with the same number of nodes, no-op async nodes),
  compiled with the app's own `AsyncSqliteSaver` (so the same file, connection and pragmas) and run with
  `durability="sync"`; the bare ticket takes the route the app took, and the script checks that both wrote the same
  number of checkpoints per ticket. The bare graph runs twice per ticket: on triage's own saver (the same object
  the app uses) and on LangGraph's stock `AsyncSqliteSaver` over the same connection, so the ratio against bare
  LangGraph and the ratio against the same saver are both measured. The tickets are measured in three passes
  (`--latency-passes`), pooled, and each pass's own ratios are printed too, with a 95% interval of the pooled
  ratios from resampling the tickets (`ratio_interval`). After them the bare graph runs against itself declared
  with triage's state schemas (still no-op nodes on two keys), which shows how much of the app's gap is
  LangGraph's work per declared channel. The packaged long tickets (over 1,000 characters: a quoted thread,
  a pasted log) are measured apart the same way, and shown in a row of their own;
- throughput at concurrency 1, 8 and 32 (200 tickets each, 40 with --quick);
- throughput with one and two worker processes on one store (concurrency 8 each, 200 tickets in all): on the
  home's SQLite files, and on a PostgreSQL server the script starts on loopback (fsync on), installing Debian's
  `postgresql` package when it is missing;
- checkpoint store per completed ticket (file growth, and the checkpoint/write blobs alone);
- `triage eval` wall time for 1,000 cases (the packaged cases cycled with fresh ids);
- peak memory (max RSS) of one process that runs 1,000 tickets;
- `triage --help` and `triage run` start times in a warm home (in its own process, and answered by the resident
  `triage worker`), and resume latency from a fresh process.

Phases that need a process of their own (eval, memory, start times, resume) run as subprocesses of this script.
Progress goes to stderr; the figures to stdout. Absolute times depend on the machine and its load: compare ratios
measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
STARTED = time.perf_counter()
T = TypeVar("T")


def log(message: str) -> None:
    """Progress on stderr, with the time since the script started."""
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) of `values`, linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


# -- tickets ---------------------------------------------------------------------------------------------------------


def bench_tickets() -> list[dict[str, Any]]:
    """Tickets of the packaged eval cases that run to an end without an approval (a pause has a different shape)."""
    from triage.evals.dataset import load_cases

    return [
        case.ticket.model_dump()
        for case in load_cases()
        if case.expected.approval_tier == "none"
        and case.approver_script is None
        and case.expected.status in ("completed", "escalated")
    ]


def approval_tickets() -> list[dict[str, Any]]:
    """Tickets that pause for one approval (the demo's, then the packaged single-approval cases)."""
    from triage.demo import DEMO_TICKETS
    from triage.evals.dataset import load_cases

    demo = [dict(t) for t in DEMO_TICKETS if t.get("customer_id") == "cus_mid_dup"]
    single = [
        case.ticket.model_dump()
        for case in load_cases()
        if case.expected.approval_tier == "single" and case.approver_script is None
    ]
    return demo + single


# -- the bare graph --------------------------------------------------------------------------------------------------


def build_bare_graph(checkpointer: Any, *, triage_schemas: bool = False) -> Any:
    """LangGraph alone, in the coordinator's shape: the same nodes and specialist subgraphs, each node a no-op.

    Its state has the two keys it reads (`ticket`, `route`). With `triage_schemas` the coordinator and the
    specialists are declared with triage's own state schemas (`State`, `SpecialistState`) instead, still given
    only those two keys and writing nothing: what LangGraph's per-channel work costs for triage's schemas alone.
    """
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command
    from typing_extensions import TypedDict

    from triage.graphs.specialists import SPECIALISTS
    from triage.state import SpecialistState, State

    class BareState(TypedDict, total=False):
        ticket: dict[str, Any]
        route: str

    async def noop(state: Any) -> dict[str, Any]:
        return {}

    async def route(state: Any) -> Command[Any]:
        return Command(goto=state["route"])

    coordinator, specialist = (State, SpecialistState) if triage_schemas else (BareState, BareState)
    graph: Any = StateGraph(coordinator)
    for name in ("validate", "classify"):
        graph.add_node(name, noop)
    graph.add_node("route", route, destinations=tuple(SPECIALISTS))
    for name, (_, steps) in SPECIALISTS.items():
        sub: Any = StateGraph(specialist)
        names = [step for step, _ in steps]
        for step in names:
            sub.add_node(step, noop)
        for step, following in zip([START, *names], [*names, END], strict=True):
            sub.add_edge(step, following)
        graph.add_node(name, sub.compile(name=name))
    for name in ("approve", "execute", "compose", "send_reply", "finish"):
        graph.add_node(name, noop)
    graph.add_edge(START, "validate")
    graph.add_edge("validate", "classify")
    graph.add_edge("classify", "route")
    for name in SPECIALISTS:
        graph.add_edge(name, "compose" if name == "escalation" else "approve")
    graph.add_edge("approve", "execute")
    graph.add_edge("execute", "compose")
    graph.add_edge("compose", "send_reply")
    graph.add_edge("send_reply", "finish")
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer, name="bare-schemas" if triage_schemas else "bare")


class Bench:
    """An app on a home, and the bare graph compiled with the app's own checkpoint saver, run on the app's loop."""

    def __init__(self, home: Path, cache: Path) -> None:
        from triage.app import TriageApp
        from triage.settings import Settings

        self.app = TriageApp(Settings(home=home, cache_home=cache))
        self.graphs: dict[str, Any] = {}
        """The bare graphs by side: `bare`, `stock` (on LangGraph's stock saver), `schemas` (triage's schemas)."""

    async def open(self, *, warm: bool = True) -> None:
        """Open the stores, load the classifier and compile the bare graphs on the app's saver.

        `warm` runs a warm-up ticket through the app and each bare graph; without it nothing is written but the
        stores' setup (the store phase measures a file's growth by the tickets it runs alone).
        """
        if warm:
            await self.app.arun({"subject": "warm-up", "body": "What are your opening hours?"}, thread_id="warm-up")

        async def compile_bare() -> dict[str, Any]:
            # The app's one saver (one connection per process and file): the same file and pragmas by construction.
            # The stock saver shares that connection and its lock, so the two never interleave statements.
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            engine = await self.app._get_engine()
            saver = engine.services.saver
            stock = AsyncSqliteSaver(saver.conn)
            stock.lock = saver.lock
            await stock.setup()
            return {
                "bare": build_bare_graph(saver),
                "stock": build_bare_graph(stock),
                "schemas": build_bare_graph(saver, triage_schemas=True),
            }

        self.graphs = await self.app._portal.acall(compile_bare())
        for side in self.graphs if warm else ():
            await self.run_bare({"subject": "warm-up", "body": "-"}, "general", f"{side}-warm-up", side=side)

    async def run_triage(self, ticket: dict[str, Any], thread_id: str) -> Any:
        """One ticket through the app."""
        return await self.app.arun(ticket, thread_id=thread_id)

    async def run_bare(self, ticket: dict[str, Any], route: str, thread_id: str, *, side: str = "bare") -> None:
        """One ticket through the bare graph of `side` (see `graphs`), on the app's loop."""
        config: Any = {"configurable": {"thread_id": thread_id}}
        graph = self.graphs[side]
        await self.app._portal.acall(graph.ainvoke({"ticket": ticket, "route": route}, config, durability="sync"))

    async def run_side(self, side: str, ticket: dict[str, Any], route: str, thread_id: str) -> None:
        """One ticket on `side`: `triage` (the app), or a bare graph's side (`bare`, `stock`, `schemas`)."""
        if side == "triage":
            await self.run_triage(ticket, thread_id)
        else:
            await self.run_bare(ticket, route, thread_id, side=side)

    async def close(self) -> None:
        """Close the app's stores."""
        await self.app.aclose()


def checkpoint_rows(path: Path, thread_ids: Sequence[str]) -> tuple[float, float]:
    """Mean checkpoints per thread and mean checkpoint + write blob bytes per thread."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TEMP TABLE ids (thread_id TEXT PRIMARY KEY)")
        conn.executemany("INSERT OR IGNORE INTO temp.ids VALUES (?)", [(t,) for t in thread_ids])
        count, checkpoint_bytes = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(checkpoint) + LENGTH(metadata)), 0) FROM checkpoints "
            "WHERE thread_id IN (SELECT thread_id FROM temp.ids)"
        ).fetchone()
        (write_bytes,) = conn.execute(
            "SELECT COALESCE(SUM(LENGTH(value)), 0) FROM writes WHERE thread_id IN (SELECT thread_id FROM temp.ids)"
        ).fetchone()
    finally:
        conn.close()
    n = max(1, len(set(thread_ids)))
    return count / n, (checkpoint_bytes + write_bytes) / n


# -- phases ----------------------------------------------------------------------------------------------------------


def runs_by_ticket(indices: Sequence[int], values: Sequence[T]) -> list[list[T]]:
    """Each ticket's runs (`indices[k]` names the ticket of `values[k]`), in the order the tickets first ran."""
    runs: dict[int, list[T]] = {}
    for index, value in zip(indices, values, strict=True):
        runs.setdefault(index, []).append(value)
    return list(runs.values())


def per_ticket_medians(indices: Sequence[int], values: Sequence[float]) -> list[float]:
    """Each ticket's median over its runs (`indices[k]` names the ticket of `values[k]`), in first-run order.

    Over tickets these show the spread the tickets themselves make (a longer text, a route with more work) with
    less of the machine's: a stall that hits one run of a ticket moves its median little.
    """
    return [statistics.median(ticket_runs) for ticket_runs in runs_by_ticket(indices, values)]


def ratio_interval(
    indices: Sequence[int],
    app: Sequence[float],
    bare: Sequence[float],
    q: float,
    *,
    resamples: int = 2_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """The `level` interval of the pooled ratio `q` quantile of `app` / `q` quantile of `bare`, by resampling tickets.

    `indices[k]` names the ticket that ran `app[k]` and `bare[k]`. Each resample draws as many tickets as ran, with
    replacement, each with all of its runs, and takes the ratio over their samples. The spread is how much the
    ratio moves with the tickets drawn and the runs' noise within this run; a machine that is faster or slower
    from one run to the next moves the ratio too, and that is not in it.
    """
    tickets = runs_by_ticket(indices, list(zip(app, bare, strict=True)))
    if not tickets:
        return float("nan"), float("nan")
    draw = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        drawn = [pair for ticket in draw.choices(tickets, k=len(tickets)) for pair in ticket]
        ratios.append(percentile([a for a, _ in drawn], q) / percentile([b for _, b in drawn], q))
    tail = (1 - level) / 2
    return percentile(ratios, tail), percentile(ratios, 1 - tail)


def checkpoint_count(reader: sqlite3.Connection, thread_id: str) -> int:
    """Checkpoints a thread wrote (all namespaces), read from the checkpoint file."""
    return int(reader.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", (thread_id,)).fetchone()[0])


async def latency_phase(bench: Bench, tickets: list[dict[str, Any]], n: int, passes: int = 1) -> dict[str, Any]:
    """Interleave app and bare tickets one by one, alternating which goes first; return both distributions.

    A first run of each distinct ticket through the app learns its route (and warms both sides); the bare ticket
    then takes that route, so both walk the same nodes. The `n` tickets are measured `passes` times (each pass
    swaps which side goes first for every ticket) and the samples are pooled: a p95 over 200 tickets rests on its
    ten slowest, so one stall of the machine moves it. `pass_ratios` keeps each pass's own ratios, to show the
    spread.
    """
    distinct = tickets[: min(n, len(tickets))]
    routes: dict[int, str] = {}
    for i, ticket in enumerate(distinct):
        result = await bench.run_triage(ticket, f"route-{i}-{uuid.uuid4().hex[:8]}")
        if result.route is not None:
            routes[i] = result.route
    log(f"  routes learnt for {len(routes)} distinct tickets")
    triage_ms: list[float] = []
    bare_ms: list[float] = []
    triage_cpu: list[float] = []
    bare_cpu: list[float] = []
    stock_ms: list[float] = []
    stock_cpu: list[float] = []
    stock_threads: list[str] = []
    routed: list[tuple[dict[str, Any], str]] = []
    triage_threads: list[str] = []
    ticket_indices: list[int] = []  # which of the distinct tickets each sample ran
    bare_threads: list[str] = []
    skipped = 0
    reader = sqlite3.connect(bench.app.settings.checkpoints_path)

    def checkpoints(thread_id: str) -> int:
        return checkpoint_count(reader, thread_id)

    pass_samples: list[tuple[list[float], list[float], list[float], list[float]]] = []
    for turn, i in itertools.product(range(passes), range(n)):
        if i == 0:
            pass_samples.append(([], [], [], []))
        index = i % len(distinct)
        if index not in routes:
            skipped += 1
            continue
        ticket, route = distinct[index], routes[index]
        tid = f"lat-{turn}-{i}-{uuid.uuid4().hex[:8]}"

        async def app_side(ticket: dict[str, Any] = ticket, tid: str = tid) -> tuple[float, float, Any]:
            started, cpu = time.perf_counter(), time.process_time()
            result = await bench.run_triage(ticket, tid)
            return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000, result

        async def bare_side(
            ticket: dict[str, Any] = ticket, route: str = route, tid: str = tid, side: str = "bare"
        ) -> tuple[float, float]:
            started, cpu = time.perf_counter(), time.process_time()
            await bench.run_bare(ticket, route, f"{side}-{tid}", side=side)
            return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000

        if (i + turn) % 2:
            elapsed_bare, cpu_bare = await bare_side()
            elapsed_stock, cpu_stock = await bare_side(side="stock")
            elapsed_triage, cpu_triage, result = await app_side()
        else:
            elapsed_triage, cpu_triage, result = await app_side()
            elapsed_stock, cpu_stock = await bare_side(side="stock")
            elapsed_bare, cpu_bare = await bare_side()
        if result.status not in ("completed", "escalated") or result.route != route:
            skipped += 1  # paused on an approval (or routed differently this time): not the same shape
            continue
        if not checkpoints(tid) == checkpoints(f"bare-{tid}") == checkpoints(f"stock-{tid}"):
            skipped += 1  # a path the bare graph does not model (several asks run in parallel branches)
            continue
        triage_ms.append(elapsed_triage)
        bare_ms.append(elapsed_bare)
        triage_cpu.append(cpu_triage)
        bare_cpu.append(cpu_bare)
        stock_ms.append(elapsed_stock)
        stock_cpu.append(cpu_stock)
        for samples, value in zip(pass_samples[-1], (elapsed_triage, elapsed_bare, cpu_triage, cpu_bare), strict=True):
            samples.append(value)
        if turn == 0:
            routed.append((ticket, route))
        triage_threads.append(tid)
        ticket_indices.append(index)
        bare_threads.append(f"bare-{tid}")
        stock_threads.append(f"stock-{tid}")
        if (i + 1) % max(1, n // 5) == 0:
            log(f"  latency: pass {turn + 1}/{passes}, {i + 1}/{n} tickets")
    reader.close()
    pass_ratios = [
        {
            "samples": len(t),
            "ratio_p50": percentile(t, 0.5) / percentile(b, 0.5),
            "ratio_p95": percentile(t, 0.95) / percentile(b, 0.95),
            "cpu_ratio_p50": percentile(tc, 0.5) / percentile(bc, 0.5),
            "cpu_ratio_p95": percentile(tc, 0.95) / percentile(bc, 0.95),
        }
        if t
        else {"samples": 0}  # every run of the pass was left out
        for t, b, tc, bc in pass_samples
    ]
    return {
        "triage_ms": triage_ms,
        "bare_ms": bare_ms,
        "triage_cpu": triage_cpu,
        "bare_cpu": bare_cpu,
        "routed": routed,
        "triage_threads": triage_threads,
        "ticket_indices": ticket_indices,
        "bare_threads": bare_threads,
        "stock_ms": stock_ms,
        "stock_cpu": stock_cpu,
        "stock_threads": stock_threads,
        "skipped": skipped,
        "pass_ratios": pass_ratios,
    }


LONG_CHARS = 1_000
"""A ticket whose subject and body are longer than this counts as long: a quoted thread or a pasted log."""


async def long_phase(bench: Bench, tickets: list[dict[str, Any]], passes: int) -> dict[str, Any]:
    """The packaged long tickets (see `LONG_CHARS`), the app against the bare graph of the same shape.

    The latency pool measures the first tickets of the packaged cases, which are a few lines each; the long ones
    (about 9,000 to 19,000 characters) come after them. The app's reading of a ticket grows with its length and
    the bare graph's nodes do not, so these tickets are shown apart rather than hidden in the pool's tail. Each
    pass runs the two sides of every ticket in a shuffled order (a fixed seed): a side that always follows the
    other pays for it (see BENCHMARKS.md, twenty-eighth round).
    """
    long = [ticket for ticket in tickets if len(ticket["subject"]) + len(ticket["body"]) > LONG_CHARS]
    routes: dict[int, str] = {}
    for i, ticket in enumerate(long):
        result = await bench.run_triage(ticket, f"long-route-{i}-{uuid.uuid4().hex[:8]}")
        if result.status in ("completed", "escalated") and result.route is not None:
            routes[i] = result.route
    order = random.Random(13)
    samples: dict[str, list[float]] = {"triage_ms": [], "bare_ms": [], "triage_cpu": [], "bare_cpu": []}
    reader = sqlite3.connect(bench.app.settings.checkpoints_path)
    try:
        for turn, (i, route) in itertools.product(range(passes), routes.items()):
            tids = {side: f"long-{side}-{turn}-{i}-{uuid.uuid4().hex[:8]}" for side in ("triage", "bare")}
            sides = ["triage", "bare"]
            order.shuffle(sides)
            taken: dict[str, tuple[float, float]] = {}
            for side in sides:
                started, cpu = time.perf_counter(), time.process_time()
                await bench.run_side(side, long[i], route, tids[side])
                taken[side] = (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000
            if checkpoint_count(reader, tids["triage"]) != checkpoint_count(reader, tids["bare"]):
                continue  # paused, or a path the bare graph does not model: not the same shape
            for side, (elapsed, cpu_ms) in taken.items():
                samples[f"{side}_ms"].append(elapsed)
                samples[f"{side}_cpu"].append(cpu_ms)
    finally:
        reader.close()
    lengths = [len(ticket["subject"]) + len(ticket["body"]) for ticket in long]
    figures: dict[str, Any] = {
        "tickets": len(routes),
        "samples": len(samples["triage_ms"]),
        "chars_min": min(lengths, default=0),
        "chars_max": max(lengths, default=0),
    }
    if samples["triage_ms"]:
        figures.update({f"{name}_p50": percentile(values, 0.5) for name, values in samples.items()})
    return figures


async def schemas_phase(bench: Bench, routed: list[tuple[dict[str, Any], str]], passes: int) -> dict[str, float]:
    """The bare graph against itself declared with triage's state schemas, interleaved ticket by ticket.

    Both run no-op nodes on the same two keys; only the declared channels differ (triage's 26 coordinator keys and
    its specialists' 12, against 2). The ratio is the part of the app's cost per ticket that LangGraph's work per
    declared channel makes, whatever the nodes do. Runs whose checkpoint counts differ would not be the same shape.
    """
    samples: dict[str, list[float]] = {"bare_ms": [], "schemas_ms": [], "bare_cpu": [], "schemas_cpu": []}
    reader = sqlite3.connect(bench.app.settings.checkpoints_path)
    try:
        for turn, (i, (ticket, route)) in itertools.product(range(passes), enumerate(routed)):
            tids = {side: f"{side}-schemas-{turn}-{i}-{uuid.uuid4().hex[:8]}" for side in ("bare", "schemas")}
            for side in ("bare", "schemas") if (i + turn) % 2 else ("schemas", "bare"):
                started, cpu = time.perf_counter(), time.process_time()
                await bench.run_bare(ticket, route, tids[side], side=side)
                samples[f"{side}_ms"].append((time.perf_counter() - started) * 1000)
                samples[f"{side}_cpu"].append((time.process_time() - cpu) * 1000)
            if checkpoint_count(reader, tids["bare"]) != checkpoint_count(reader, tids["schemas"]):
                raise AssertionError(f"the bare graph with triage's schemas took another path for ticket {i}")
    finally:
        reader.close()
    figures = {
        f"{name}_p{round(q * 100)}": percentile(values, q) for name, values in samples.items() for q in (0.5, 0.95)
    }
    figures["samples"] = len(samples["bare_ms"])
    return figures


async def throughput(run: Callable[[int], Awaitable[Any]], total: int, concurrency: int) -> float:
    """Tickets per second for `total` runs with at most `concurrency` in flight."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with semaphore:
            await run(index)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    return total / (time.perf_counter() - started)


async def throughput_phase(
    bench: Bench, routed: list[tuple[dict[str, Any], str]], total: int, levels: Sequence[int]
) -> dict[str, dict[int, float]]:
    """App and bare throughput at each concurrency level, app first then bare at each level."""
    figures: dict[str, dict[int, float]] = {"triage": {}, "bare": {}}
    for level in levels:
        tag = uuid.uuid4().hex[:6]

        async def app_one(i: int, tag: str = tag) -> Any:
            return await bench.run_triage(routed[i % len(routed)][0], f"tp-{tag}-{i}")

        async def bare_one(i: int, tag: str = tag) -> None:
            ticket, route = routed[i % len(routed)]
            await bench.run_bare(ticket, route, f"bare-tp-{tag}-{i}")

        figures["triage"][level] = await throughput(app_one, total, level)
        figures["bare"][level] = await throughput(bare_one, total, level)
        log(
            f"  throughput at {level}: app {figures['triage'][level]:.1f}/s, bare {figures['bare'][level]:.1f}/s "
            f"({total} tickets each)"
        )
    return figures


PROCESS_COUNTS = (1, 2)
"""Worker processes the processes phase compares: the machine has two cores."""
PROCESS_CONCURRENCY = 8
"""Tickets in flight in each worker process of the processes phase."""
PROCESS_TIMEOUT_S = 600
"""How long the processes phase waits for a worker's next message before it gives up on the run."""


def processes_child(
    home: str, cache: str, database_url: str | None, tickets: list[dict[str, Any]], start: Any, out: Any
) -> None:
    """(In a spawned process.) Open the home, run a warm-up ticket, say so, wait for the start, run `tickets`."""
    from triage.app import TriageApp
    from triage.settings import Settings

    settings = Settings(home=Path(home), cache_home=Path(cache), database_url=database_url)
    with TriageApp(settings) as app:
        app.run({"subject": "warm-up", "body": "What are your opening hours?"}, thread_id=f"warm-{os.getpid()}")
        out.put("ready")
        start.wait()
        started, cpu = time.perf_counter(), time.process_time()

        async def one(i: int) -> Any:
            return await app.arun(tickets[i], thread_id=f"proc-{os.getpid()}-{i}")

        asyncio.run(throughput(one, len(tickets), PROCESS_CONCURRENCY))
        out.put((time.perf_counter() - started, time.process_time() - cpu, len(tickets)))


def processes_run(
    home: Path, cache: Path, database_url: str | None, tickets: list[dict[str, Any]], count: int
) -> dict[str, float]:
    """Throughput of `count` spawned worker processes sharing `tickets` on one store, timed from their start.

    Raises:
        RuntimeError: a worker process died (its traceback is on stderr), or sent nothing for `PROCESS_TIMEOUT_S`
            while the others were awaited.
    """
    import multiprocessing
    import queue

    context = multiprocessing.get_context("spawn")  # this process runs threads: no fork
    start, out = context.Event(), context.Queue()
    shares = [tickets[k::count] for k in range(count)]
    children = [
        context.Process(target=processes_child, args=(str(home), str(cache), database_url, share, start, out))
        for share in shares
    ]

    def collect(n: int) -> list[Any]:
        """The next `n` messages of the workers; fails as soon as one of them died, instead of waiting on."""
        got: list[Any] = []
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while len(got) < n:
            try:
                got.append(out.get(timeout=0.2))
            except queue.Empty:
                died = [child.exitcode for child in children if child.exitcode]
                if died or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"a worker process of the processes phase {'died' if died else 'stalled'} "
                        f"(exit codes {[child.exitcode for child in children]}); see its traceback above"
                    ) from None
        return got

    for child in children:
        child.start()
    try:
        collect(count)  # every worker has opened the store and run its warm-up ticket
        started = time.perf_counter()
        start.set()
        results = collect(count)
        wall = time.perf_counter() - started
    except BaseException:
        for child in children:  # the others wait for a start that will not come, or run on for nothing
            child.kill()
        raise
    finally:
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
                child.join()
    if any(child.exitcode for child in children):
        raise RuntimeError(f"a worker process failed as it closed (exit codes {[c.exitcode for c in children]})")
    return {"tickets_per_s": len(tickets) / wall, "cpu_s": sum(cpu for _, cpu, _ in results), "wall_s": wall}


def processes_phase(root: Path, cache: Path, tickets: list[dict[str, Any]], total: int) -> dict[str, Any]:
    """Throughput with 1 and 2 worker processes on one store: the home's SQLite files, then PostgreSQL.

    Each count gets a fresh home (and, on PostgreSQL, a fresh database): the first app to open it seeds it, here,
    before the workers start. PostgreSQL is a server this script starts on loopback with fsync on (every commit
    waits for the disk, as SQLite's do); when it cannot be installed or started, the figure says why instead.
    """
    from triage.app import TriageApp
    from triage.settings import Settings

    work = [tickets[i % len(tickets)] for i in range(total)]
    figures: dict[str, Any] = {}

    def measure(backend: str, database_url: Callable[[], str | None]) -> dict[int, dict[str, float]]:
        found: dict[int, dict[str, float]] = {}
        for count in PROCESS_COUNTS:
            home, url = root / f"processes-{backend}-{count}", database_url()
            with TriageApp(Settings(home=home, cache_home=cache, database_url=url)) as app:
                app.run({"subject": "seed", "body": "What are your opening hours?"}, thread_id="seed")
            found[count] = processes_run(home, cache, url, work, count)
            log(f"  {backend}, {count} process(es): {found[count]['tickets_per_s']:.1f} tickets/s")
        return found

    figures["sqlite"] = measure("sqlite", lambda: None)
    try:
        sys.path.insert(0, str(ROOT))
        from tests.postgres_server import postgres_server

        with postgres_server(fsync=True) as server:
            import psycopg

            def fresh_database() -> str:
                name = f"bench_{uuid.uuid4().hex[:12]}"
                with psycopg.connect(server, autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {name}")
                return server.rsplit("/", 1)[0] + f"/{name}"

            figures["postgres"] = measure("postgres", fresh_database)
    except Exception as exc:  # no package, no server: the other figures stand, this one says why
        figures["postgres"] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
        log(f"  postgres: not measured ({figures['postgres']['error']})")
    return figures


def file_size(home: Path) -> int:
    """Bytes of the checkpoint store (the WAL is folded in when the last connection closes)."""
    return sum(f.stat().st_size for f in home.glob("checkpoints.sqlite*"))


async def store_phase(root: Path, cache: Path, routed: list[tuple[dict[str, Any], str]], n: int) -> dict[str, float]:
    """Growth of the checkpoint file per ticket, for the app and for the bare graph, each in a fresh home.

    The home is made (and warmed) first; the measured run opens it again without warm-up tickets, so the growth
    is the `n` tickets' alone. Until the fourteenth round a second set of warm-up tickets was counted with them
    (about 0.2-0.4 KB a ticket more on every side).
    """
    figures: dict[str, float] = {}
    for which in ("triage", "bare", "stock"):
        home = root / f"store-{which}"
        bench = Bench(home, cache)
        await bench.open()
        await bench.close()
        before = file_size(home)
        bench = Bench(home, cache)
        await bench.open(warm=False)
        for i in range(n):
            ticket, route = routed[i % len(routed)]
            await bench.run_side(which, ticket, route, f"{which}-store-{i}")
        await bench.close()
        figures[which] = (file_size(home) - before) / n
    return figures


def children_cpu() -> float:
    """CPU seconds (user + system) used by this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_subprocess(args: list[str], env: dict[str, str], *, timeout: float = 1800) -> tuple[float, str]:
    """Run a command; return its wall time in seconds and its stdout. Its stderr passes through."""
    started = time.perf_counter()
    done = subprocess.run(args, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(args[:4])} ... exited {done.returncode}")
    return wall, done.stdout


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a command; its wall seconds, its CPU seconds and its stdout."""
    cpu = children_cpu()
    wall, stdout = run_subprocess(args, env)
    return wall, children_cpu() - cpu, stdout


def compile_bytecode() -> None:
    """Write the bytecode of triage's packages (as installing a package does), so no timed process compiles them."""
    import compileall
    import importlib

    for name in ("triage", "triage.graphs", "triage.nodes", "triage.tools", "triage.policies", "triage.evals"):
        for path in importlib.import_module(name).__path__:
            compileall.compile_dir(path, quiet=1)


def triage_command() -> list[str]:
    """The `triage` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("triage")
    return [str(script)] if script.exists() else [sys.executable, "-m", "triage"]


def start_times(home: Path, env: dict[str, str], repeats: int) -> dict[str, float]:
    """Median wall time of `triage --help` and of `triage run` (one ticket) in a warm home.

    `triage run` is timed in a process of its own, and answered by the home's resident worker (`triage worker`).
    """
    helps = [timed([*triage_command(), "--help"], env) for _ in range(repeats)]
    runs = [timed(run_args(home, f"own {i}"), env) for i in range(repeats)]
    for _, _, stdout in runs:
        check_run(stdout)
    figures = {
        "help_s": statistics.median(h[0] for h in helps),
        "help_cpu_s": statistics.median(h[1] for h in helps),
        "run_s": statistics.median(r[0] for r in runs),
        "run_cpu_s": statistics.median(r[1] for r in runs),
    }
    with resident_worker(home, env, answers=repeats) as timed_served:
        served = [timed_served(run_args(home, f"served {i}")) for i in range(repeats)]
    for _, _, stdout in served:
        check_run(stdout)
    figures["run_worker_s"] = statistics.median(r[0] for r in served)
    figures["run_worker_cpu_s"] = statistics.median(r[1] for r in served)
    return figures


@contextmanager
def resident_worker(
    home: Path, env: dict[str, str], *, answers: int
) -> Iterator[Callable[[list[str]], tuple[float, float, str]]]:
    """`home`'s `triage worker` for the block; yields `timed` for commands it answers (its CPU for each added).

    On leaving, the worker must have answered `answers` requests (else the figures would be of commands that ran
    in their own process); it is stopped either way.
    """
    worker = [*triage_command(), "worker"]
    pid = json.loads(run_subprocess([*worker, "start", "--home", str(home), "--json"], env)[1])["pid"]

    def timed_served(args: list[str]) -> tuple[float, float, str]:
        before = process_cpu(pid)
        wall, cpu, stdout = timed(args, env)
        return wall, cpu + process_cpu(pid) - before, stdout

    try:
        yield timed_served
        status = json.loads(run_subprocess([*worker, "status", "--home", str(home), "--json"], env)[1])
    finally:
        run_subprocess([*worker, "stop", "--home", str(home)], env)
    if status.get("runs") != answers:
        raise RuntimeError(f"the worker answered {status.get('runs')} of {answers} requests: {status}")


def run_args(home: Path, label: str) -> list[str]:
    """`triage run` of one invoice question in `home`, with JSON output."""
    args = [*triage_command(), "run", "--home", str(home), "--customer-id", "cus_small_dup"]
    return [*args, "--subject", f"Invoice copy {label}", "--body", "Could you send me my last invoice?", "--json"]


def check_run(stdout: str) -> None:
    """Raise unless a `triage run --json` ended in a status a ticket can end in."""
    if json.loads(stdout).get("status") not in ("completed", "escalated", "awaiting_approval"):
        raise RuntimeError(f"`triage run` did not finish: {stdout[:200]}")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far (Linux `/proc`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def resume_phase(bench: Bench, home: Path, env: dict[str, str], wanted: int) -> list[dict[str, Any]]:
    """Pause tickets on an approval here; approve each with `triage approve`.

    Half are answered in the command's own process and half by the home's resident worker (its CPU for the decision
    added to the command's).
    """
    paused = []
    for i, ticket in enumerate(approval_tickets() * 2):
        result = await bench.run_triage(ticket, f"resume-{i}-{uuid.uuid4().hex[:6]}")
        if result.status == "awaiting_approval":
            paused.append(result.thread_id)
        if len(paused) == 2 * wanted:
            break
    if len(paused) < 2:
        raise RuntimeError(f"only {len(paused)} ticket(s) paused for an approval; the resume phase needs two")
    half = (len(paused) + 1) // 2  # the home's state may leave fewer paused tickets than asked for
    figures: list[dict[str, Any]] = []

    def approve(time_it: Callable[[list[str]], tuple[float, float, str]], threads: list[str], served: bool) -> None:
        for thread_id in threads:
            args = [*triage_command(), "approve", thread_id, "--as", "alice", "--reason", "bench"]
            wall, cpu, stdout = time_it([*args, "--home", str(home), "--json"])
            graph_ms = float(json.loads(stdout).get("duration_ms") or 0.0)
            figures.append({"wall_s": wall, "cpu_s": cpu, "graph_ms": graph_ms, "worker": served})

    approve(lambda args: timed(args, env), paused[:half], served=False)
    with resident_worker(home, env, answers=len(paused) - half) as timed_served:
        approve(timed_served, paused[half:], served=True)
    return figures


def eval_dataset(path: Path, n: int) -> None:
    """Write `n` cases: the packaged ones cycled, each with a fresh id."""
    from triage.evals.dataset import load_cases

    cases = load_cases()
    with path.open("w") as file:
        for i in range(n):
            case = cases[i % len(cases)]
            data = json.loads(case.model_dump_json(exclude_none=True))
            data["id"] = f"{case.id}.r{i // len(cases)}"
            file.write(json.dumps(data) + "\n")


def eval_phase(root: Path, env: dict[str, str], n: int) -> dict[str, Any]:
    """`triage eval` of `n` cases in a fresh process and home; its wall time and the latency it reports."""
    dataset = root / f"eval-{n}.jsonl"
    eval_dataset(dataset, n)
    args = [*triage_command(), "eval", "--dataset", str(dataset), "--out", str(root / "eval-report")]
    args += ["--home", str(root / "eval-home"), "--no-langsmith", "--json"]
    wall, cpu, stdout = timed(args, env)
    report = json.loads(stdout)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "reported_wall_s": report.get("wall_time_s") or report.get("run", {}).get("wall_time_s"),
        "latency_ms": report["run"]["latency_ms"],
        "task_success_rate": report["run"]["task_success_rate"],
    }


async def memory_child(home: Path, cache: Path, n: int, concurrency: int) -> dict[str, float]:
    """(In its own process.) Run `n` tickets in one app; report max RSS before and after."""
    tickets = bench_tickets()
    bench = Bench(home, cache)
    await bench.open()
    warm_mib = peak_rss_mib()
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        await bench.run_triage(tickets[i % len(tickets)], f"mem-{i}")
        done += 1
        if done % max(1, n // 5) == 0:
            log(f"  memory (child process): {done}/{n} tickets")

    await throughput(one, n, concurrency)
    await bench.close()
    return {"warm_mib": warm_mib, "peak_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: Linux's `VmHWM`, else `ru_maxrss`.

    Linux carries `ru_maxrss` across `fork` and `exec`, so a child started by a parent that had trained the
    classifier (300 MiB) reported the parent's peak as its own; `VmHWM` belongs to the process's own memory map.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- report ----------------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    from importlib.metadata import version

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "langgraph": version("langgraph"),
        "langgraph-checkpoint-sqlite": version("langgraph-checkpoint-sqlite"),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_ratios(lat: dict[str, Any], against: str) -> str:
    """The app's CPU time per ticket against a bare side's, p50 / p95."""
    p50 = lat["triage_cpu_p50"] / lat[f"{against}_cpu_p50"]
    p95 = lat["triage_cpu_p95"] / lat[f"{against}_cpu_p95"]
    return f"{p50:.2f}x / {p95:.2f}x"


def report_rows(figures: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """The table rows for the figures that were measured."""
    rows: list[tuple[str, str, str, str, str]] = []
    if "latency" in figures:
        lat = figures["latency"]
        rows.append(
            (
                "latency per ticket p50 / p95 (ms)",
                f"{lat['triage_p50']:.1f} / {lat['triage_p95']:.1f}",
                f"{lat['bare_p50']:.1f} / {lat['bare_p95']:.1f}",
                f"{lat['ratio_p50']:.2f}x / {lat['ratio_p95']:.2f}x",
                "<= 1.3x",
            )
        )
        rows.append(("  median of per-ticket ratios", "", "", f"{lat['paired_ratio_p50']:.2f}x", "<= 1.3x"))
        (low50, high50), (low95, high95) = lat["ratio_p50_interval"], lat["ratio_p95_interval"]
        rows.append(
            (
                "  95% interval of the ratio, tickets resampled: p50 / p95",
                "",
                "",
                f"{low50:.2f}-{high50:.2f}x / {low95:.2f}-{high95:.2f}x",
                "",
            )
        )
        rows.append(
            (
                "CPU time per ticket p50 / p95 (ms)",
                f"{lat['triage_cpu_p50']:.1f} / {lat['triage_cpu_p95']:.1f}",
                f"{lat['bare_cpu_p50']:.1f} / {lat['bare_cpu_p95']:.1f}",
                cpu_ratios(lat, "bare"),
                "",
            )
        )
        if len(lat.get("pass_ratios", ())) > 1:
            each = lat["pass_ratios"]

            def ratios(kind: str) -> str:
                shown = (f"{r[f'{kind}_p50']:.2f}x / {r[f'{kind}_p95']:.2f}x" if r["samples"] else "none" for r in each)
                return ", ".join(shown)

            wall, cpu = ratios("ratio"), ratios("cpu_ratio")
            rows.append((f"  each of the {len(each)} passes alone: latency p50 / p95", "", "", wall, ""))
            rows.append(("  each pass alone: CPU p50 / p95", "", "", cpu, ""))
            medians = (
                f"{lat['ticket_median_ratio_p50']:.2f}x / {lat['ticket_median_ratio_p95']:.2f}x, CPU "
                f"{lat['ticket_median_cpu_ratio_p50']:.2f}x / {lat['ticket_median_cpu_ratio_p95']:.2f}x"
            )
            rows.append(("  each ticket's median over its runs: latency p50 / p95, CPU", "", "", medians, ""))
        if "schemas" in lat:
            sch = lat["schemas"]
            wall = sch["schemas_ms_p50"] / sch["bare_ms_p50"], sch["schemas_ms_p95"] / sch["bare_ms_p95"]
            cpu = sch["schemas_cpu_p50"] / sch["bare_cpu_p50"], sch["schemas_cpu_p95"] / sch["bare_cpu_p95"]
            rows.append(
                (
                    "  bare with triage's state schemas, no-op nodes: latency p50 / p95 (ms), CPU",
                    "",
                    f"{sch['schemas_ms_p50']:.1f} / {sch['schemas_ms_p95']:.1f}",
                    f"{wall[0]:.2f}x / {wall[1]:.2f}x, CPU {cpu[0]:.2f}x / {cpu[1]:.2f}x",
                    "",
                )
            )
            if lat["ratio_p50"] > 1:
                share = (wall[0] - 1) / (lat["ratio_p50"] - 1)
                rows.append(("    its share of the app's gap to bare, latency p50", "", "", f"{share:.0%}", ""))
        long = lat.get("long", {})
        if long.get("samples"):
            rows.append(
                (
                    f"  long tickets ({long['tickets']} packaged, {long['chars_min']:,}-{long['chars_max']:,} "
                    "characters): latency p50 (ms), CPU",
                    f"{long['triage_ms_p50']:.1f}",
                    f"{long['bare_ms_p50']:.1f}",
                    f"{long['triage_ms_p50'] / long['bare_ms_p50']:.2f}x, "
                    f"CPU {long['triage_cpu_p50'] / long['bare_cpu_p50']:.2f}x",
                    "not in the pool above",
                )
            )
        rows.append(
            (
                "  bare on LangGraph's stock saver: latency p50 / p95 (ms)",
                "",
                f"{lat['stock_p50']:.1f} / {lat['stock_p95']:.1f}",
                f"{lat['triage_p50'] / lat['stock_p50']:.2f}x / {lat['triage_p95'] / lat['stock_p95']:.2f}x",
                "<= 1.3x",
            )
        )
        rows.append(("    median of per-ticket ratios", "", "", f"{lat['stock_paired_ratio_p50']:.2f}x", "<= 1.3x"))
        rows.append(
            (
                "    CPU time per ticket p50 / p95 (ms)",
                "",
                f"{lat['stock_cpu_p50']:.1f} / {lat['stock_cpu_p95']:.1f}",
                cpu_ratios(lat, "stock"),
                "<= 1.3x",
            )
        )
        rows.append(
            (
                "    checkpoints, blobs per ticket (KB)",
                "",
                f"{lat['stock_checkpoints']:.1f}, {lat['stock_blob_bytes'] / 1024:.1f}",
                "",
                "",
            )
        )
        rows.append(
            (
                "checkpoints per ticket",
                f"{lat['triage_checkpoints']:.1f}",
                f"{lat['bare_checkpoints']:.1f}",
                "",
                "equal (same shape)",
            )
        )
        rows.append(
            (
                "checkpoint + write blobs per ticket (KB)",
                f"{lat['triage_blob_bytes'] / 1024:.1f}",
                f"{lat['bare_blob_bytes'] / 1024:.1f}",
                f"{lat['triage_blob_bytes'] / lat['bare_blob_bytes']:.1f}x",
                "",
            )
        )
    if "throughput" in figures:
        tp = figures["throughput"]
        levels = sorted(tp["triage"])
        rows.append(
            (
                f"throughput at {' / '.join(map(str, levels))} (tickets/s, {figures['throughput_tickets']} each)",
                " / ".join(f"{tp['triage'][c]:.1f}" for c in levels),
                " / ".join(f"{tp['bare'][c]:.1f}" for c in levels),
                " / ".join(f"{tp['triage'][c] / tp['bare'][c]:.2f}x" for c in levels),
                "grows with concurrency",
            )
        )
    if "processes" in figures:
        procs = figures["processes"]
        for backend, label in (("sqlite", "the home's SQLite files"), ("postgres", "PostgreSQL, fsync on")):
            found = procs.get(backend, {})
            counts = sorted(c for c in found if c != "error")
            rates = [found[c]["tickets_per_s"] for c in counts]
            # The workers' CPU over the run's wall time: how many of the machine's cores they kept busy.
            cores = " / ".join(f"{found[c]['cpu_s'] / found[c]['wall_s']:.1f}" for c in counts)
            value = " / ".join(f"{rate:.1f}" for rate in rates) + (
                f" ({rates[-1] / rates[0]:.2f}x), cores busy {cores}" if len(rates) > 1 else ""
            )
            rows.append(
                (
                    f"throughput with {' / '.join(map(str, PROCESS_COUNTS))} worker processes on {label} "
                    f"(tickets/s, {figures['processes_tickets']} in all, {PROCESS_CONCURRENCY} at once in each)",
                    value if rates else f"not measured: {found.get('error')}",
                    "",
                    "",
                    "grows where the work allows it",
                )
            )
    if "store" in figures:
        store = figures["store"]
        rows.append(
            (
                "checkpoint store per ticket (KB, file growth)",
                f"{store['triage'] / 1024:.1f}",
                f"{store['bare'] / 1024:.1f}",
                f"{store['triage'] / store['bare']:.1f}x" if store["bare"] else "",
                "<= 40 KB",
            )
        )
        if "stock" in store:
            rows.append(("  bare on LangGraph's stock saver", "", f"{store['stock'] / 1024:.1f}", "", ""))
    if "eval" in figures:
        ev, cases = figures["eval"], figures["eval_cases"]
        rows.append(
            (
                f"`triage eval`, {cases} cases: wall / CPU (s)",
                f"{ev['wall_s']:.1f} / {ev['cpu_s']:.1f} ({ev['wall_s'] / cases * 1000:.0f} ms a case)",
                "",
                "",
                "<= 20 s for 1,000",
            )
        )
        reported = f"{ev['latency_ms']['p50']:.0f} / {ev['latency_ms']['p95']:.0f}"
        rows.append(("  its reported latency p50 / p95 (ms)", reported, "", "", ""))
    if "memory" in figures:
        mem = figures["memory"]
        rows.append(
            (
                f"peak memory, {figures['memory_tickets']} tickets in one process (MiB)",
                f"{mem['peak_mib']:.0f} (warm {mem['warm_mib']:.0f})",
                "",
                "",
                "< 250 MiB",
            )
        )
    if "start" in figures:
        st = figures["start"]
        helped = f"{st['help_s']:.2f} / {st['help_cpu_s']:.2f}"
        rows.append(("`triage --help`: wall / CPU (s)", helped, "", "", "< 0.3 s"))
        run = f"{st['run_s']:.2f} / {st['run_cpu_s']:.2f}"
        rows.append(("`triage run`, warm home, in its own process: wall / CPU (s)", run, "", "", ""))
        served = f"{st['run_worker_s']:.2f} / {st['run_worker_cpu_s']:.2f}"
        rows.append(("`triage run`, warm home, answered by `triage worker`: wall / CPU (s)", served, "", "", "< 1 s"))
    for served, label in ((False, "in its own process"), (True, "answered by `triage worker`")):
        resumes = [r for r in figures.get("resume") or [] if bool(r.get("worker")) == served]
        if resumes:
            wall = statistics.median(r["wall_s"] for r in resumes)
            cpu = statistics.median(r["cpu_s"] for r in resumes)
            graph = statistics.median(r["graph_ms"] for r in resumes)
            row = f"{wall:.2f} / {cpu:.2f}, {graph:.0f}"
            rows.append((f"resume with `triage approve`, {label}: wall / CPU (s), graph (ms)", row, "", "", ""))
    return rows


def print_report(figures: dict[str, Any]) -> None:
    """The figures as a table on stdout."""
    rows = report_rows(figures)
    header = ("figure", "triage", "bare LangGraph", "ratio", "goal")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    m = figures["machine"]
    lat = figures.get("latency", {})
    skipped = lat.get("skipped", 0)
    print(
        f"\n{m['cores']} cores ({m['cpu']}), Python {m['python']}, langgraph {m['langgraph']}; load average "
        f"{m['load_avg_start']} at start, {m['load_avg_end']} at end; {figures['mode']} run in "
        f"{figures['total_s']:.0f} s; latency pools {lat.get('tickets', 0)} samples a side from "
        f"{lat.get('passes', 1)} passes; {skipped} app runs paused, failed or took a path the bare graph does not "
        "model, and were left out of latency"
    )


PHASES = ("latency", "throughput", "processes", "resume", "start", "store", "eval", "memory")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Run the phases asked for (all by default); return the figures."""
    quick = args.quick
    only = set(args.only.split(",")) if args.only else set(PHASES)
    if only - set(PHASES):
        raise SystemExit(f"unknown phase(s) {', '.join(sorted(only - set(PHASES)))}; choose from {', '.join(PHASES)}")
    figures: dict[str, Any] = {"mode": "quick" if quick else "full", "machine": machine()}
    root = Path(tempfile.mkdtemp(prefix="triage-bench-"))
    # A classifier cache from the environment is reused (trained once); otherwise one is trained here.
    cache = Path(os.environ["TRIAGE_CACHE_HOME"]) if os.environ.get("TRIAGE_CACHE_HOME") else root / "cache"
    home = root / "home"
    env = {**os.environ, "TRIAGE_CACHE_HOME": str(cache), "TRIAGE_HOME": str(home)}
    env.pop("TRIAGE_POLICY_DIR", None)
    # The commands are timed as an installed package runs: from bytecode. With PYTHONDONTWRITEBYTECODE set (some
    # CI images and containers set it) every process compiled triage's 150 modules from source: 0.4-0.5 s a start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    compile_bytecode()
    try:
        tickets = bench_tickets()
        log(f"opening the app in {home} (trains the classifier into {cache} on first use)")
        bench = Bench(home, cache)
        await bench.open()

        # Every phase needs the routes the latency phase learns (and a warm home).
        n = args.latency_tickets or (8 if quick else 200)
        passes = args.latency_passes or (1 if quick else 3)
        log(f"latency: {n} tickets, {passes} passes, app and bare graph interleaved")
        lat = await latency_phase(bench, tickets, n, passes)
        t_ms, b_ms = lat["triage_ms"], lat["bare_ms"]
        path = home / "checkpoints.sqlite"
        t_count, t_bytes = checkpoint_rows(path, lat["triage_threads"])
        b_count, b_bytes = checkpoint_rows(path, lat["bare_threads"])
        s_count, s_bytes = checkpoint_rows(path, lat["stock_threads"])
        figures["latency"] = {
            "tickets": len(t_ms),
            "passes": passes,
            "pass_ratios": lat["pass_ratios"],
            "skipped": lat["skipped"],
            "triage_p50": percentile(t_ms, 0.5),
            "triage_p95": percentile(t_ms, 0.95),
            "bare_p50": percentile(b_ms, 0.5),
            "bare_p95": percentile(b_ms, 0.95),
            "triage_checkpoints": t_count,
            "bare_checkpoints": b_count,
            "triage_blob_bytes": t_bytes,
            "bare_blob_bytes": b_bytes,
            "stock_p50": percentile(lat["stock_ms"], 0.5),
            "stock_p95": percentile(lat["stock_ms"], 0.95),
            "stock_checkpoints": s_count,
            "stock_blob_bytes": s_bytes,
        }
        figures["latency"]["ratio_p50"] = figures["latency"]["triage_p50"] / figures["latency"]["bare_p50"]
        figures["latency"]["ratio_p95"] = figures["latency"]["triage_p95"] / figures["latency"]["bare_p95"]
        # Each pair ran back to back, so its ratio is the least disturbed by load that comes and goes.
        figures["latency"]["paired_ratio_p50"] = percentile([t / b for t, b in zip(t_ms, b_ms, strict=True)], 0.5)
        # Each ticket's median over its runs (one a pass, fewer if left out), then p50 / p95 over the tickets.
        for kind, (app_values, bare_values) in {
            "ticket_median_ratio": (t_ms, b_ms),
            "ticket_median_cpu_ratio": (lat["triage_cpu"], lat["bare_cpu"]),
        }.items():
            app_medians = per_ticket_medians(lat["ticket_indices"], app_values)
            bare_medians = per_ticket_medians(lat["ticket_indices"], bare_values)
            for q in (0.5, 0.95):
                figures["latency"][f"{kind}_p{round(q * 100)}"] = percentile(app_medians, q) / percentile(
                    bare_medians, q
                )
        for q in (0.5, 0.95):
            low, high = ratio_interval(lat["ticket_indices"], t_ms, b_ms, q)
            figures["latency"][f"ratio_p{round(q * 100)}_interval"] = [low, high]
        figures["latency"]["distinct_tickets"] = len(set(lat["ticket_indices"]))
        # CPU time of the process per ticket (all its threads): what the work costs, whatever else the machine runs.
        figures["latency"]["triage_cpu_p50"] = percentile(lat["triage_cpu"], 0.5)
        figures["latency"]["bare_cpu_p50"] = percentile(lat["bare_cpu"], 0.5)
        figures["latency"]["triage_cpu_p95"] = percentile(lat["triage_cpu"], 0.95)
        figures["latency"]["bare_cpu_p95"] = percentile(lat["bare_cpu"], 0.95)
        figures["latency"]["stock_cpu_p50"] = percentile(lat["stock_cpu"], 0.5)
        figures["latency"]["stock_cpu_p95"] = percentile(lat["stock_cpu"], 0.95)
        figures["latency"]["stock_paired_ratio_p50"] = percentile(
            [t / b for t, b in zip(t_ms, lat["stock_ms"], strict=True)], 0.5
        )
        if abs(t_count - b_count) > 0.01 or abs(t_count - s_count) > 0.01:
            log(f"  WARNING: checkpoints per ticket differ (app {t_count:.2f}, bare {b_count:.2f}): shapes differ")
        log(f"schemas: the bare graph against itself with triage's state schemas, {passes} passes")
        figures["latency"]["schemas"] = await schemas_phase(bench, lat["routed"], passes)
        log(f"long tickets: the packaged tickets over {LONG_CHARS:,} characters, {passes * 2} passes")
        figures["latency"]["long"] = await long_phase(bench, tickets, passes * 2)

        if "throughput" in only:
            total = 8 if quick else 200
            levels = (1, 8, 32)
            log(f"throughput: {total} tickets at concurrency {levels}")
            figures["throughput_tickets"] = total
            figures["throughput"] = await throughput_phase(bench, lat["routed"], total, levels)

        if "processes" in only:
            total = 16 if quick else 200
            log(f"processes: {total} tickets shared by {' and '.join(map(str, PROCESS_COUNTS))} worker processes")
            figures["processes_tickets"] = total
            figures["processes"] = processes_phase(root, cache, [ticket for ticket, _ in lat["routed"]], total)

        if "resume" in only:
            log("resume: pausing tickets on an approval, approving each with `triage approve` (own process, worker)")
            figures["resume"] = await resume_phase(bench, home, env, 1 if quick else 3)
        await bench.close()

        if "start" in only:
            log("start times: `triage --help` and `triage run` in the warm home")
            figures["start"] = start_times(home, env, 1 if quick else 5)

        if "store" in only:
            store_n = 5 if quick else 100
            log(f"checkpoint store: {store_n} tickets each for the app and the bare graph, fresh homes")
            figures["store"] = await store_phase(root, cache, lat["routed"], store_n)

        if "eval" in only:
            cases = args.eval_cases or (5 if quick else 1000)
            log(f"eval: `triage eval` of {cases} cases in a fresh process")
            figures["eval_cases"] = cases
            figures["eval"] = eval_phase(root, env, cases)
            log(f"  eval: {figures['eval']['wall_s']:.1f} s")

        if "memory" in only:
            mem_n = 10 if quick else 1000
            log(f"memory: {mem_n} tickets in one fresh process")
            figures["memory_tickets"] = mem_n
            mem_args = ["--phase", "memory", "--tickets", str(mem_n), "--home", str(root / "mem")]
            _, stdout = run_subprocess([sys.executable, __file__, *mem_args], env)
            figures["memory"] = json.loads(stdout)
    finally:
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    figures["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    figures["total_s"] = time.perf_counter() - STARTED
    return figures


def positive(text: str) -> int:
    """An argument that counts something: a whole number, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def main() -> int:
    """Parse options, run the benchmark (or one child phase), print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: every phase runs once")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes and reports")
    parser.add_argument("--only", help=f"comma-separated phases to run (latency always runs): {', '.join(PHASES)}")
    parser.add_argument("--latency-tickets", type=positive, help="tickets for latency [default: 200, 8 with --quick]")
    parser.add_argument(
        "--latency-passes", type=positive, help="times the latency tickets are measured [default: 3, 1 with --quick]"
    )
    parser.add_argument("--eval-cases", type=positive, help="cases for the eval phase [default: 1000, 5 with --quick]")
    parser.add_argument("--phase", choices=["memory"], help=argparse.SUPPRESS)
    parser.add_argument("--tickets", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "memory":
        cache = Path(os.environ["TRIAGE_CACHE_HOME"])
        print(json.dumps(asyncio.run(memory_child(args.home, cache, args.tickets, 8))))
        return 0
    figures = asyncio.run(main_async(args))
    print_report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
