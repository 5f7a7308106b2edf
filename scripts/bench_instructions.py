"""Instructions per ticket, app against bare LangGraph, counted by valgrind.

`make bench-instructions`, or `.venv/bin/python scripts/bench_instructions.py [--tickets N]`.

CPU time on a shared or virtual machine varies by a sixth from one run of the same work to the next, and the
ratio of two CPU times inherits that. The number of instructions a process executes does not depend on what else
the machine runs. This script counts them with valgrind's callgrind (user-space instructions, every thread) for the
same work as `scripts/bench.py`'s latency phase: tickets that the app and the bare graph of the same shape run
through the same nodes, on the app's own saver (`bare`) and on LangGraph's stock one (`stock`).

Each side runs in a process of its own under valgrind, after the same warm-up (the stores opened, the classifier
loaded, every selected ticket run once on each side); a run with no tickets beyond the warm-up is subtracted, so
what is left is the instructions of N tickets. valgrind runs programs about fifty times slower: the default of 96
tickets takes 6-7 minutes on 2 cores. It needs `valgrind` on the PATH (a system package, e.g. Debian's `valgrind`);
without it the script says so and exits 2. Kernel time (the SQLite file's system calls, thread hand-offs) is not
counted, so this ratio is higher than the CPU-time ratio, in which both sides share that time.

The counts are not exact: threads hand the interpreter lock to each other at moments valgrind's scheduling decides.
With 96 tickets two runs of the same code agreed to 0.1 M a ticket (the app 50.92 and 51.02 M, the stock side
32.16 and 32.21 M); with 24 the bare side moved between 23.8 and 27.6 M. Once in six runs one side came out far off
(the bare graph at 47 M, 27.5 M when run again): a figure that stands out is to be run again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import Bench, bench_tickets, checkpoint_count

CANDIDATES = 40
"""Bench tickets tried in the warm-up; those the bare graph models (same nodes, same checkpoints) are kept."""
SIDES = ("triage", "bare", "stock")


async def child(side: str, tickets: int, cache: Path) -> int:
    """Warm up, then run `tickets` tickets on one side; print how many tickets the warm-up kept."""
    home = Path(tempfile.mkdtemp(prefix="triage-instr-"))
    bench = Bench(home, cache)
    try:
        await bench.open()
        reader = sqlite3.connect(bench.app.settings.checkpoints_path)
        kept: list[tuple[dict[str, Any], str]] = []
        for i, ticket in enumerate(bench_tickets()[:CANDIDATES]):
            result = await bench.run_triage(ticket, f"warm-triage-{i}")
            if result.status not in ("completed", "escalated") or result.route is None:
                continue  # paused on an approval: not the bare graph's shape
            await bench.run_bare(ticket, result.route, f"warm-bare-{i}")
            await bench.run_bare(ticket, result.route, f"warm-stock-{i}", side="stock")
            if len({checkpoint_count(reader, f"warm-{s}-{i}") for s in SIDES}) == 1:
                kept.append((ticket, result.route))
        reader.close()
        for n in range(tickets):
            ticket, route = kept[n % len(kept)]
            await bench.run_side(side, ticket, route, f"run-{n}")
        print(f"kept {len(kept)}")
        return 0
    finally:
        await bench.close()
        shutil.rmtree(home, ignore_errors=True)


def collected(side: str, tickets: int, cache: Path) -> tuple[int, str]:
    """Run the child for `side` under callgrind; the instructions it executed, and what it printed."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        side,
        "--tickets",
        str(tickets),
        "--cache",
        str(cache),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{side} x {tickets} failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1)), done.stdout.strip()


def main() -> int:
    """Count each side's instructions (or, with `--child`, be the process that valgrind runs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=96, help="tickets per side, beyond the warm-up")
    parser.add_argument("--cache", type=Path, help="classifier cache (default: $TRIAGE_CACHE_HOME, else a temp dir)")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = args.cache or Path(os.environ.get("TRIAGE_CACHE_HOME") or tempfile.mkdtemp(prefix="triage-instr-cache-"))
    if args.child:
        return asyncio.run(child(args.child, args.tickets, cache))
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: install it (e.g. `apt-get install valgrind`) to count instructions")
        return 2
    started = time.perf_counter()
    # The first run trains the classifier into the cache if it is not there yet, outside valgrind.
    subprocess.run([sys.executable, __file__, "--child", "triage", "--tickets", "0", "--cache", str(cache)], check=True)
    runs = [("triage", 0), *((side, args.tickets) for side in SIDES)]
    counts: dict[tuple[str, int], int] = {}

    def one(run: tuple[str, int]) -> None:
        counts[run], kept = collected(*run, cache)
        print(
            f"[{time.perf_counter() - started:6.1f}s] {run[0]} x {run[1]}: {counts[run]:,} instructions ({kept})",
            file=sys.stderr,
            flush=True,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, runs))
    base = counts[("triage", 0)]
    per = {side: (counts[(side, args.tickets)] - base) / args.tickets for side in SIDES}
    print(f"instructions per ticket, {args.tickets} tickets a side (millions):")
    for side in SIDES:
        print(f"  {side:5s} {per[side] / 1e6:8.2f}")
    print(f"app / bare on triage's saver: {per['triage'] / per['bare']:.2f}x")
    print(f"app / bare on LangGraph's stock saver: {per['triage'] / per['stock']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
