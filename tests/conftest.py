"""Shared fixtures: an app on a fresh home per test, with the trained classifier cached once per session."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from triage import TriageApp
from triage.errors import CheckpointStoreError
from triage.policies.bundle import POLICY_FILES
from triage.settings import Settings


@pytest.fixture(autouse=True)
def _no_model_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach a model endpoint from the developer's environment; model tests configure the dev server."""
    for name in ("TRIAGE_CHEAP_MODEL", "TRIAGE_STRONG_MODEL", "TRIAGE_MODEL_BASE_URL", "TRIAGE_ALL_TO_MODEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Mutation runs start a pytest session per mutant; they share one trained classifier through this variable.
    shared = os.environ.get("TRIAGE_TEST_MODEL_CACHE")
    return Path(shared) if shared else tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def settings(tmp_path: Path, model_cache: Path) -> Settings:
    return Settings(home=tmp_path / "home", cache_home=model_cache)


@pytest.fixture
def app(settings: Settings) -> Iterator[TriageApp]:
    triage_app = TriageApp(settings)
    yield triage_app
    triage_app.close()


def policy_copy(tmp_path: Path, file: str = "", old: str = "", new: str = "") -> Path:
    """A copy of the packaged policy bundle in `tmp_path/policies`, with `old` replaced by `new` in `file`."""
    folder = tmp_path / "policies"
    folder.mkdir()
    for name in POLICY_FILES:
        shutil.copyfile(str(resources.files("triage.policies") / "default" / name), folder / name)
    if file:
        path = folder / file
        text = path.read_text()
        assert old in text, f"{old!r} is not in {file}"
        path.write_text(text.replace(old, new))
    return folder


def eval_subset(tmp_path: Path, ids: tuple[str, ...]) -> Path:
    """A JSONL file with the packaged eval cases `ids`, in that order."""
    from triage.evals.dataset import load_cases

    cases = {case.id: case for case in load_cases()}
    path = tmp_path / "subset.jsonl"
    path.write_text("".join(cases[i].model_dump_json(exclude_none=True) + "\n" for i in ids))
    return path


@pytest.fixture
def eval_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_cache: Path) -> None:
    """Environment for `triage eval` run in-process: a fresh home, the shared model cache, default policies."""
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRIAGE_CACHE_HOME", str(model_cache))
    monkeypatch.delenv("TRIAGE_POLICY_DIR", raising=False)


def collectable(item: object) -> bool:
    """Whether the cyclic collector's generations hold `item` itself: tracked and not frozen (`gc.freeze`)."""
    import gc

    return any(held is item for generation in range(3) for held in gc.get_objects(generation=generation))


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Read rows from one of the app's SQLite files, the way an operator would."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


def store_fails_from_the_save_of(app: TriageApp, channel: str) -> Callable[[], list[str]]:
    """From the save of a task's writes to `channel` on, fail every save (busy, for good), as a crash right after
    the task would: the task ran and did its I/O, but neither its writes nor any later checkpoint is saved, so the
    thread goes on from the checkpoint before the task's step, running it again. Call the returned function to end
    the fault; it returns the ids of the tasks whose writes were refused."""
    saver = app._portal.call(app._get_engine()).services.saver
    save_writes, save = saver.aput_writes, saver.aput
    refused: list[str] = []

    async def failing_writes(config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        if refused or any(name == channel for name, _ in writes):
            refused.append(task_id)
            raise CheckpointStoreError("injected: the checkpoint store stayed busy", kind="transient")
        await save_writes(config, writes, task_id, task_path)

    async def failing(config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        if refused:
            raise CheckpointStoreError("injected: the checkpoint store stayed busy", kind="transient")
        return await save(config, checkpoint, metadata, new_versions)

    saver.aput_writes, saver.aput = failing_writes, failing  # type: ignore[method-assign]

    def stop() -> list[str]:
        del saver.aput_writes, saver.aput
        return refused

    return stop


def race_in_processes(target: Callable[..., None], arguments: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run `target(*args, barrier, results)` in a spawned process for each `args`; return what they put in `results`.

    Each racer readies itself (opens the app, warms it up) and then waits at the barrier, so the race starts when
    every process is ready and process start-up does not hide the window. Every racer must exit cleanly.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(arguments))
    results = context.Queue()
    workers = [context.Process(target=target, args=(*args, barrier, results)) for args in arguments]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=180) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return outcomes


class HoldCheckpointWrite:
    """Saver faults that stop a run at its `at`-th checkpoint write until `release` is set (a real thread waits).

    Odd writes are checkpoints, which the run waits for (`durability="sync"`); even ones are a task's writes.
    """

    def __init__(self, at: int) -> None:
        self.at = at
        self.writes = 0
        self.reached = threading.Event()
        self.release = threading.Event()

    async def before_checkpoint_write(self) -> None:
        self.writes += 1
        if self.writes == self.at:
            self.reached.set()
            assert await asyncio.to_thread(self.release.wait, 30), "the test never let the run go on"


class FailCheckpointWrites:
    """Saver faults: checkpoint write attempts `first` to `last` (counted from 1) fail with `error`, as SQLite would.

    Odd writes are checkpoints, even ones a task's writes (see `HoldCheckpointWrite`).
    """

    def __init__(self, first: int, last: int, error: str = "disk I/O error") -> None:
        self.first, self.last, self.error, self.attempts = first, last, error, 0

    async def before_checkpoint_write(self) -> None:
        self.attempts += 1
        if self.first <= self.attempts <= self.last:
            raise sqlite3.OperationalError(f"{self.error} (injected fault)")


LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[3] == "file":
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")  # in WAL mode, no other connection may even read until it closes
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
else:
    conn.execute("BEGIN EXCLUSIVE")  # in WAL mode, other connections still read
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
if conn.in_transaction:
    conn.execute("ROLLBACK")
conn.close()
print("released", flush=True)
"""
"""Another process's hold on an SQLite file: `python -c LOCK_HOLDER <file> <seconds> <transaction|file>`."""


@contextmanager
def exclusive_lock(db: Path, seconds: float, *, whole_file: bool = False) -> Iterator[subprocess.Popen[str]]:
    """Hold `db` from another process for `seconds` (yields once it is held, waits for the holder at the end).

    By default the holder keeps a `BEGIN EXCLUSIVE` transaction open: writers wait, readers do not (WAL). With
    `whole_file` it holds the file in exclusive locking mode, so no other connection may read it either; the file
    must then have no other connection that has read it (each holds its own lock on it).
    """
    mode = "file" if whole_file else "transaction"
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(db), str(seconds), mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.wait(timeout=seconds + 30)
        if holder.stdout is not None:
            holder.stdout.close()
