"""`scripts/bench.py --quick` runs every phase and prints every figure, so the benchmark cannot rot unnoticed."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_bench_prints_every_figure(tmp_path: Path, model_cache: Path) -> None:
    figures_path = tmp_path / "figures.json"
    env = {**os.environ, "TRIAGE_CACHE_HOME": str(model_cache)}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench.py"),
            "--quick",
            "--latency-passes",
            "2",
            "--json",
            str(figures_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for figure in (
        "latency per ticket p50 / p95",
        "each of the 2 passes alone",
        "95% interval of the ratio, tickets resampled",
        "each ticket's median over its runs",
        "throughput at 1 / 8 / 32",
        "throughput with 1 / 2 worker processes on the home's SQLite files",
        "throughput with 1 / 2 worker processes on PostgreSQL, fsync on",
        "checkpoint store per ticket",
        "bare on LangGraph's stock saver",
        "bare with triage's state schemas",
        "long tickets (5 packaged",
        "`triage eval`",
        "peak memory",
        "`triage --help`",
        "`triage run`, warm home, in its own process",
        "`triage run`, warm home, answered by `triage worker`",
        "resume with `triage approve`, in its own process",
        "resume with `triage approve`, answered by `triage worker`",
    ):
        assert figure in done.stdout, f"{figure!r} missing from:\n{done.stdout}"
    figures = json.loads(figures_path.read_text())
    latency = figures["latency"]
    # The bare graph has the app's shape: the same checkpoints per ticket on the same routes.
    assert latency["tickets"] > 0
    # Two passes over the same tickets, pooled: each pass's samples add up to the pooled ones.
    assert latency["passes"] == len(latency["pass_ratios"]) == 2
    assert sum(p["samples"] for p in latency["pass_ratios"]) == latency["tickets"]
    # Each ticket ran in both passes (or was left out of one), so there are fewer tickets than samples.
    assert 0 < latency["distinct_tickets"] < latency["tickets"]
    assert all(latency[f"ticket_median_{kind}_p{q}"] > 0 for kind in ("ratio", "cpu_ratio") for q in (50, 95))
    assert all(0 < latency[f"ratio_p{q}_interval"][0] <= latency[f"ratio_p{q}_interval"][1] for q in (50, 95))
    assert latency["triage_checkpoints"] == latency["bare_checkpoints"] == latency["stock_checkpoints"]
    # The bare graph declared with triage's schemas ran beside the bare one on each routed ticket, each pass.
    schemas = latency["schemas"]
    assert schemas["samples"] % latency["passes"] == 0
    assert 0 < schemas["samples"] // latency["passes"] <= latency["distinct_tickets"]
    assert schemas["bare_ms_p50"] > 0 and schemas["schemas_ms_p50"] > 0 and schemas["schemas_cpu_p95"] > 0
    assert latency["triage_p50"] > 0 and latency["bare_p50"] > 0 and latency["stock_p50"] > 0
    # The long tickets ran apart from the pool, each side on every one of them in every pass, in the same shape.
    long = latency["long"]
    assert long["tickets"] == 5 and long["samples"] == 5 * 2 * latency["passes"]
    assert long["chars_min"] > 1_000 and long["triage_ms_p50"] > 0 and long["bare_cpu_p50"] > 0
    # Triage's saver stores less than LangGraph's stock saver for the same bare graph (integer versions).
    assert latency["bare_blob_bytes"] < latency["stock_blob_bytes"]
    assert set(figures["throughput"]["triage"]) == {"1", "8", "32"}
    # Both stores measured (the suite's PostgreSQL server is installed), each with one and two worker processes.
    for store in ("sqlite", "postgres"):
        assert set(figures["processes"][store]) == {"1", "2"}, figures["processes"][store]
        assert all(run["tickets_per_s"] > 0 and run["cpu_s"] > 0 for run in figures["processes"][store].values())
    assert figures["store"]["triage"] > 0 and figures["store"]["bare"] > 0
    assert figures["eval"]["task_success_rate"] > 0.5
    assert figures["memory"]["peak_mib"] > 0
    assert figures["resume"] and figures["resume"][0]["graph_ms"] > 0


@pytest.mark.parametrize("side", ["triage", "bare", "stock"])
def test_the_instruction_count_benchmark_runs_each_side_it_counts(side: str, model_cache: Path) -> None:
    """`scripts/bench_instructions.py` runs each side under valgrind, which CI may not have; the process it runs
    there is run here without it, so the script cannot rot. Its warm-up keeps only tickets both graphs model."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_instructions.py"), "--child", side, "--tickets", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "TRIAGE_CACHE_HOME": str(model_cache)},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    kept = int(done.stdout.split()[-1])
    assert 0 < kept <= 40


def _bench_script() -> Any:
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_per_ticket_medians_take_each_tickets_median_over_its_runs() -> None:
    bench = _bench_script()
    # Ticket 4 ran three times (one of them stalled), ticket 1 twice, ticket 9 once: one median each, in the
    # order the tickets first ran.
    assert bench.per_ticket_medians([4, 1, 4, 9, 1, 4], [10.0, 3.0, 90.0, 5.0, 5.0, 12.0]) == [12.0, 4.0, 5.0]
    assert bench.per_ticket_medians([], []) == []
    with pytest.raises(ValueError):
        bench.per_ticket_medians([1, 2], [1.0])


def test_the_ratio_interval_resamples_whole_tickets() -> None:
    bench = _bench_script()
    # The app always takes twice the bare time: every resample says so.
    indices = [1, 2, 3, 1, 2, 3]
    bare = [10.0, 20.0, 30.0, 11.0, 19.0, 31.0]
    assert bench.ratio_interval(indices, [2 * b for b in bare], bare, 0.5) == pytest.approx((2.0, 2.0))
    # Ticket 3 is slow in the app alone: resamples that draw it more or less often move the ratio, so the interval
    # holds the pooled ratio and is wide; without that ticket it is narrow again.
    indices = [k % 20 for k in range(60)]
    bare = [10.0 + k % 20 for k in range(60)]
    app = [b * (3.0 if k % 20 == 3 else 1.2) for k, b in enumerate(bare)]
    pooled = bench.percentile(app, 0.95) / bench.percentile(bare, 0.95)
    low, high = bench.ratio_interval(indices, app, bare, 0.95)
    assert low <= pooled <= high and high - low > 0.1
    kept = [k for k in range(60) if k % 20 != 3]
    narrow = bench.ratio_interval([indices[k] for k in kept], [app[k] for k in kept], [bare[k] for k in kept], 0.95)
    assert narrow == pytest.approx((1.2, 1.2))
    # Three tickets of 30 runs each, the app 1.0x, 1.5x and 2.0x the bare graph: a draw of whole tickets is often
    # two of the fast one or two of the slow one, so the interval spans 1.0-2.0x; 90 runs drawn one by one would
    # mix the three and pin the median near 1.5x.
    thirty = [k // 30 for k in range(90)]
    app_thirty, bare_thirty = [10.0 * (1.0, 1.5, 2.0)[t] for t in thirty], [10.0] * 90
    assert bench.ratio_interval(thirty, app_thirty, bare_thirty, 0.5) == pytest.approx((1.0, 2.0))
    # About half the draws give 1.5x (the middle ticket's), a quarter each 1.0x and 2.0x: the middle 20% is 1.5x.
    assert bench.ratio_interval(thirty, app_thirty, bare_thirty, 0.5, level=0.2) == pytest.approx((1.5, 1.5))
    # The same draw every time (a fixed seed), and nothing to draw from gives no interval.
    assert bench.ratio_interval(indices, app, bare, 0.95) == (low, high)
    assert all(math.isnan(end) for end in bench.ratio_interval([], [], [], 0.5))
    with pytest.raises(ValueError):
        bench.ratio_interval([1, 2], [1.0, 2.0], [1.0], 0.5)
