"""What conversations and customer memory cost a single ticket: one run, the same app, two graphs, interleaved.

Each single-ask eval ticket (one that does not pause for an approval) runs twice on the same app and checkpoint
file: once through the app's graph (conversation record at `finish`, customer memory read and written through
LangGraph's store) and once through the same graph compiled without the store (no memory). Which goes first
alternates. Prints the median wall time of each and the median per-ticket difference.

    .venv/bin/python scripts/bench_conversations.py [--tickets 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from triage import TriageApp
from triage.evals.dataset import load_cases
from triage.settings import Settings


async def bench(tickets: int) -> dict[str, float]:
    """Run the tickets both ways; return the medians in milliseconds."""
    from triage.graphs.support import build_support_graph

    cases = [c for c in load_cases() if c.expected.approval_tier == "none" and c.ticket.customer_id][:tickets]
    with tempfile.TemporaryDirectory(prefix="triage-bench-conv-") as tmp:
        app = TriageApp(Settings(home=Path(tmp) / "home"))
        await app.arun(cases[0].ticket)  # warm up: open the stores, load the classifier
        engine = await app._get_engine()
        with_memory = engine.graph
        without_memory = build_support_graph(policy=engine.services.policy).compile(
            checkpointer=engine.services.saver, name="support"
        )
        timings: dict[str, list[float]] = {"memory": [], "no_memory": []}
        for index, case in enumerate(cases):
            order = [("memory", with_memory), ("no_memory", without_memory)]
            for name, graph in order if index % 2 == 0 else reversed(order):
                engine.graph = graph
                started = time.perf_counter()
                await app.arun(case.ticket)
                timings[name].append((time.perf_counter() - started) * 1000)
        engine.graph = with_memory
        await app.aclose()
    differences = [a - b for a, b in zip(timings["memory"], timings["no_memory"], strict=True)]
    return {
        "tickets": float(len(cases)),
        "median_ms_with_memory": statistics.median(timings["memory"]),
        "median_ms_without_memory": statistics.median(timings["no_memory"]),
        "median_difference_ms": statistics.median(differences),
    }


def main() -> None:
    """Parse the options, run, print one figure a line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=40)
    figures = asyncio.run(bench(parser.parse_args().tickets))
    for name, value in figures.items():
        print(f"{name}: {value:.1f}")


if __name__ == "__main__":
    main()
