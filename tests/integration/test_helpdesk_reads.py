"""Helpdesk reads on the event loop's thread (`LoopReader`): no hop to a thread, only committed rows, never a write,
and a file locked by another process waited out on the loop (or failed as busy), never in SQLite's busy handler."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import exclusive_lock
from triage import TriageApp
from triage.helpdesk import Helpdesk
from triage.helpdesk.store import LoopReader, is_transient
from triage.settings import Settings
from triage.storefiles import on_connection_thread

NOTES = "SELECT notes FROM customers WHERE id = 'cus_mid_dup'"


async def _notes(conn: Any) -> str:
    async with conn.execute(NOTES) as cursor:
        row = await cursor.fetchone()
    return str(row[0])


def _seeded(settings: Settings) -> Path:
    """A seeded helpdesk file, with no connection left open on it."""

    async def create() -> None:
        await (await Helpdesk.open(settings.helpdesk_path)).close()

    asyncio.run(create())
    return settings.helpdesk_path


def test_reads_run_on_the_loop_and_see_what_is_committed_and_nothing_else(settings: Settings) -> None:
    async def scenario() -> None:
        helpdesk = await Helpdesk.open(settings.helpdesk_path, reads_on_loop=True)
        try:
            loop_thread = threading.get_ident()
            async with helpdesk.read() as conn:
                assert isinstance(conn, LoopReader)
                assert await on_connection_thread(conn, lambda db: threading.get_ident()) == loop_thread
                before = await _notes(conn)

            # Another task's transaction, open across awaits: a read neither waits for it nor sees its write.
            written, release = asyncio.Event(), asyncio.Event()

            async def writer() -> None:
                async with helpdesk.transaction() as conn:
                    await conn.execute("UPDATE customers SET notes = 'in the transaction' WHERE id = 'cus_mid_dup'")
                    written.set()
                    await release.wait()

            task = asyncio.create_task(writer())
            await written.wait()
            async with asyncio.timeout(1), helpdesk.read() as conn:
                assert await _notes(conn) == before
            release.set()
            await task
            async with helpdesk.read() as conn:
                assert await _notes(conn) == "in the transaction"

            # A write's commit is seen by the next read.
            await helpdesk.write(
                lambda db: db.execute("UPDATE customers SET notes = 'written' WHERE id = 'cus_mid_dup'")
            )
            async with helpdesk.read() as conn:
                assert await _notes(conn) == "written"
                # The reader never writes: refused before the file is touched.
                with pytest.raises(sqlite3.OperationalError, match="readonly"):
                    await conn.execute("UPDATE customers SET notes = 'through a read' WHERE id = 'cus_mid_dup'")
                assert await _notes(conn) == "written"
        finally:
            await helpdesk.close()
        with pytest.raises(ValueError, match=r"closed|no active connection"):  # aiosqlite's words
            async with helpdesk.read() as conn:
                await _notes(conn)

    asyncio.run(scenario())


def test_without_a_reader_reads_take_the_connection_thread(settings: Settings) -> None:
    """What a server that refuses blocking calls on its loop gets (`shared_services`): no statement on the loop."""

    async def scenario() -> None:
        helpdesk = await Helpdesk.open(settings.helpdesk_path)
        try:
            async with helpdesk.read() as conn:
                assert not isinstance(conn, LoopReader)
                assert await on_connection_thread(conn, lambda db: threading.get_ident()) != threading.get_ident()
        finally:
            await helpdesk.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("on_loop", [True, False])
def test_an_apps_tool_reads_run_on_its_loop_thread_unless_told(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, on_loop: bool
) -> None:
    """A ticket's tool reads (its invoices and payments) run on the app's loop; with `helpdesk_reads_on_loop` off
    (what langgraph.json sets for `langgraph dev`, which refuses blocking calls on its loops), on the connection's
    thread."""
    import triage.tools.base as tools_base

    threads: list[str] = []
    original = tools_base._dict_rows

    def recorded(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        threads.append(threading.current_thread().name)
        return original(db, sql, params)

    monkeypatch.setattr(tools_base, "_dict_rows", recorded)
    app = TriageApp(settings.model_copy(update={"helpdesk_reads_on_loop": on_loop}))
    try:
        result = app.run({"customer_id": "cus_small_dup", "subject": "Invoice", "body": "Can I get my last invoice?"})
        assert result.status in ("completed", "escalated"), result.status_reason
    finally:
        app.close()
    assert threads, "the billing specialist read the helpdesk"
    if on_loop:
        assert set(threads) == {"triage-portal"}, threads
    else:
        assert "triage-portal" not in threads, threads


def test_langgraph_dev_reads_on_the_connection_thread() -> None:
    """`langgraph dev` raises on a blocking call in an event loop (the inbox and intake it mounts run a TriageApp)."""
    config = json.loads((Path(__file__).resolve().parents[2] / "langgraph.json").read_text())
    assert config["env"]["TRIAGE_HELPDESK_READS_ON_LOOP"] == "false"
    assert (
        Settings(helpdesk_reads_on_loop=config["env"]["TRIAGE_HELPDESK_READS_ON_LOOP"]).helpdesk_reads_on_loop is False
    )


@pytest.mark.parametrize("released_after", [0.4, None])
def test_a_read_of_a_locked_file_waits_on_the_loop_then_reads_or_fails_as_busy(
    settings: Settings, released_after: float | None
) -> None:
    """Another process holds the file: the read is tried again after sleeps on the loop (other tasks run meanwhile)
    until the holder lets go, or fails as busy once `wait` has passed. SQLite's own busy handler, which would stall
    the loop, is never used."""
    path = _seeded(settings)
    wait = 0.6

    async def scenario() -> None:
        reader = await LoopReader.open(path, wait=wait)  # opened, not yet read: the holder can lock the file
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        try:
            with exclusive_lock(path, released_after or 1.5, whole_file=True) as holder:
                beat = asyncio.create_task(ticker())
                started = time.monotonic()
                try:
                    if released_after is None:
                        with pytest.raises(sqlite3.OperationalError) as refused:
                            await _notes(reader)
                        assert is_transient(refused.value), refused.value
                    else:
                        assert await _notes(reader)
                        assert holder.stdout is not None and holder.stdout.readline().strip() == "released"
                finally:
                    beat.cancel()
                took = time.monotonic() - started
            if released_after is None:
                assert wait <= took < wait + 0.5, took
            else:
                assert released_after * 0.8 <= took < wait, took
            # The loop went on meanwhile: ticks every 10 ms (a stalled loop would show one or two).
            assert ticks >= took / 0.01 / 3, (ticks, took)
        finally:
            await reader.close()

    asyncio.run(scenario())


UNCLOSED = """
import sys
from pathlib import Path
from triage import TriageApp
from triage.settings import Settings
app = TriageApp(Settings(home=Path(sys.argv[1]), cache_home=Path(sys.argv[2])))
result = app.run({"subject": "Opening hours", "body": "What are your opening hours?"}, thread_id=sys.argv[3])
print(result.status)
"""


def test_an_app_a_script_never_closes_exits_quietly_and_its_home_opens_again(settings: Settings) -> None:
    """aiosqlite's finaliser stops a connection never closed on whatever thread collects it, often as the process
    exits; the reader on the loop must not raise there (it used to print SQLite's thread error on every exit)."""
    import subprocess
    import sys

    ran = subprocess.run(
        [sys.executable, "-c", UNCLOSED, str(settings.home), str(settings.cache_dir), "thr_unclosed"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "completed"
    assert "Exception ignored" not in ran.stderr and "ProgrammingError" not in ran.stderr, ran.stderr
    with TriageApp(settings) as app:
        assert app.thread("thr_unclosed").result.status == "completed"
        with sqlite3.connect(settings.helpdesk_path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
