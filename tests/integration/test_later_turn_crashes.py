"""A conversation's second turn killed between two checkpoints, then recovered: the turn is run to its end, its
reply sent and its record kept (found by a crash sweep of later turns: `recover` took either for an ended run)."""

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

pytestmark = pytest.mark.slow


class Driver:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.zygote = Zygote("tests.integration.later_turn_crash_driver")

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.zygote.run(self.folder, args, timeout=180)


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    driver = Driver(tmp_path_factory.mktemp("later-turn-driver"))
    yield driver
    driver.zygote.close()


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, drive: Driver) -> dict[str, Path]:
    """A home after turn 1 (refund scenario), and one paused in turn 2's approval (a change that will roll back)."""
    made = {}
    for mode, scenario in (("turn1", "refund"), ("prepare", "plan_rollback")):
        home = tmp_path_factory.mktemp(f"{mode}-{scenario}") / "home"
        done = drive(mode, str(home), str(model_cache), f"thr_{scenario}", scenario)
        assert done.returncode == 0, done.stderr[-3000:]
        made[scenario] = home
    return made


def _outbox(home: Path, thread_id: str) -> list[dict[str, object]]:
    return rows(Settings(home=home).helpdesk_path, "SELECT template FROM outbox WHERE thread_id = ?", (thread_id,))


def test_a_follow_up_killed_once_its_input_is_saved_is_run_by_recover(
    homes: dict[str, Path], drive: Driver, model_cache: Path, tmp_path: Path
) -> None:
    """The input is saved (as writes no task made) before `validate` clears the last turn's status: the thread
    showed turn 1's status and nothing to run, and turn 2 was never triaged."""
    home, thread = tmp_path / "home", "thr_refund"
    shutil.copytree(homes["refund"], home)
    crashed = drive("crash-run2", str(home), str(model_cache), thread, "refund", "writes:1")
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    recovered = json.loads(drive("recover", str(home), str(model_cache), thread, "refund").stdout)
    requests = rows(
        Settings(home=home).helpdesk_path, "SELECT status FROM refund_requests WHERE thread_id = ?", (thread,)
    )
    assert (recovered["turn"], len(_outbox(home, thread)), requests) == (2, 2, [{"status": "executed"}]), recovered


@pytest.mark.parametrize("point", [f"writes:{n}" for n in range(1, 15)])
def test_a_rolled_back_change_killed_anywhere_in_its_resume_still_sends_the_turns_reply(
    homes: dict[str, Path], drive: Driver, model_cache: Path, tmp_path: Path, point: str
) -> None:
    """The saga's hand-off sets the turn's status before its reply is sent: killed after those writes, the thread
    showed a status and nothing to run, and `recover` left it without its reply and its turn record."""
    home, thread = tmp_path / "home", "thr_plan_rollback"
    shutil.copytree(homes["plan_rollback"], home)
    crashed = drive("crash", str(home), str(model_cache), thread, "plan_rollback", point)
    assert crashed.returncode in (0, -9), crashed.stderr[-3000:]
    recovered = drive("recover", str(home), str(model_cache), thread, "plan_rollback")
    assert json.loads(recovered.stdout)["status"] == "escalated", recovered.stdout
    with TriageApp(Settings(home=home, cache_home=model_cache)) as app:
        engine = app._portal.call(app._get_engine())
        state = app._portal.call(engine.graph.aget_state({"configurable": {"thread_id": thread}})).values
    assert (len(_outbox(home, thread)), [t["turn"] for t in state["conversation"]]) == (2, [1, 2])
    ledger = "SELECT kind FROM effects_ledger WHERE thread_id = ?"
    kinds = [row["kind"] for row in rows(Settings(home=home).checkpoints_path, ledger, (thread,))]
    assert kinds.count("rollback") == 1, kinds


def test_the_input_task_id_is_langgraphs() -> None:
    """`recover` finds a saved input by LangGraph's task id for writes no task made; a LangGraph that renamed or
    changed it would leave such a turn unrun again."""
    from langgraph._internal._constants import NULL_TASK_ID

    from triage.app import INPUT_WRITES_TASK

    assert INPUT_WRITES_TASK == NULL_TASK_ID
