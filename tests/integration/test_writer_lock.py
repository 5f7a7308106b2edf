"""The writer lock beside each SQLite store: the app's writes take it, wait while another process holds it, and go
on without it when it cannot be had (a holder that stopped, a file system without `flock`)."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from triage import Ticket, TriageApp
from triage.settings import Settings
from triage.storefiles import WriterLock

HOURS = Ticket(customer_id="cus_0001", subject="Hours", body="What are your opening hours?")


@contextmanager
def held(path: Path) -> Iterator[None]:
    """The writer lock of the store at `path`, held through its own file descriptor (as another process would)."""
    fd = os.open(f"{path}-writer", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.mark.parametrize("store", ["checkpoints", "helpdesk"])
def test_the_apps_writes_wait_while_another_writer_holds_the_lock(settings: Settings, store: str) -> None:
    path = settings.checkpoints_path if store == "checkpoints" else settings.helpdesk_path
    with TriageApp(settings) as app:
        app.warm_up()
        done = threading.Event()
        results = []
        with held(path):
            runner = threading.Thread(target=lambda: (results.append(app.run(HOURS)), done.set()))
            runner.start()
            # A ticket takes well under a second here; held, its first write to `store` waits for the lock.
            assert not done.wait(1.5), f"the run wrote to the {store} while its writer lock was held"
        runner.join(30)
        assert done.is_set() and results[0].status == "completed", results


def test_a_writer_goes_on_without_the_lock_after_its_wait(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    lock = WriterLock(path, wait=0.3)
    with held(path):
        started = time.monotonic()
        lock.run(lambda conn: conn.execute("CREATE TABLE t (x)"), db)
        waited = time.monotonic() - started
    assert waited >= 0.3, waited
    assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 't'").fetchone() == (1,)


def test_a_writer_takes_the_lock_as_soon_as_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    lock = WriterLock(path, wait=30)
    order: list[str] = []
    with held(path):
        writer = threading.Thread(target=lambda: lock.run(lambda conn: order.append("wrote"), db))
        writer.start()
        time.sleep(0.2)
        order.append("released")
    writer.join(10)
    assert order == ["released", "wrote"]


def test_a_lock_file_that_cannot_be_opened_leaves_writes_to_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    Path(f"{path}-writer").mkdir()  # not a file: it cannot be opened for writing
    db = sqlite3.connect(path, isolation_level=None)
    lock = WriterLock(path)
    assert lock.run(lambda conn: conn.execute("SELECT 1").fetchone(), db) == (1,)
    assert lock.run(lambda conn: conn.execute("SELECT 2").fetchone(), db) == (2,)
