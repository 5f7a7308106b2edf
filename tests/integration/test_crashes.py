"""SIGKILL worker processes at random points while they triage tickets and approve refunds, then recover every
thread from a fresh process. Invariants: every thread reaches a terminal status, no effect happens twice, and the
audit trail has a line for every effect and decision.

The default run kills a handful of workers; the long variant (at least 100 kills that land mid-work) runs with
`pytest -m long tests/integration/test_crashes.py` (or `CRASH_KILLS=150 pytest -m long ...`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.invariants import effects_happened_once
from tests.integration.zygote import Zygote
from triage import TriageApp
from triage.settings import Settings

WORKER = Path(__file__).with_name("crash_worker.py")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    home = tmp_path_factory.mktemp("crash-template") / "home"
    app = TriageApp(Settings(home=home, cache_home=model_cache))
    app.warm_up()
    app.close()
    return home


class Workers:
    """Forks worker processes from a zygote that imported triage once (`tests.integration.zygote`), and SIGKILLs
    them."""

    def __init__(self, cache: Path) -> None:
        self.zygote = Zygote("tests.integration.crash_worker", str(cache))

    def kill_at_random(self, home: Path, log: Path, rng: random.Random) -> int:
        """Start a worker on `home`, SIGKILL it at a random moment of its work; the tickets it had started."""
        pid = self.zygote.fork(log, log.with_suffix(".err"), [str(home), str(rng.randrange(1 << 30))])
        deadline = time.monotonic() + 300
        while "ready" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the worker did not get ready"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        os.kill(pid, signal.SIGKILL)
        assert self.zygote.reap(pid) == -signal.SIGKILL, "the worker was killed, not finished"
        return log.read_text().count("start ")

    def close(self) -> None:
        self.zygote.close()


def crash_and_recover(template: Path, tmp_path: Path, model_cache: Path, kills: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    homes, landed = [], 0
    workers = Workers(model_cache)
    try:
        for number in range(kills):
            home = tmp_path / f"home{number}"
            shutil.copytree(template, home)
            started = workers.kill_at_random(home, tmp_path / f"worker{number}.log", rng)
            landed += started > 0
            homes.append(home)
            print(f"kill {number + 1}/{kills}: the worker had started {started} ticket(s)", flush=True)
    finally:
        workers.close()
    done = subprocess.run(
        [sys.executable, str(WORKER), "recover", str(model_cache), *map(str, homes)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    figures = {"kills": kills, "landed_mid_work": landed, "threads_continued": 0, "refunds": 0, "effects": 0}
    for home, found in zip(homes, report, strict=True):
        assert set(found["after"]) <= {"completed", "escalated"}, found
        figures["threads_continued"] += found["continued"]
        checked = effects_happened_once(Settings(home=home))
        figures["refunds"] += checked["refunds"]
        figures["effects"] += checked["effects"]
    print(f"\ncrash suite: {figures}")
    return figures


@pytest.mark.slow
def test_random_kills_are_recovered_exactly_once(template: Path, tmp_path: Path, model_cache: Path) -> None:
    figures = crash_and_recover(template, tmp_path, model_cache, kills=5, seed=20261130)
    assert figures["landed_mid_work"] >= 3


@pytest.mark.long
def test_many_random_kills_are_recovered_exactly_once(template: Path, tmp_path: Path, model_cache: Path) -> None:
    kills = int(os.environ.get("CRASH_KILLS", "110"))
    figures = crash_and_recover(template, tmp_path, model_cache, kills=kills, seed=int(time.time()))
    assert figures["landed_mid_work"] >= 100
