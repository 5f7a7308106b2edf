"""Exactly-once effects: SIGKILL a real process at every checkpoint boundary of an approved refund, and between
the refund and its ledger entry and checkpoint; recover from a fresh process; one refund and one message result.

Each run is a process of its own, forked from a zygote that imported triage once (`tests.integration.zygote`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import rows
from tests.integration.zygote import Zygote
from triage import TriageApp
from triage.settings import Settings


class Driver:
    """Runs `crash_driver.py` in processes of their own, forked from one zygote that imported it (and triage)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.zygote = Zygote("tests.integration.crash_driver")

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.zygote.run(self.folder, args, timeout=120)


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    driver = Driver(tmp_path_factory.mktemp("driver-output"))
    yield driver
    driver.zygote.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, drive: Driver) -> tuple[Path, int]:
    """A seeded home (copied for each crash point) and the number of checkpoint writes in an undisturbed run."""
    home = tmp_path_factory.mktemp("template") / "home"
    app = TriageApp(Settings(home=home, cache_home=model_cache))
    app.warm_up()
    app.close()
    probe = tmp_path_factory.mktemp("probe") / "home"
    shutil.copytree(home, probe)
    counted = drive("count", str(probe), str(model_cache), "thr_probe")
    assert counted.returncode == 0, counted.stderr
    return home, json.loads(counted.stdout)["checkpoints"]


def crash_points() -> list[str]:
    # Enough for the scenario (17 writes today); points past the last write simply let the run finish. `writes:12`
    # lands after the approve node's writes are saved and before its checkpoint: `next` is empty, no status.
    return [f"checkpoint:{n}" for n in range(1, 19)] + ["writes:12", "claim", "effect", "ledger"]


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", crash_points())
def test_refund_happens_exactly_once_whatever_the_crash(
    template: tuple[Path, int], drive: Driver, model_cache: Path, tmp_path: Path, crash_at: str
) -> None:
    source, writes = template
    assert writes >= 15, "the scenario should cross every node boundary"
    home = tmp_path / "home"
    shutil.copytree(source, home)
    thread = "thr_crash"
    crashed = drive("crash", str(home), str(model_cache), thread, crash_at)
    if crash_at.startswith("checkpoint:") and int(crash_at.split(":")[1]) > writes:
        assert crashed.returncode == 0, crashed.stderr
    else:
        assert crashed.returncode == -9, (crashed.returncode, crashed.stderr[-2000:])
    recovered = drive("recover", str(home), str(model_cache), thread)
    assert recovered.returncode == 0, recovered.stderr[-2000:]
    final = json.loads(recovered.stdout)
    assert final["status"] == "completed", final

    db = Settings(home=home).helpdesk_path
    refunds = rows(db, "SELECT amount_cents FROM refunds WHERE thread_id = ?", (thread,))
    messages = rows(db, "SELECT id FROM outbox WHERE thread_id = ?", (thread,))
    requests = rows(db, "SELECT status FROM refund_requests WHERE thread_id = ?", (thread,))
    assert refunds == [{"amount_cents": 24000}], crash_at
    assert len(messages) == 1, crash_at
    assert requests == [{"status": "executed"}], crash_at
    ledger = rows(
        Settings(home=home).checkpoints_path, "SELECT kind FROM effects_ledger WHERE thread_id = ?", (thread,)
    )
    assert ledger == [{"kind": "refund"}]
