"""Benchmark the cascade against sending every ticket to the model: `make bench-models`.

Runs the eval suite twice in one process against the dev model server (real HTTP on 127.0.0.1): once with the
cascade (the local tier first, the cheap model only where it is unsure) and once with every ticket sent to the
cheap model. Prints model tokens and cost per ticket, task success and the share decided by each tier for both,
and, as its last line, `cascade/all-model token ratio: R`. Reply rewrites are off in both runs: the comparison is
of the judgment tiers (rewrites are an opt-in, per-reply spend that would be the same in both). For the same reason
the technical specialist's agent step is off in both (`[agent] enabled = false` in a copy of the policy bundle): its
spend follows the route, not who decided it.

Options: `--limit N` runs only the first N cases; `--concurrency N` (default 4).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from triage.evals.dataset import load_cases
from triage.evals.metrics import run_metrics, tier_metrics
from triage.evals.runner import run_cases
from triage.models.dev_server import DEV_MODELS, DevModelServer
from triage.policies.bundle import POLICY_FILES, load_policy_bundle
from triage.settings import Settings

PRICES = {
    "cheap_input_price_per_1k": 0.00015,
    "cheap_output_price_per_1k": 0.0006,
    "strong_input_price_per_1k": 0.0025,
    "strong_output_price_per_1k": 0.01,
}
"""Illustrative list prices (USD per 1k tokens) for a small and a large hosted model."""


def bench(limit: int | None, concurrency: int) -> dict[str, dict[str, Any]]:
    """Run both configurations; return their figures by name."""
    cases = load_cases(limit=limit)
    figures: dict[str, dict[str, Any]] = {}
    with DevModelServer() as server, tempfile.TemporaryDirectory(prefix="triage-bench-") as tmp:
        cheap, strong = DEV_MODELS
        policies = Path(tmp) / "policies"
        policies.mkdir()
        for name in POLICY_FILES:
            text = (resources.files("triage.policies") / "default" / name).read_text(encoding="utf-8")
            if name == "support.toml":
                text = text.replace("\nenabled = true", "\nenabled = false")
            (policies / name).write_text(text, encoding="utf-8")
        if load_policy_bundle(policies).support.agent.enabled:
            raise RuntimeError("could not switch the agent step off in the bench's policy copy")
        base = Settings(
            home=Path(tmp) / "home",
            policy_dir=policies,
            cache_home=Settings().cache_dir.resolve(),
            model_base_url=server.base_url,
            cheap_model=cheap,
            strong_model=strong,
            model_rewrites_replies=False,
        ).model_copy(update=PRICES)
        for name, all_to_model in (("cascade", False), ("all-model", True)):
            run = asyncio.run(
                run_cases(
                    cases, settings=base.model_copy(update={"all_to_model": all_to_model}), concurrency=concurrency
                )
            )
            totals = run_metrics(run.evaluations)
            figures[name] = {
                "cases": totals["cases"],
                "tokens": totals["tokens"],
                "cost_usd": totals["cost_usd"],
                "task_success_rate": totals["task_success_rate"],
                "route_accuracy": totals["route_accuracy"],
                "tiers": tier_metrics(run.evaluations),
                "requests": len(server.received),
            }
            server.clear()
    return figures


def main(argv: list[str] | None = None) -> None:
    """Entry point: print both runs' figures and the token ratio (last line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    figures = bench(args.limit, args.concurrency)
    for name, f in figures.items():
        n = max(1, f["cases"])
        shares = ", ".join(
            f"{tier} {t['share']:.1%} (accuracy {t['route_accuracy']:.1%})" for tier, t in f["tiers"].items()
        )
        print(
            f"{name}: {f['cases']} tickets, {f['tokens'] / n:.1f} model tokens/ticket, "
            f"${f['cost_usd'] / n:.6f}/ticket, "
            f"{f['requests']} model requests, task success {f['task_success_rate']:.1%}, "
            f"route accuracy {f['route_accuracy']:.1%}; decided by: {shares}"
        )
    ratio = figures["cascade"]["tokens"] / max(1, figures["all-model"]["tokens"])
    print(f"cascade/all-model token ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
