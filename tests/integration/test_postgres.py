"""Several worker processes share one PostgreSQL checkpoint store (`TRIAGE_DATABASE_URL`): checkpoints, effects
ledger, audit trail and approval index. A real server (Debian's package, started by the test run on loopback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import race_in_processes, rows
from tests.integration.race_driver import decide
from tests.integration.zygote import triage_cli
from tests.postgres_server import postgres_server
from triage import TriageApp
from triage.settings import Settings

pytestmark = pytest.mark.slow

TICKET = {"subject": "Charged twice", "body": "You charged me twice for the same order."}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture
def database(server: str) -> str:
    """A database of this test's own on the shared server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}"


def pg_rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        return list(conn.execute(sql, params).fetchall())


def cli(home: Path, cache: Path, url: str, *args: str, env: dict[str, str] | None = None) -> Any:
    done = triage_cli(
        [*args, "--json"],
        timeout=180,
        env={
            **os.environ,
            "TRIAGE_HOME": str(home),
            "TRIAGE_CACHE_HOME": str(cache),
            "TRIAGE_DATABASE_URL": url,
            **(env or {}),
        },
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def test_a_thread_started_by_one_worker_is_resumed_by_another(tmp_path: Path, model_cache: Path, database: str) -> None:
    home = tmp_path / "home"
    paused = cli(home, model_cache, database, "run", "--customer-id", "cus_mid_dup", "--subject", "Charged twice",
                 "--body", TICKET["body"])  # fmt: skip
    thread_id = paused["thread_id"]
    assert paused["status"] == "awaiting_approval"
    assert not (home / "checkpoints.sqlite").exists(), "with a database URL nothing is checkpointed in the home"
    listed = cli(home, model_cache, database, "approvals")
    assert [p["thread_id"] for p in listed] == [thread_id]

    done = cli(home, model_cache, database, "approve", thread_id, "--as", "alice")
    assert done["status"] == "completed"
    assert [r["amount_cents"] for r in rows(home / "helpdesk.sqlite", "SELECT * FROM refunds WHERE thread_id = ?",
                                            (thread_id,))] == [24000]  # fmt: skip
    ledger = pg_rows(database, "SELECT kind FROM effects_ledger WHERE thread_id = %s", (thread_id,))
    assert ledger == [{"kind": "refund"}]
    audit = pg_rows(database, "SELECT event, actor FROM audit_trail WHERE thread_id = %s ORDER BY id", (thread_id,))
    assert [(a["event"], a["actor"]) for a in audit] == [
        ("approval_requested", "approve"),
        ("approved", "alice"),
        ("effect", "execute"),
    ]
    checkpoints = pg_rows(database, "SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s", (thread_id,))
    assert checkpoints[0]["n"] > 10
    shown = cli(home, model_cache, database, "show", thread_id)
    assert shown["status"] == "completed" and len(shown["timeline"]) > 10
    # The customer's memory lives in LangGraph's PostgreSQL store beside the checkpoints.
    assert [o["thread_id"] for o in shown["customer_memory"]["recent"]] == [thread_id]
    stored = pg_rows(database, "SELECT key FROM store WHERE prefix = %s", ("customers.cus_mid_dup",))
    assert stored == [{"key": "memory"}]


def test_two_workers_racing_on_one_approval_make_one_effect_and_one_refusal(
    tmp_path: Path, model_cache: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", database)
    settings = Settings(home=tmp_path / "home", cache_home=model_cache)
    with TriageApp(settings) as app:
        paused = app.run({**TICKET, "customer_id": "cus_mid_dup"})
    assert paused.status == "awaiting_approval"
    decisions = [
        {"approver": "alice", "decision": "edit", "args": {"amount_cents": 12000}, "reason": "partial"},
        {"approver": "bob", "decision": "approve", "reason": "ok"},
    ]
    outcomes = race_in_processes(
        decide, [(str(settings.home), str(model_cache), paused.thread_id, decision) for decision in decisions]
    )
    won = [o for o in outcomes if "status" in o]
    lost = [o for o in outcomes if "error" in o]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert lost[0]["error"] == "ApprovalConflictError"
    assert won[0]["decision"]["approver"] in lost[0]["message"]
    refunds = rows(settings.helpdesk_path, "SELECT amount_cents FROM refunds WHERE thread_id = ?", (paused.thread_id,))
    expected = won[0]["decision"].get("args", {}).get("amount_cents", 24000)
    assert refunds == [{"amount_cents": expected}]
    ledger = pg_rows(database, "SELECT kind FROM effects_ledger WHERE thread_id = %s", (paused.thread_id,))
    assert len(ledger) == 1
    index = pg_rows(database, "SELECT state, decided_by FROM approval_index WHERE thread_id = %s", (paused.thread_id,))
    assert {row["decided_by"] for row in index} == {won[0]["decision"]["approver"]}


_SLOW_WORKER = """
import sys
from pathlib import Path
from triage import TriageApp
from triage.settings import Settings
app = TriageApp(Settings(home=Path(sys.argv[1]), cache_home=Path(sys.argv[2])))
app.warm_up()
print("ready", flush=True)
app.run({"customer_id": "cus_small_dup", "subject": "Charged twice", "body": "I was billed twice this month."},
        thread_id=sys.argv[3])
print("finished", flush=True)
"""


def test_a_worker_killed_mid_run_is_recovered_by_another(tmp_path: Path, model_cache: Path, database: str) -> None:
    home = tmp_path / "home"
    thread_id = f"thr_{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "TRIAGE_DATABASE_URL": database,
        # Every tool call takes half a second, so the kill lands between checkpoints, mid-run.
        "TRIAGE_FAULTS": "slow=1.0,slow_seconds=0.5",
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WORKER, str(home), str(model_cache), thread_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready", worker.stderr.read() if worker.stderr else ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            written = pg_rows(database, "SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s", (thread_id,))
            if written[0]["n"] >= 4:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the worker wrote no checkpoints")
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.wait(timeout=30)
        for pipe in (worker.stdout, worker.stderr):
            if pipe is not None:
                pipe.close()
    assert worker.returncode == -signal.SIGKILL
    before = pg_rows(database, "SELECT count(*) AS n FROM effects_ledger WHERE thread_id = %s", (thread_id,))
    assert before[0]["n"] == 0, "killed before the executor ran"

    recovered = cli(home, model_cache, database, "recover", thread_id)
    assert recovered["status"] == "completed", recovered
    assert [a["kind"] for a in recovered["actions"]] == ["refund_request", "refund", "message"]
    refunds = rows(home / "helpdesk.sqlite", "SELECT amount_cents FROM refunds WHERE thread_id = ?", (thread_id,))
    assert refunds == [{"amount_cents": 1900}]
    assert len(pg_rows(database, "SELECT kind FROM effects_ledger WHERE thread_id = %s", (thread_id,))) == 1
    again = cli(home, model_cache, database, "recover", thread_id)
    assert again["status"] == "completed"
    assert len(rows(home / "helpdesk.sqlite", "SELECT id FROM refunds WHERE thread_id = ?", (thread_id,))) == 1


def test_conversation_leases_are_taken_atomically_on_postgres(tmp_path: Path, model_cache: Path, database: str) -> None:
    import asyncio

    from tests.integration.test_conversation_leases import LEFT_OVER, lease_scenario

    asyncio.run(lease_scenario(Settings(home=tmp_path / "home", cache_home=model_cache, database_url=database)))
    assert pg_rows(database, "SELECT conversation_id, holder FROM conversation_leases ORDER BY 1") == LEFT_OVER


def test_a_message_sent_again_past_max_turns_is_run_once_on_postgres(
    tmp_path: Path, model_cache: Path, database: str
) -> None:
    from tests.integration.test_conversations import a_message_past_max_turns_is_run_once

    with TriageApp(Settings(home=tmp_path / "home", cache_home=model_cache, database_url=database)) as app:
        a_message_past_max_turns_is_run_once(app)


def test_a_holder_whose_hold_was_taken_saves_nothing_on_postgres(
    tmp_path: Path, model_cache: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on SQLite (`test_recover_races`): paused past its lease, before its renewal looks, the holder's next save
    is refused; it writes nothing over the thread another process took, and a recover makes the one refund."""
    import psycopg

    from tests.integration.test_recover import ALICE, DUPLICATE
    from tests.integration.test_recover_races import hold_taken_at_the_refund, renews_never
    from triage import leases
    from triage.errors import HoldLostError

    def take(thread_id: str) -> None:
        with psycopg.connect(database, autocommit=True) as other:
            other.execute("UPDATE conversation_leases SET holder = 'thief' WHERE conversation_id = %s", (thread_id,))

    def saved(thread_id: str) -> tuple[int, int]:
        count = "SELECT count(*) AS n FROM {} WHERE thread_id = %s"
        return tuple(
            pg_rows(database, count.format(t), (thread_id,))[0]["n"] for t in ("checkpoints", "checkpoint_writes")
        )

    settings = Settings(
        home=tmp_path / "home", cache_home=model_cache, database_url=database, conversation_lease_seconds=0.3
    )
    monkeypatch.setattr(leases, "_renew", renews_never)
    with TriageApp(settings) as app:
        paused = app.run(DUPLICATE)
        taken = hold_taken_at_the_refund(monkeypatch, take, saved)
        with pytest.raises(HoldLostError, match="another process took it meanwhile"):
            app.resume(paused.thread_id, ALICE)
        [(thread, at_take)] = taken
        assert thread == paused.thread_id and saved(thread) == at_take, "a step saved after the hold was taken"
        pg_rows(database, "DELETE FROM conversation_leases RETURNING conversation_id")  # the other process is done
        done = app.recover(paused.thread_id)
    assert done.status == "completed", done.status_reason
    refunds = rows(settings.helpdesk_path, "SELECT amount_cents FROM refunds WHERE thread_id = ?", (paused.thread_id,))
    assert refunds == [{"amount_cents": 24000}]


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path, model_cache: Path) -> None:
    done = triage_cli(
        ["threads"],
        timeout=60,
        env={
            **os.environ,
            "TRIAGE_HOME": str(tmp_path / "home"),
            "TRIAGE_CACHE_HOME": str(model_cache),
            "TRIAGE_DATABASE_URL": "postgresql://triage:s3cret@127.0.0.1:9/triage",
        },
    )
    assert done.returncode == 2, done.stderr
    assert "cannot reach the checkpoint store at postgresql://127.0.0.1:9/triage" in done.stderr
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr
