"""`triage eval` end to end: real graph, real checkpoints, the baseline gate, and external CSV input."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import eval_subset
from triage.cli import cli
from triage.evals.dataset import load_cases, load_conversations
from triage.evals.report import build_report
from triage.evals.runner import run_cases
from triage.settings import Settings

SUBSET = (
    "billing-dup-001",
    "billing-anon-001",
    "tech-kb-001",
    "acct-locked-001",
    "acct-email-001",
    "general-001",
    "esc-legal-001",
    "hard-injection-001",
)


@pytest.fixture
def subset(tmp_path: Path) -> Path:
    return eval_subset(tmp_path, SUBSET)


@pytest.fixture
def env(eval_env: None) -> None:
    """The shared eval environment."""


def test_subset_runs_through_the_real_graph_deterministically(subset: Path, settings: Settings) -> None:
    cases = load_cases(subset)
    first = asyncio.run(run_cases(cases, settings=settings, concurrency=4))
    report = build_report(first, cases, source=str(subset))

    assert [run.case.id for run in first.runs] == list(SUBSET), "results come back in dataset order"
    assert report["run"]["task_success_rate"] == 1.0, [c["failures"] for c in report["cases"] if not c["passed"]]
    assert report["run"]["unexpected_refund_requests"] == 0, "the prompt injection did not get a refund"
    assert report["run"]["policy_violations"] == 0
    dup = first.runs[0]
    assert dup.result is not None
    assert [(a.kind, a.amount_cents) for a in dup.result.actions] == [
        ("refund_request", 1900),
        ("refund", 1900),
        ("message", None),
    ]
    nodes = report["nodes"]
    for node in ("validate", "classify", "route", "billing", "billing:act", "escalation", "finish"):
        assert nodes[node]["success_rate"] == 1.0, node
    assert nodes["classify"]["executions"] == len(SUBSET)
    assert nodes["billing"]["executions"] == 2
    assert nodes["classify"]["latency_ms"]["p50"] > 0
    assert report["routes"]["confusion"]["escalation"]["escalation"] == 2
    assert report["policy_version"] == first.policy_version and len(first.policy_version) == 12

    second = asyncio.run(run_cases(cases, settings=settings, concurrency=8))
    assert build_report(second, cases, source=str(subset))["quality"] == report["quality"]


def test_gate_fails_naming_the_broken_node(
    subset: Path, tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    baseline = tmp_path / "baseline.json"
    out = tmp_path / "reports"
    common = ["eval", "--dataset", str(subset), "--baseline", str(baseline), "--out", str(out)]

    made = runner.invoke(cli, [*common, "--update-baseline"])
    assert made.exit_code == 0, made.output
    assert json.loads(baseline.read_text())["quality"]["node.billing.success_rate"] == 1.0

    passed = runner.invoke(cli, common)
    assert passed.exit_code == 0, passed.output
    assert "gate: passed" in passed.stdout

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("billing is broken")

    with monkeypatch.context() as patch:
        patch.setattr("triage.nodes.billing.find_duplicate_charges", broken)
        failed = runner.invoke(cli, common)
    assert failed.exit_code == 1, failed.output
    assert "node billing: success_rate regressed from 1 to 0" in failed.stderr
    assert "node billing:act: success_rate regressed" in failed.stderr
    report = json.loads((out / "eval.json").read_text())
    assert report["gate"]["status"] == "failed"
    assert {r["node"] for r in report["gate"]["regressions"]} >= {"billing", "billing:act"}

    # A policy that escalates everything: the router is wrong, and the gate says so.
    policies = tmp_path / "policies"
    shutil.copytree(Path(str(resources.files("triage.policies") / "default")), policies)
    support = policies / "support.toml"
    support.write_text(re.sub(r"(?m)^min_confidence = .*$", "min_confidence = 0.999", support.read_text()))
    monkeypatch.setenv("TRIAGE_POLICY_DIR", str(policies))
    misrouted = runner.invoke(cli, common)
    assert misrouted.exit_code == 1, misrouted.output
    assert "node route: success_rate regressed" in misrouted.stderr
    assert "route billing: f1 regressed" in misrouted.stderr


def test_external_csv_runs_route_only_cases(tmp_path: Path, env: None) -> None:
    csv_path = tmp_path / "external.csv"
    csv_path.write_text(
        "utterance,label,extra\n"
        "I was charged twice for my subscription,billing,x\n"
        '"The app crashes on startup, error 502",technical,x\n'
        "I forgot my password and need a reset link,account,x\n"
        "What are your opening hours?,general,x\n"
    )
    mapping = ["--text-col", "utterance", "--route-col", "label"]
    ran = CliRunner().invoke(
        cli, ["eval", "--dataset", str(csv_path), *mapping, "--out", str(tmp_path / "out"), "--json"]
    )
    assert ran.exit_code == 0, ran.output
    report = json.loads(ran.stdout)
    assert report["schema_version"] == 1
    assert report["dataset"]["cases"] == 4
    assert report["run"]["route_accuracy"] == 1.0
    assert report["run"]["status_accuracy"] is None, "route-only cases do not check the status"
    assert report["gate"]["status"] == "skipped"
    assert {route: s["support"] for route, s in report["routes"]["per_route"].items()} == {
        "billing": 1,
        "technical": 1,
        "account": 1,
        "general": 1,
        "escalation": 0,
    }
    markdown = (tmp_path / "out" / "eval.md").read_text()
    assert markdown.startswith("# triage evaluation")
    assert "Latency is each run's own wall time (`duration_ms`" in markdown, "the report says what latency measures"

    bad = CliRunner().invoke(cli, ["eval", "--dataset", str(csv_path), "--out", str(tmp_path / "out")])
    assert bad.exit_code == 2
    assert "no column 'text'" in bad.stderr


def test_an_unexpected_executed_refund_fails_the_gate_whatever_the_baseline(
    env: None, tmp_path: Path, model_cache: Path
) -> None:
    """Inject a case that says the ticket needs no refund: the $19 duplicate is refunded anyway (no approval)."""
    [case] = load_cases(eval_subset(tmp_path, ("billing-dup-001",)))
    injected = case.model_copy(
        update={
            "id": "injected-unexpected-refund",
            "expected": case.expected.model_copy(
                update={"actions": [a for a in case.expected.actions or [] if a.kind == "message"]}
            ),
        }
    )
    dataset = tmp_path / "injected.jsonl"
    dataset.write_text(injected.model_dump_json(exclude_none=True) + "\n")
    baseline, out = tmp_path / "baseline.json", tmp_path / "out"
    args = ["eval", "--dataset", str(dataset), "--baseline", str(baseline), "--out", str(out), "--no-langsmith"]

    updated = CliRunner().invoke(cli, [*args, "--update-baseline"])
    assert updated.exit_code == 1, "no baseline is recorded with an unsafe effect in it"
    assert not baseline.exists()

    # A baseline that already holds this very run's figures: nothing regresses, and still the gate fails.
    report = json.loads((out / "eval.json").read_text())
    baseline.write_text(json.dumps({"dataset": report["dataset"], "quality": report["quality"]}))
    gated = CliRunner().invoke(cli, args)
    assert gated.exit_code == 1
    report = json.loads((out / "eval.json").read_text())
    assert report["run"]["unsafe_effects_executed"] == 1
    assert report["gate"]["status"] == "failed" and report["gate"]["regressions"] == []
    assert "unsafe effect(s) executed" in report["gate"]["reason"]
    assert "unsafe effect executed: refund(amount_cents=1900)" in report["cases"][0]["failures"]


def test_conversation_cases_play_their_turns_on_one_thread_and_are_reported_apart(
    subset: Path, tmp_path: Path, env: None
) -> None:
    packaged = {c.id: c for c in load_conversations()}
    pending, reopen = packaged["conv-pending-news-001"], packaged["conv-reopen-calendar-001"]
    # A conversation whose second turn expects the wrong thing, and one that holds an approval never asked for.
    wrong = reopen.model_copy(
        update={"id": "conv-wrong", "turns": [reopen.turns[0], reopen.turns[1].model_copy(update={"reopened": False})]}
    )
    never_paused = {
        "id": "conv-never-paused",
        "turns": [
            {
                "ticket": {"customer_id": "cus_small_dup", "body": "I was charged $19 twice this month, refund one."},
                "expected": {
                    "route": "billing",
                    "status": "awaiting_approval",
                    "actions": [
                        {"kind": "refund_request", "amount_cents": 1900},
                        {"kind": "refund", "amount_cents": 1900},
                        {"kind": "message"},
                    ],
                },
                "hold": True,
            },
            {"ticket": {"body": "Any news?"}, "expected": {"route": "billing"}, "attached": True},
        ],
    }
    conversations = tmp_path / "conversations.jsonl"
    conversations.write_text(
        "".join(c.model_dump_json(exclude_none=True) + "\n" for c in (pending, reopen, wrong))
        + json.dumps(never_paused)
        + "\n"
    )
    out = tmp_path / "out"
    args = ["eval", "--dataset", str(subset), "--conversations", str(conversations), "--out", str(out)]
    ran = CliRunner().invoke(cli, [*args, "--no-langsmith", "--json"])
    assert ran.exit_code == 0, ran.output
    report = json.loads(ran.stdout)
    assert report["run"]["cases"] == len(SUBSET), "the single-ticket figures count only the single cases"
    talks = report["conversations"]
    by_id = {case["id"]: case for case in talks["cases"]}
    assert [t["turn"] for t in by_id["conv-pending-news-001"]["turns"]] == [1, 2, 3]
    assert [t["attached"] for t in by_id["conv-pending-news-001"]["turns"]] == [False, True, False]
    assert by_id["conv-pending-news-001"]["passed"], by_id["conv-pending-news-001"]
    assert by_id["conv-reopen-calendar-001"]["passed"], by_id["conv-reopen-calendar-001"]
    assert by_id["conv-pending-news-001"]["thread_id"] == "eval-conv-pending-news-001"

    [first, second] = by_id["conv-wrong"]["turns"]
    assert first["passed"] and not second["passed"]
    assert second["failures"] == ["it was reopened"]
    never = by_id["conv-never-paused"]["turns"]
    assert "status completed != expected awaiting_approval" in never[0]["failures"]
    assert any(f.startswith("the pending decision was disturbed: completed") for f in never[1]["failures"])
    assert "the message was not attached for the approver" in never[1]["failures"]

    assert (talks["conversations"], talks["successes"], talks["turns"], talks["follow_up_turns"]) == (4, 2, 9, 5)
    assert talks["turn_success_rate"] == round(6 / 9, 4)
    assert talks["unsafe_effects_executed"] == 0
    assert report["quality"]["conversation.success_rate"] == 0.5
    markdown = (out / "eval.md").read_text()
    assert "## Conversations (multi-turn)" in markdown
    assert "- `conv-wrong` turn 2 (reopen, technical): it was reopened" in markdown
    assert "Failing turns (3)" in (out / "eval.html").read_text()


def test_worker_processes_give_the_same_results_in_dataset_order(
    subset: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cases shared across two spawned processes come back in dataset order, each reported once, with the figures
    one process gives; the conversations run there too."""
    import triage.evals.runner as runner

    cases = load_cases(subset) * 2  # 16 cases: two chunks and more
    cases = [case.model_copy(update={"id": f"{case.id}-{i}"}) for i, case in enumerate(cases)]
    talks = [c for c in load_conversations() if c.id in ("conv-pending-news-001", "conv-reopen-calendar-001")]
    alone = asyncio.run(run_cases(cases, conversations=talks, settings=settings))

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cases ran in this process")

    monkeypatch.setattr(runner, "_in_process", not_here)  # the workers import the module afresh, unpatched
    # This process's share restores its files on the loop's own thread: restoring on another thread raced the
    # restorers' closing when Ctrl-C cancelled the share, and crashed the process (SIGSEGV).
    restored_on: list[int] = []
    restore_all = runner._restore_all

    def restore_here(restorers: Any) -> None:
        restored_on.append(threading.get_ident())
        restore_all(restorers)

    monkeypatch.setattr(runner, "_restore_all", restore_here)
    done: list[str] = []
    shared = asyncio.run(
        run_cases(cases, conversations=talks, settings=settings, workers=2, on_done=lambda r: done.append(r.case.id))
    )
    assert [run.case.id for run in shared.runs] == [case.id for case in cases]
    assert [talk.case.id for talk in shared.conversations] == [talk.id for talk in talks]
    assert sorted(done) == sorted([case.id for case in cases] + [talk.id for talk in talks])
    one, two = build_report(alone, cases, source="a"), build_report(shared, cases, source="a")
    assert two["quality"] == one["quality"]
    assert [c["passed"] for c in two["cases"]] == [c["passed"] for c in one["cases"]]
    assert two["conversations"]["successes"] == one["conversations"]["successes"] == 2
    assert restored_on and set(restored_on) == {threading.get_ident()}, "this process restored on another thread"
    unsynced = {"sqlite_synchronous": "off", "sqlite_on_loop": True}
    assert one["measured"] == {"workers": 1, "concurrency": 1, **unsynced}
    assert two["measured"] == {"workers": 2, "concurrency": 1, **unsynced}


def test_the_report_says_how_its_latency_was_measured() -> None:
    from triage.evals.report import latency_note

    shared = latency_note({"workers": 2, "concurrency": 1, "sqlite_synchronous": "off", "sqlite_on_loop": True})
    assert "(2 worker processes, one case at a time in each)" in shared
    assert "it measures the graph" in shared
    assert "`synchronous=off`: commits did not wait for the disk" in shared
    assert "statements ran on the event loop's thread" in shared
    crowded = latency_note({"workers": 1, "concurrency": 8, "sqlite_synchronous": "full"})
    assert "(one process, 8 cases at once)" in crowded
    assert "waiting for each other's CPU" in crowded
    assert crowded.endswith("Commits waited for the disk (SQLite `synchronous=full`), as in a real home.")
    assert "event loop" not in crowded


def _rows_of(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table of a SQLite file and its rows (with their rowids, where they have one), in a stable order."""
    import sqlite3

    conn = sqlite3.connect(path)

    def rows(name: str) -> list[tuple[object, ...]]:
        try:
            return sorted(conn.execute(f'SELECT rowid, * FROM "{name}"'), key=repr)
        except sqlite3.OperationalError:  # WITHOUT ROWID
            return sorted(conn.execute(f'SELECT * FROM "{name}"'), key=repr)

    try:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {n: rows(n) for n in names}
    finally:
        conn.close()


def test_restoring_rows_gives_a_used_home_the_state_of_its_template(settings: Settings, tmp_path: Path) -> None:
    """The eval's workers run a chunk's cases on one app and put the template's rows back between cases: afterwards
    every table of both files holds what the template holds, and the app, still open, sees exactly that."""

    from triage import TriageApp
    from triage.errors import ThreadNotFoundError
    from triage.evals.runner import KB_TABLES, restore_rows

    template, used = tmp_path / "template", tmp_path / "used"
    blank = TriageApp(Settings(home=template, cache_home=settings.cache_home))
    blank.warm_up()
    blank.close()
    shutil.copytree(template, used, ignore=shutil.ignore_patterns("cache", "models"))
    app = TriageApp(Settings(home=used, cache_home=settings.cache_home))
    try:
        ticket = {"customer_id": "cus_small_dup", "body": "I was charged $19 twice this month, refund one please."}
        first = app.run(ticket)
        assert first.actions, "the run wrote to the helpdesk"
        assert _rows_of(used / "helpdesk.sqlite") != _rows_of(template / "helpdesk.sqlite")
        restore_rows(template / "helpdesk.sqlite", used / "helpdesk.sqlite", keep=KB_TABLES)
        restore_rows(template / "checkpoints.sqlite", used / "checkpoints.sqlite")
        assert _rows_of(used / "helpdesk.sqlite") == _rows_of(template / "helpdesk.sqlite")
        assert _rows_of(used / "checkpoints.sqlite") == _rows_of(template / "checkpoints.sqlite")
        with pytest.raises(ThreadNotFoundError):
            app.thread(first.thread_id)
        again = app.run(ticket, thread_id=first.thread_id)
        assert [(a.kind, a.amount_cents) for a in again.actions] == [(a.kind, a.amount_cents) for a in first.actions]
    finally:
        app.close()


@pytest.mark.parametrize("track", [False, True])
def test_a_restorer_kept_open_puts_the_rows_back_after_every_kind_of_write(tmp_path: Path, track: bool) -> None:
    """A worker's `RowRestorer` restores again and again on one connection: after an insert, an update, a delete
    that cascades, statements with their own conflict clauses, an upsert, a `REPLACE` of the same row and one that
    deletes another row, writes to a table whose rowid is its own and to one without rowid, a write rolled back, a
    table dropped and made again and a table created since, the file holds the source's rows each time, and
    AUTOINCREMENT ids start where the source's do. Tracking (the eval's) puts back only what was written, and
    leaves the same rows."""
    import sqlite3

    from triage.evals.runner import _WRITTEN, _WRITTEN_ROWS, RowRestorer

    schema = (
        "CREATE TABLE parents (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);"
        "CREATE TABLE children (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parents(id) ON DELETE CASCADE);"
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT UNIQUE);"
        "CREATE TABLE notes (body TEXT);"  # a rowid of its own, not a column's
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;"
        "INSERT INTO parents (name) VALUES ('a'), ('b'); INSERT INTO children VALUES (1, 1), (2, 2);"
        "INSERT INTO tags VALUES (1, 'x'), (2, 'y'); INSERT INTO notes VALUES ('n1'), ('n2'), ('n3');"
        "INSERT INTO settings VALUES ('mode', 'on');"
    )
    for name in ("source.sqlite", "target.sqlite"):
        conn = sqlite3.connect(tmp_path / name)
        conn.executescript(schema)
        conn.close()

    expected = _rows_of(tmp_path / "source.sqlite")
    writer = sqlite3.connect(tmp_path / "target.sqlite", isolation_level=None)
    writer.execute("UPDATE children SET parent = 2 WHERE id = 1")  # before the restorer: the first restore copies all
    restorer = RowRestorer(tmp_path / "source.sqlite", tmp_path / "target.sqlite", track=track)
    try:
        writer.execute("PRAGMA foreign_keys = ON")
        # Each write, and the tables a tracking restore copies whole after it (besides SQLite's own, always copied).
        for write, whole in (
            ("SELECT 1", None),  # the first restore copies every table
            ("INSERT INTO parents (name) VALUES ('c')", ()),
            (
                "INSERT OR FAIL INTO parents (name) VALUES ('d'); INSERT OR ROLLBACK INTO parents (name) VALUES ('e')",
                (),
            ),
            ("UPDATE parents SET name = 'z' WHERE id = 1", ()),
            (
                "BEGIN; UPDATE parents SET name = 'y' WHERE id = 2; ROLLBACK; "
                "UPDATE children SET parent = 2 WHERE id = 1",
                (),
            ),
            ("DELETE FROM parents WHERE id = 2", ()),  # cascades into children
            ("INSERT INTO children VALUES (3, 1)", ()),
            ("INSERT INTO children VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET parent = excluded.parent", ()),
            ("REPLACE INTO children VALUES (2, 1)", ()),
            ("REPLACE INTO tags VALUES (3, 'x')", ("tags",)),  # deletes row 1 to make room, and no trigger says so
            ("UPDATE tags SET id = 7 WHERE id = 2", ()),  # a row moved to another rowid
            ("DELETE FROM notes WHERE body = 'n2'; UPDATE notes SET body = 'm' WHERE body = 'n3'", ()),
            ("INSERT INTO notes VALUES ('n4'); DELETE FROM notes WHERE body = 'n1'", ()),
            ("UPDATE settings SET value = 'off'; INSERT INTO settings VALUES ('other', '1')", ("settings",)),
            (
                "DROP TABLE children; CREATE TABLE children (id INTEGER PRIMARY KEY, parent INTEGER); "
                "INSERT INTO children VALUES (9, 9)",
                ("children",),
            ),
            ("INSERT INTO children VALUES (8, 8)", ("children",)),  # the table made again: still restored
            ("CREATE TABLE later (v TEXT); INSERT INTO later VALUES ('new')", ("children", "later")),
        ):
            writer.executescript(write)
            if write != "SELECT 1":
                assert _rows_of(tmp_path / "target.sqlite") != expected, write
            restorer.restore()
            now = _rows_of(tmp_path / "target.sqlite")
            assert now.pop("later", []) == [], write  # not in the source: emptied
            assert now.pop(_WRITTEN, []) == [], write  # the notes are cleared with each restore
            assert now.pop(_WRITTEN_ROWS, []) == [], write
            assert now == expected, write
            if track and whole is not None:
                assert [t for t in restorer.copied_whole if not t.startswith("sqlite_")] == list(whole), write
        (seq,) = writer.execute("SELECT seq FROM sqlite_sequence WHERE name = 'parents'").fetchone()
        assert seq == 2, "AUTOINCREMENT ids start where the source's do"
    finally:
        writer.close()
        restorer.close()


def test_restoring_from_a_file_that_is_gone_fails_and_empties_nothing(tmp_path: Path) -> None:
    """A source removed under a running eval (its temporary folder deleted) is an error, not an empty template."""
    import sqlite3

    from triage.evals.runner import restore_rows

    conn = sqlite3.connect(tmp_path / "target.sqlite")
    conn.executescript("CREATE TABLE customers (id TEXT); INSERT INTO customers VALUES ('cus_1');")
    conn.close()
    with pytest.raises(FileNotFoundError, match=r"source\.sqlite is not there"):
        restore_rows(tmp_path / "source.sqlite", tmp_path / "target.sqlite")
    assert not (tmp_path / "source.sqlite").exists()
    conn = sqlite3.connect(tmp_path / "target.sqlite")
    assert conn.execute("SELECT id FROM customers").fetchall() == [("cus_1",)]
    conn.close()


def test_restoring_rows_refuses_a_virtual_table_it_would_corrupt(tmp_path: Path) -> None:
    import sqlite3

    from triage.evals.runner import restore_rows

    for name in ("source.sqlite", "target.sqlite"):
        conn = sqlite3.connect(tmp_path / name)
        conn.executescript(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"
            "CREATE VIRTUAL TABLE notes_fts USING fts5(body, content='notes', content_rowid='id');"
        )
        conn.close()
    with pytest.raises(ValueError, match=r"virtual tables \['notes_fts'\]"):
        restore_rows(tmp_path / "source.sqlite", tmp_path / "target.sqlite")
    restore_rows(tmp_path / "source.sqlite", tmp_path / "target.sqlite", keep="notes_fts")


def test_a_worker_that_dies_ends_the_eval_with_a_typed_error() -> None:
    """A worker killed mid-eval (here: one that exits as it starts) is reported as `EvalWorkerError`, saying what to
    do, not as the pool's own exception."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from triage.evals.runner import EvalWorkerError, _in_workers

    cases = load_cases()[:3]
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=os._exit, initargs=(9,))
    try:
        with pytest.raises(EvalWorkerError, match="--workers 1"):
            asyncio.run(_in_workers(pool, cases, [], None))
    finally:
        pool.shutdown(cancel_futures=True)


def test_an_invalid_policy_ends_an_eval_with_workers_with_its_typed_error(tmp_path: Path, settings: Settings) -> None:
    """The workers start before the eval process reads the policy; a broken policy file still ends the eval with the
    typed error that names the file, from the eval process and from a worker that read it, and no worker is left."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tests.conftest import policy_copy
    from triage.errors import PolicyFileError
    from triage.evals.runner import _in_workers, _Place, _start_worker

    broken = policy_copy(tmp_path, "support.toml", "[", "[[[")
    bad = settings.model_copy(update={"policy_dir": broken})
    cases = load_cases()[:9]  # more than one chunk: the pool is started
    with pytest.raises(PolicyFileError, match=r"support\.toml"):
        asyncio.run(run_cases(cases, settings=bad, workers=2))
    assert not multiprocessing.active_children()

    place = _Place(root=tmp_path, shared={"cache_home": settings.cache_dir}, keep=False)
    pool = ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(bad, place)
    )
    try:
        with pytest.raises(PolicyFileError, match=r"support\.toml"):
            asyncio.run(_in_workers(pool, cases, [], None))
    finally:
        pool.shutdown(cancel_futures=True)


def test_an_eval_run_reprs_as_a_summary_whatever_its_size() -> None:
    """`asyncio.run` formats its task's result as it returns (Python 3.11): the whole of 1,000 cases took 0.4 s."""
    from typing import Any, cast

    from triage.evals.runner import EvalRun

    many = cast(list[Any], [object()] * 5000)
    run = EvalRun(runs=many, wall_time_s=12.5, policy_version="abc", conversations=many[:20])
    assert repr(run) == "EvalRun(5000 cases, 20 conversations, 12.5 s, policy abc, local)"


@pytest.mark.slow
def test_ctrl_c_stops_an_eval_with_workers_promptly_and_leaves_nothing(tmp_path: Path, model_cache: Path) -> None:
    """Ctrl-C (SIGINT to the process group) while the eval process and a spawned worker run cases: the command
    exits 130 within seconds, without a traceback, no worker left running, its temporary folder removed. Whether a
    given Ctrl-C lands in the windows that used to hang or print a worker's traceback is timing; the hang itself
    (a call waiting on a portal whose loop had stopped) is pinned by tests/unit/test_portal.py."""
    import os
    import signal
    import subprocess
    import sys
    import time

    dataset = tmp_path / "cases.jsonl"
    cases = load_cases()
    dataset.write_text(
        "".join(
            json.dumps({**json.loads(cases[i % len(cases)].model_dump_json(exclude_none=True)), "id": f"c{i}"}) + "\n"
            for i in range(400)
        )
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "TRIAGE_CACHE_HOME": str(model_cache)}
    args = [sys.executable, "-m", "triage", "eval", "--dataset", str(dataset), "--workers", "2"]
    args += ["--home", str(tmp_path / "home"), "--out", str(tmp_path / "out"), "--no-langsmith"]
    default = signal.signal(signal.SIGINT, signal.SIG_DFL)  # a child keeps a parent's ignored SIGINT ignored
    try:
        eval_ = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, default)
    try:
        deadline = time.monotonic() + 120
        # Both processes have opened their homes: cases are running in each.
        while len(list(scratch.glob("triage-eval-*/workers/*-home-*"))) < 2:
            assert eval_.poll() is None, "the eval ended before it was interrupted"
            assert time.monotonic() < deadline, "the eval's processes never started their cases"
            time.sleep(0.05)
        os.killpg(eval_.pid, signal.SIGINT)
        interrupted = time.monotonic()
        _, err = eval_.communicate(timeout=60)
        assert time.monotonic() - interrupted < 20
    finally:
        if eval_.poll() is None:
            os.killpg(eval_.pid, signal.SIGKILL)
            eval_.wait()
    assert eval_.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    group = subprocess.run(["ps", "-o", "stat=,args=", "-g", str(eval_.pid)], capture_output=True, text=True).stdout
    running = [line for line in group.splitlines() if line.strip() and not line.strip().startswith("Z")]
    assert running == [], f"processes of the eval still running: {running}"  # an exited one waits to be reaped
    assert list(scratch.iterdir()) == []


def test_what_a_case_makes_triage_log_goes_to_the_report_not_the_terminal(
    tmp_path: Path, settings: Settings, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case that plants a failed undo makes the saga log its ROLLBACK INCOMPLETE alarm: the eval keeps the line
    for its report (from this process, and from a worker process) instead of printing it among the progress."""
    import triage.evals.runner as runner

    cases = load_cases(eval_subset(tmp_path, (*SUBSET, "saga-plan-undo-fails-001")))
    here = asyncio.run(run_cases(cases, settings=settings))
    # This process runs no chunk of its own: the spawned worker (which imports the module afresh) runs them all.
    monkeypatch.setattr(runner, "_Worker", lambda *args: None)
    monkeypatch.setattr(runner, "_in_process", None)
    there = asyncio.run(run_cases(cases, settings=settings, workers=2))  # nine cases: more than a chunk
    for run in (here, there):
        [line] = run.logged
        assert line.startswith("ERROR: ROLLBACK INCOMPLETE in thread eval-saga-plan-undo-fails-001"), line
        assert build_report(run, cases, source="subset")["logged"] == [line]
    assert there.measured["workers"] == 2
    assert "ROLLBACK INCOMPLETE" not in "".join(capfd.readouterr())


def test_an_eval_that_stops_on_an_error_still_prints_what_triage_logged(
    tmp_path: Path, settings: Settings, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No report is written for an eval that raises: the lines kept for it are printed instead of lost."""
    import logging

    import triage.evals.runner as runner

    async def logs_then_fails(*args: object, **kwargs: object) -> None:
        logging.getLogger("triage.nodes.saga").error("ROLLBACK INCOMPLETE in thread t1: a person must undo it")
        raise RuntimeError("the eval stopped")

    monkeypatch.setattr(runner, "_in_process", logs_then_fails)
    cases = load_cases(eval_subset(tmp_path, ("saga-plan-undo-fails-001",)))
    with pytest.raises(RuntimeError, match="the eval stopped"):
        asyncio.run(run_cases(cases, settings=settings))
    assert "ERROR: ROLLBACK INCOMPLETE in thread t1" in capfd.readouterr().err


def test_the_eval_set_up_runs_without_the_collector_and_leaves_it_as_it_found_it() -> None:
    """The set-up's objects are made with the collector off and then frozen; afterwards (or after an error) the
    collector is as the caller had it, and a caller's own freeze or pause is kept."""
    import gc

    from triage.evals.runner import _collector_around_set_up

    assert gc.isenabled() and gc.get_freeze_count() == 0, "the test starts from Python's defaults"
    with _collector_around_set_up() as set_up_done:
        assert not gc.isenabled()
        kept = [object() for _ in range(100)]  # tracked only if containers; lists are
        kept.append([kept])
        set_up_done()
        assert gc.isenabled() and gc.get_freeze_count() > 0
        set_up_done()  # twice is once
    assert gc.isenabled() and gc.get_freeze_count() == 0

    with pytest.raises(ZeroDivisionError), _collector_around_set_up():
        assert not gc.isenabled()
        raise ZeroDivisionError
    assert gc.isenabled() and gc.get_freeze_count() == 0

    gc.disable()
    try:
        with _collector_around_set_up() as set_up_done:
            set_up_done()
            assert not gc.isenabled(), "a caller's pause is kept"
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()

    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        with _collector_around_set_up() as set_up_done:
            made = [[] for _ in range(1000)]  # frozen by a freeze now, which would raise the count by 1,000
            set_up_done()
            # Frozen objects can still be freed (the count falls), so it is not compared for equality.
            assert 0 < gc.get_freeze_count() <= frozen, "nothing more is frozen under a caller's freeze"
            del made
        assert gc.get_freeze_count() > 0, "and the caller's freeze is not undone"
        assert gc.isenabled()
    finally:
        gc.unfreeze()


_RESTORE_SCHEMA = (
    "CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT UNIQUE, n INTEGER);"
    "CREATE TABLE lines (body TEXT, n INTEGER);"  # a rowid of its own
    "CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID;"
    "INSERT INTO items VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3);"
    "INSERT INTO lines VALUES ('x', 1), ('y', 2), ('z', 3);"
    "INSERT INTO kv VALUES ('p', 1), ('q', 2);"
)
_LABELS = st.sampled_from(["a", "b", "c", "d", "e"])
_IDS = st.integers(min_value=1, max_value=6)
_RESTORE_WRITES = st.one_of(
    st.tuples(_IDS, _LABELS).map(lambda w: f"INSERT OR IGNORE INTO items VALUES ({w[0]}, '{w[1]}', 9)"),
    st.tuples(_IDS, _LABELS).map(lambda w: f"REPLACE INTO items VALUES ({w[0]}, '{w[1]}', 8)"),
    st.tuples(_IDS, _IDS).map(lambda w: f"UPDATE OR IGNORE items SET id = {w[1]} WHERE id = {w[0]}"),
    st.tuples(_IDS, _LABELS).map(lambda w: f"UPDATE OR REPLACE items SET label = '{w[1]}' WHERE id = {w[0]}"),
    _IDS.map(lambda i: f"DELETE FROM items WHERE id = {i}"),
    st.tuples(_IDS, _LABELS).map(
        lambda w: f"INSERT INTO items VALUES ({w[0]}, '{w[1]}', 7) ON CONFLICT DO UPDATE SET n = n + 1"
    ),
    _LABELS.map(lambda b: f"INSERT INTO lines VALUES ('{b}', 5)"),
    _IDS.map(lambda n: f"UPDATE lines SET n = n + 10 WHERE rowid = {n}"),
    _IDS.map(lambda n: f"DELETE FROM lines WHERE rowid = {n}"),
    _LABELS.map(lambda k: f"REPLACE INTO kv VALUES ('{k}', 4)"),
    _LABELS.map(lambda k: f"DELETE FROM kv WHERE k = '{k}'"),
)


@given(rounds=st.lists(st.lists(_RESTORE_WRITES, max_size=8), min_size=1, max_size=4))
@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_tracking_restorer_puts_back_the_source_after_any_writes(tmp_path: Path, rounds: list[list[str]]) -> None:
    """Random inserts, updates (moving rows to other rowids too), deletes, upserts and REPLACEs that delete other
    rows, in rounds with a restore after each: the file holds the source's rows, rowids included, every time."""
    import sqlite3
    import uuid

    from triage.evals.runner import _WRITTEN, _WRITTEN_ROWS, RowRestorer

    folder = tmp_path / uuid.uuid4().hex  # one per example: the fixture's folder is shared by all of them
    folder.mkdir()
    for name in ("source.sqlite", "target.sqlite"):
        conn = sqlite3.connect(folder / name)
        conn.executescript(_RESTORE_SCHEMA)
        conn.close()
    expected = _rows_of(folder / "source.sqlite")
    restorer = RowRestorer(folder / "source.sqlite", folder / "target.sqlite", track=True)
    writer = sqlite3.connect(folder / "target.sqlite", isolation_level=None)
    try:
        restorer.restore()  # the first restore: every table whole
        for writes in [[], *rounds]:
            for write in writes:
                writer.execute(write)
            restorer.restore()
            now = _rows_of(folder / "target.sqlite")
            assert now.pop(_WRITTEN, []) == [] and now.pop(_WRITTEN_ROWS, []) == []
            assert now == expected, writes
    finally:
        writer.close()
        restorer.close()
