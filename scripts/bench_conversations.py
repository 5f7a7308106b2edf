"""What planning, conversations and customer memory cost a single-ask ticket: one run, one app, interleaved.

Each single-ask eval ticket (not tagged multi_intent, not pausing for an approval) runs three times on the same app
and checkpoint file, in rotating order: through the app's graph as it is; through it with the planner switched off
(`classify` never plans); and through the same graph compiled without the store (no customer memory). Prints the
median wall time of each and the median per-ticket differences.

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
    from triage.nodes import classify

    cases = [
        c
        for c in load_cases()
        if c.expected.approval_tier == "none" and c.ticket.customer_id and "multi_intent" not in c.tags
    ][:tickets]
    with tempfile.TemporaryDirectory(prefix="triage-bench-conv-") as tmp:
        app = TriageApp(Settings(home=Path(tmp) / "home"))
        await app.arun(cases[0].ticket)  # warm up: open the stores, load the classifier
        engine = await app._get_engine()
        with_memory = engine.graph
        without_memory = build_support_graph(policy=engine.services.policy).compile(
            checkpointer=engine.services.saver, name="support"
        )
        planner = classify.plan_asks

        async def no_plan(*_: object) -> None:
            return None

        variants = [("as_is", with_memory, planner), ("no_planner", with_memory, no_plan)]
        variants.append(("no_memory", without_memory, planner))
        timings: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        for index, case in enumerate(cases):
            shift = index % len(variants)
            for name, graph, plan in variants[shift:] + variants[:shift]:
                engine.graph = graph
                classify.plan_asks = plan  # type: ignore[assignment]
                started = time.perf_counter()
                await app.arun(case.ticket)
                timings[name].append((time.perf_counter() - started) * 1000)
        engine.graph, classify.plan_asks = with_memory, planner
        await app.aclose()

    def median_difference(other: str) -> float:
        return statistics.median(a - b for a, b in zip(timings["as_is"], timings[other], strict=True))

    return {
        "tickets": float(len(cases)),
        **{f"median_ms_{name}": statistics.median(values) for name, values in timings.items()},
        "planner_cost_ms (as_is - no_planner)": median_difference("no_planner"),
        "memory_cost_ms (as_is - no_memory)": median_difference("no_memory"),
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
