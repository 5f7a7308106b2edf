"""A checkpoint exists after every node, subgraph nodes included, counted from the store itself."""

from __future__ import annotations

import operator
import pickle  # noqa: F401 - ensures the store is read as bytes, not objects
import threading
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, assume, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import rows
from triage import Ticket, TriageApp
from triage.settings import Settings

COORDINATOR = ["validate", "classify", "route", "billing", "approve", "execute", "compose", "send_reply", "finish"]
BILLING = ["lookup", "act"]


def test_every_node_writes_a_checkpoint(app: TriageApp, settings: Settings) -> None:
    result = app.run(Ticket(customer_id="cus_small_dup", subject="Charged twice", body="I was billed twice."))
    stored = rows(
        settings.checkpoints_path,
        "SELECT checkpoint_ns, checkpoint_id FROM checkpoints WHERE thread_id = ?",
        (result.thread_id,),
    )
    per_namespace: dict[str, int] = defaultdict(int)
    for row in stored:
        per_namespace[row["checkpoint_ns"].split(":")[0]] += 1
    # One checkpoint for the input and one after START, then one per node.
    assert per_namespace[""] == 2 + len(COORDINATOR)
    assert per_namespace["billing"] == 2 + len(BILLING)

    timeline = app.thread(result.thread_id).timeline
    assert [e.node for e in timeline if e.namespace == ""] == COORDINATOR
    assert [e.node for e in timeline if e.namespace.startswith("billing:")] == BILLING
    stored_ids = {row["checkpoint_id"] for row in stored}
    assert all(e.checkpoint_id in stored_ids for e in timeline)
    assert len({e.checkpoint_id for e in timeline}) == len(timeline)
    assert all(e.duration_ms >= 0 for e in timeline)
    assert "refund_request" in next(e.outcome for e in timeline if e.node == "act")
    # The app looked the customer up before the run; `validate` wrote nothing, yet its entry names the customer.
    assert next(e.outcome for e in timeline if e.node == "validate") == "customer cus_small_dup"


def test_thread_reads_back_from_a_new_app(settings: Settings) -> None:
    first = TriageApp(settings)
    result = first.run(Ticket(subject="Opening hours", body="What are your opening hours?"))
    first.close()
    second = TriageApp(settings)
    try:
        view = second.thread(result.thread_id)
        assert view.result.status == result.status
        assert view.result.reply == result.reply
        assert [s.thread_id for s in second.threads()] == [result.thread_id]
    finally:
        second.close()


def test_a_failing_node_ends_the_thread_failed_with_reason(app: TriageApp, settings: Settings) -> None:
    app.warm_up()
    conn = __import__("sqlite3").connect(settings.helpdesk_path)
    conn.execute("DROP TABLE kb_fts")  # break the knowledge base under the running app
    conn.commit()
    conn.close()
    result = app.run(Ticket(customer_id="cus_sync_502", subject="Error 502", body="Sync fails with Error 502."))
    assert result.status == "failed"
    assert result.status_reason is not None and "kb_fts" in result.status_reason
    timeline = app.thread(result.thread_id).timeline
    assert any(e.node == "search" and e.outcome.startswith("error") for e in timeline)
    assert timeline[-1].node == "finish"


def test_a_finished_ticket_stores_integer_versions_and_no_absorbed_writes(app: TriageApp, settings: Settings) -> None:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    result = app.run(Ticket(customer_id="cus_small_dup", subject="Charged twice", body="I was billed twice."))
    stored = rows(
        settings.checkpoints_path,
        "SELECT type, checkpoint FROM checkpoints WHERE thread_id = ?",
        (result.thread_id,),
    )
    serde = JsonPlusSerializer()
    for row in stored:
        checkpoint = serde.loads_typed((row["type"], row["checkpoint"]))
        assert checkpoint["channel_versions"], "every checkpoint after the first has versions"
        seen = [v for versions in checkpoint["versions_seen"].values() for v in versions.values()]
        assert all(type(v) is int for v in [*checkpoint["channel_versions"].values(), *seen])
    # Each checkpoint's node writes went with its successor: none is left once the ticket has finished.
    assert rows(settings.checkpoints_path, "SELECT channel FROM writes WHERE thread_id = ?", (result.thread_id,)) == []
    assert rows(settings.checkpoints_path, "PRAGMA page_size") == [{"page_size": 16384}]


def test_a_thread_begun_with_string_versions_continues_with_them(tmp_path: Path) -> None:
    """A thread the SQLite saver's own string versions started resumes under triage's saver, keeping that type."""
    import asyncio

    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt
    from typing_extensions import TypedDict

    from triage.checkpoints import CheckpointSaver

    class Steps(TypedDict, total=False):
        done: list[str]

    def ask(state: Steps) -> Steps:
        return {"done": [*state.get("done", []), f"ask:{interrupt('go on?')}"]}

    def finish(state: Steps) -> Steps:
        return {"done": [*state.get("done", []), "finish"]}

    builder = StateGraph(Steps)
    builder.add_node("ask", ask)
    builder.add_node("finish", finish)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", "finish")
    builder.add_edge("finish", END)
    config: Any = {"configurable": {"thread_id": "old"}}

    async def run(saver_class: type[AsyncSqliteSaver], payload: Any) -> Any:
        async with aiosqlite.connect(tmp_path / "checkpoints.sqlite") as conn:
            saver = saver_class(conn)
            graph = builder.compile(checkpointer=saver)
            await graph.ainvoke(payload, config, durability="sync")
            return await saver.aget_tuple(config)

    paused = asyncio.run(run(AsyncSqliteSaver, {"done": []}))
    assert all(isinstance(v, str) for v in paused.checkpoint["channel_versions"].values())
    finished = asyncio.run(run(CheckpointSaver, Command(resume="yes")))
    assert finished.checkpoint["channel_values"]["done"] == ["ask:yes", "finish"]
    versions = finished.checkpoint["channel_versions"]
    assert all(isinstance(v, str) for v in versions.values())
    assert versions["done"] > paused.checkpoint["channel_versions"]["done"]


@pytest.mark.parametrize("saver", ["stock", "triage"])
def test_a_retry_from_a_failed_step_runs_as_on_langgraphs_own_saver(tmp_path: Path, saver: str) -> None:
    """`recover` retries from the failed step's checkpoint: with writes dropped, the step replays as it does on the
    stock saver (every task of the step again, the finished branch's result counted once)."""
    import asyncio

    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from typing_extensions import TypedDict

    from triage.checkpoints import CheckpointSaver

    class Branches(TypedDict, total=False):
        done: Annotated[list[str], operator.add]
        status: str

    builder, runs, flaky = _steady_and_shaky(Branches, {"done": ["steady"]}, {"done": ["shaky"]})
    config: Any = {"configurable": {"thread_id": "t"}}

    async def scenario() -> list[str]:
        async with aiosqlite.connect(tmp_path / "checkpoints.sqlite") as conn:
            checkpointer = CheckpointSaver(conn) if saver == "triage" else AsyncSqliteSaver(conn)
            graph = builder.compile(checkpointer=checkpointer)
            with pytest.raises(TimeoutError):
                await graph.ainvoke({"done": []}, config, durability="sync")
            # As `TriageApp` records a failure and `recover` retries it: a checkpoint after the failed step, then a
            # run from the checkpoint before it.
            await graph.aupdate_state(config, {"status": "failed"}, as_node="shaky")
            failed = await graph.aget_state(config)
            flaky["fail"] = False
            await graph.ainvoke(None, failed.parent_config, durability="sync")
            return list((await graph.aget_state(config)).values["done"])

    assert sorted(asyncio.run(scenario())) == ["shaky", "steady"]
    assert sorted(runs) == ["shaky", "shaky", "steady", "steady"]


def test_reading_checkpoints_in_one_hop_returns_what_langgraphs_saver_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`CheckpointSaver.aget_tuple` and `alist` (statements batched per hop) against the stock saver on the same file:
    the newest checkpoint, a named one, the pending writes of a paused step (an interrupt's), listings with a limit,
    a `before`, a metadata filter and across threads, and a thread that is not there."""
    import asyncio

    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt
    from typing_extensions import TypedDict

    from triage import checkpoints
    from triage.checkpoints import CheckpointSaver

    class Steps(TypedDict, total=False):
        done: list[str]

    def first(state: Steps) -> Steps:
        return {"done": ["first"]}

    def ask(state: Steps) -> Steps:
        return {"done": [*state.get("done", []), f"ask:{interrupt('go on?')}"]}

    builder = StateGraph(Steps)
    builder.add_node("first", first)
    builder.add_node("ask", ask)
    builder.add_edge(START, "first")
    builder.add_edge("first", "ask")
    builder.add_edge("ask", END)

    async def scenario() -> list[tuple[Any, Any]]:
        async with aiosqlite.connect(tmp_path / "checkpoints.sqlite") as conn:
            ours, stock = CheckpointSaver(conn), AsyncSqliteSaver(conn)
            graph = builder.compile(checkpointer=ours)
            config: Any = {"configurable": {"thread_id": "t"}}
            await graph.ainvoke({"done": []}, config, durability="sync")
            newest = await stock.aget_tuple(config)
            assert newest is not None and newest.parent_config is not None
            asked = [
                config,
                {"configurable": {"thread_id": "t", "checkpoint_ns": ""}},
                newest.parent_config,
                newest.config,
                {"configurable": {"thread_id": "absent"}},
                {"configurable": {"thread_id": "t", "checkpoint_id": "no-such-checkpoint"}},
            ]
            # A second thread, so that listing without a thread has two to tell apart.
            await graph.ainvoke({"done": []}, {"configurable": {"thread_id": "u"}}, durability="sync")
            listings: list[tuple[Any, dict[str, Any]]] = [
                (config, {}),
                (config, {"limit": 2}),
                (config, {"before": newest.config}),
                (None, {}),
                (None, {"filter": {"step": 1}}),
                ({"configurable": {"thread_id": "absent"}}, {}),
            ]
            for where, options in listings:
                mine = [t async for t in ours.alist(where, **options)]
                theirs = [t async for t in stock.alist(where, **options)]
                assert mine == theirs, (where, options)
                assert (len(mine) > 0) is (where is None or where["configurable"]["thread_id"] != "absent")
            return [(await ours.aget_tuple(c), await stock.aget_tuple(c)) for c in asked]

    monkeypatch.setattr(checkpoints, "LIST_PAGE", 2)  # several pages, and a page boundary inside a thread
    pairs = asyncio.run(scenario())
    newest = pairs[0][1]
    assert any(channel == "__interrupt__" for _, channel, _ in newest.pending_writes), "the pause is a pending write"
    for ours, stock in pairs:
        assert ours == stock
    assert [ours is None for ours, _ in pairs] == [False, False, False, False, True, True]


@pytest.mark.parametrize(("mode", "level"), [(None, 2), ("full", 2), ("normal", 1), ("off", 0)])
def test_sqlite_synchronous_applies_to_the_helpdesk_and_the_checkpoint_store(
    settings: Settings, mode: str | None, level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`TRIAGE_SQLITE_SYNCHRONOUS` sets how both files' commits wait for the disk; unset, every commit waits (full)."""
    if mode is not None:
        monkeypatch.setenv("TRIAGE_SQLITE_SYNCHRONOUS", mode)
    app = TriageApp(Settings(home=settings.home, cache_home=settings.cache_home))
    try:
        result = app.run(Ticket(customer_id="cus_small_dup", subject="Hours", body="When are you open?"))
        assert result.status in ("completed", "escalated")
        engine = app._engine
        assert engine is not None

        async def levels() -> tuple[Any, Any]:
            saver = engine.services.saver
            async with saver.conn.execute("PRAGMA synchronous") as cursor:  # type: ignore[attr-defined]
                checkpoints = await cursor.fetchone()
            # The connection that writes (reads go through a reader of their own, where it makes no difference).
            conn = engine.services.helpdesk._conn  # type: ignore[attr-defined]
            async with conn.execute("PRAGMA synchronous") as cursor:
                helpdesk = await cursor.fetchone()
            return checkpoints[0], helpdesk[0]

        checkpoints, helpdesk = app._portal.call(levels())
        assert (checkpoints, helpdesk) == (level, level)
    finally:
        app.close()


def test_an_unknown_synchronous_mode_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("TRIAGE_SQLITE_SYNCHRONOUS", "fast")
    with pytest.raises(ValidationError, match="'full', 'normal' or 'off'"):
        Settings()


def test_the_eval_runs_throwaway_homes_unsynchronised_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from triage.evals.runner import eval_on_loop, eval_synchronous

    assert eval_synchronous(Settings()) == "off"
    assert eval_synchronous(Settings(sqlite_synchronous="full")) == "full"
    assert eval_on_loop(Settings(), "off") is True
    assert eval_on_loop(Settings(), "full") is False  # a commit that waits for the disk would stall the loop
    assert eval_on_loop(Settings(sqlite_on_loop=False), "off") is False
    monkeypatch.setenv("TRIAGE_SQLITE_SYNCHRONOUS", "normal")
    assert eval_synchronous(Settings()) == "normal"
    monkeypatch.setenv("TRIAGE_SQLITE_ON_LOOP", "true")
    assert eval_on_loop(Settings(), "normal") is True


_THREE_ROUTES = [
    Ticket(customer_id="cus_small_dup", subject="Charged twice", body="I was charged twice for my plan."),
    Ticket(customer_id="cus_small_dup", subject="Hours", body="When are you open?"),
    Ticket(customer_id="cus_small_dup", subject="Login", body="The app crashes when I log in on Android."),
]


def test_an_app_with_statements_on_the_loop_runs_tickets_as_one_with_connection_threads(settings: Settings) -> None:
    """`sqlite_on_loop`: both files' statements run on the loop's own thread (no connection thread is started),
    and the tickets end as they do on connection threads, with the same timeline and the same rows written."""
    import threading

    from triage.storefiles import LoopConnection

    tickets = _THREE_ROUTES

    def run(on_loop: bool, home: Path) -> tuple[list[Any], list[Any], set[str]]:
        app = TriageApp(
            Settings(home=home, cache_home=settings.cache_home, sqlite_synchronous="off", sqlite_on_loop=on_loop)
        )
        try:
            before = {thread.name for thread in threading.enumerate()}
            results = [app.run(ticket, thread_id=f"t-{i}") for i, ticket in enumerate(tickets)]
            started = {thread.name for thread in threading.enumerate()} - before
            engine = app._engine
            assert engine is not None
            conns = [engine.services.saver.conn, engine.services.helpdesk._conn]  # type: ignore[attr-defined]
            assert all(isinstance(conn, LoopConnection) == on_loop for conn in conns)
            timelines = [
                [(e.node, e.namespace.split(":")[0], e.outcome) for e in app.thread(f"t-{i}").timeline]
                for i in range(len(tickets))
            ]
            views = [(r.status, r.route, r.intent, r.actions, r.reply, r.findings) for r in results]
            return views, timelines, started
        finally:
            app.close()

    threaded = run(False, settings.home / "threaded")
    on_loop = run(True, settings.home / "on-loop")
    assert on_loop[:2] == threaded[:2]
    assert {r[0] for r in on_loop[0]} <= {"completed", "escalated"}
    assert not any("_connection_worker_thread" in name for name in on_loop[2])


def test_an_app_on_its_callers_loop_runs_tickets_as_one_on_a_thread_of_its_own(settings: Settings) -> None:
    """`TriageApp(loop=...)`: the async methods run on the caller's loop (no `triage-portal` thread starts) and end
    as an app on its own thread does, timeline included; a sync method called from that loop says what to use
    instead; closing the app leaves the loop to its owner. Tickets started together on that loop end the same."""
    import asyncio

    def views(results: list[Any], timelines: list[Any]) -> tuple[list[Any], list[Any]]:
        shown = [(r.status, r.route, r.intent, r.actions, r.reply, r.findings) for r in results]
        steps = [[(e.node, e.namespace.split(":")[0], e.outcome) for e in timeline] for timeline in timelines]
        return shown, steps

    with TriageApp(settings.model_copy(update={"home": settings.home / "own-thread"})) as own:
        results = [own.run(ticket, thread_id=f"t-{i}") for i, ticket in enumerate(_THREE_ROUTES)]
        expected = views(results, [own.thread(f"t-{i}").timeline for i in range(len(_THREE_ROUTES))])

    def here(folder: str) -> TriageApp:
        """An app in a folder of its own, on the loop running now."""
        return TriageApp(settings.model_copy(update={"home": settings.home / folder}), loop=asyncio.get_running_loop())

    async def on_callers_loop() -> tuple[tuple[list[Any], list[Any]], set[str]]:
        app = here("callers")
        try:
            results = [await app.arun(ticket, thread_id=f"t-{i}") for i, ticket in enumerate(_THREE_ROUTES)]
            timelines = [await app.atimeline(f"t-{i}") for i in range(len(_THREE_ROUTES))]
            with pytest.raises(RuntimeError, match="call its async methods from that loop"):
                app.run(_THREE_ROUTES[1])
            threads = {thread.name for thread in threading.enumerate()}
        finally:
            await app.aclose()
        return views(results, timelines), threads

    async def at_once() -> tuple[list[Any], list[Any]]:
        """The same tickets started together on the caller's loop, their steps interleaved."""
        app = here("at-once")
        try:
            runs = [app.arun(ticket, thread_id=f"t-{i}") for i, ticket in enumerate(_THREE_ROUTES)]
            results = await asyncio.gather(*runs)
            return views(list(results), [await app.atimeline(f"t-{i}") for i in range(len(_THREE_ROUTES))])
        finally:
            await app.aclose()

    loop = asyncio.new_event_loop()
    try:
        seen, threads = loop.run_until_complete(on_callers_loop())
        assert not loop.is_closed() and not loop.is_running()
        together = loop.run_until_complete(at_once())
    finally:
        loop.close()
    assert seen == expected
    assert "triage-portal" not in threads
    assert together == expected, "started together, each ticket ends as it does alone, step for step"


def test_a_loop_connection_runs_each_call_at_once_on_the_loops_thread(tmp_path: Path) -> None:
    """Statements, cursors and `on_connection_thread` all run on the calling thread, in order; a closed
    connection refuses work, and closing twice is harmless."""
    import asyncio
    import sqlite3
    import threading

    from triage.storefiles import connect, on_connection_thread

    async def scenario() -> None:
        conn = await connect(tmp_path / "loop.sqlite", on_loop=True, isolation_level=None)
        threads: set[int] = set()
        await conn.execute("CREATE TABLE t (n INTEGER)")
        await conn.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(200)])

        def total(db: sqlite3.Connection) -> int:
            threads.add(threading.get_ident())
            return int(db.execute("SELECT SUM(n) FROM t").fetchone()[0])

        assert await on_connection_thread(conn, total) == sum(range(200))
        async with conn.execute("SELECT n FROM t ORDER BY n") as cursor:
            assert [row[0] async for row in cursor] == list(range(200))  # fetched in chunks, on this thread
        assert threads == {threading.get_ident()}
        await conn.close()
        await conn.close()
        with pytest.raises(ValueError, match=r"no active connection|closed"):
            await conn.execute("SELECT 1")

    asyncio.run(scenario())


def test_a_loop_connection_stopped_on_another_thread_is_let_go_and_closes_itself(tmp_path: Path) -> None:
    """aiosqlite's finaliser calls `stop` on whatever thread collects a connection never closed: there it must not
    raise (sqlite3 refuses `close` off its thread), and the file is closed once the object is garbage (the last
    connection to a WAL file removes the log as it closes)."""
    import asyncio
    import gc
    import threading

    from triage.storefiles import connect

    path = tmp_path / "loop.sqlite"

    async def opened() -> Any:
        conn = await connect(path, on_loop=True, isolation_level=None)
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("CREATE TABLE t (n INTEGER)")
        return conn

    box: list[Any] = []
    opener = threading.Thread(target=lambda: box.append(asyncio.run(opened())))
    opener.start()
    opener.join()
    conn = box.pop()
    assert path.with_name("loop.sqlite-wal").exists()
    conn.stop()  # on this thread, not the one that opened it: no error
    assert not conn._running
    del conn
    gc.collect()
    assert not path.with_name("loop.sqlite-wal").exists(), "the sqlite3 connection closed itself once let go"


def test_a_run_reports_the_state_the_store_holds(app: TriageApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's result is built from the checkpoint it saved last, not read back, only when that is certainly its
    state; for every way a run ends (finished, paused, paused again, resumed, failed in a node, a follow-up,
    recovered) the result equals the one built from the store, and the read is skipped where it should be."""
    import triage.app as app_module
    from triage.faults import FaultInjector, FaultPlan

    from_record: list[Any] = []
    finished_snapshot = app_module._finished_snapshot

    def spy(graph: Any, record: Any) -> Any:
        snapshot = finished_snapshot(graph, record)
        from_record.append(snapshot)
        return snapshot

    monkeypatch.setattr(app_module, "_finished_snapshot", spy)
    engine = app._portal.call(app._get_engine())

    def check(result: Any, *, skipped_read: bool) -> Any:
        async def read() -> Any:
            config: Any = {"configurable": {"thread_id": result.thread_id}}
            return await engine.graph_for(result.thread_id).aget_state(config)

        state = app._portal.call(read())
        stored = app_module._result(result.thread_id, state)
        timing = {"duration_ms", "retries"}
        assert result.model_dump(exclude=timing) == stored.model_dump(exclude=timing)
        recorded = [snapshot for snapshot in from_record if snapshot is not None]
        assert bool(recorded) is skipped_read, result.status
        for snapshot in recorded:  # the last run's: what aget_state reads back, types and all
            assert repr(snapshot.values) == repr(state.values)
            assert (snapshot.next, snapshot.interrupts, snapshot.tasks) == (state.next, state.interrupts, state.tasks)
            assert (snapshot.config, snapshot.parent_config) == (state.config, state.parent_config)
            assert snapshot.created_at == state.created_at
        from_record.clear()
        return result

    general = check(
        app.run({"subject": "Opening hours", "body": "When is your support team available?"}), skipped_read=True
    )
    assert general.status == "completed"
    invoice = check(
        app.run({"customer_id": "cus_small_dup", "subject": "Invoice", "body": "Please send my last invoice."}),
        skipped_read=True,
    )
    follow_up = check(
        app.run({"body": "Thanks, and the one before?", "conversation_id": invoice.conversation_id}), skipped_read=True
    )
    assert (follow_up.turn, len(follow_up.conversation)) == (2, 1)
    paused = check(
        app.run({"customer_id": "cus_large_dup", "subject": "Charged twice", "body": "You charged me twice."}),
        skipped_read=False,
    )
    assert paused.status == "awaiting_approval"
    again = check(app.resume(paused.thread_id, {"approver": "alice", "decision": "approve"}), skipped_read=False)
    assert again.status == "awaiting_approval"
    done = check(app.resume(paused.thread_id, {"approver": "sam", "decision": "approve"}), skipped_read=True)
    assert done.status == "completed" and [a.kind for a in done.actions] == ["refund_request", "refund", "message"]

    second = check(
        app.run({"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "You charged me twice."}),
        skipped_read=False,
    )
    engine.services.gateway.faults = FaultInjector(FaultPlan.parse("transient=1.0"))
    failed = check(app.resume(second.thread_id, {"approver": "alice", "decision": "approve"}), skipped_read=False)
    assert (failed.status, failed.failure_class) == ("failed", "transient")
    engine.services.gateway.faults = None
    recovered = check(app.recover(second.thread_id), skipped_read=True)
    assert recovered.status == "completed", recovered.status_reason


def test_a_saver_records_only_the_top_graph_of_the_thread_it_was_asked_for(tmp_path: Path) -> None:
    import asyncio

    import aiosqlite
    from langgraph.checkpoint.base import empty_checkpoint

    from triage.checkpoints import CheckpointSaver

    def config(thread_id: str, namespace: str = "") -> Any:
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": namespace}}

    async def scenario() -> None:
        async with aiosqlite.connect(tmp_path / "checkpoints.sqlite") as conn:
            saver = CheckpointSaver(conn)
            await saver.setup()
            with saver.recording("t1") as record:
                top, inner, other = empty_checkpoint(), empty_checkpoint(), empty_checkpoint()
                saved = await saver.aput(config("t1"), top, {"step": 1}, {})
                await saver.aput(config("t1", "billing:abc"), inner, {"step": 1}, {})
                await saver.aput(config("t2"), other, {"step": 1}, {})
                assert (record.checkpoint, record.config, record.metadata) == (top, saved, {"step": 1})
                assert record.parent_config is None
                following = empty_checkpoint()
                await saver.aput({"configurable": {**saved["configurable"], "callbacks": None}}, following, {}, {})
                assert record.parent_config == saved and record.checkpoint is following
                assert not record.interrupted
                await saver.aput_writes(saved, [("x", 1)], "task")
                elsewhere = {"configurable": {**saved["configurable"], "thread_id": "t2"}}
                await saver.aput_writes(elsewhere, [("__interrupt__", [])], "task")
                assert not record.interrupted
                inner_config = {"configurable": {**saved["configurable"], "checkpoint_ns": "billing:abc"}}
                await saver.aput_writes(inner_config, [("__interrupt__", [])], "task")
                assert record.interrupted and not record.shared
                with saver.recording("t1") as second:
                    assert record.shared and second.shared
            first, second = saver.recording("t3"), saver.recording("t3")
            first.__enter__()
            assert second.__enter__().shared
            first.__exit__(None, None, None)
            with saver.recording("t3") as third:  # the first has ended, the second still runs
                assert third.shared
            second.__exit__(None, None, None)
            assert saver._records == {}

    asyncio.run(scenario())


def test_a_graph_with_a_subgraph_that_stops_before_a_node_is_read_from_the_store() -> None:
    """A subgraph compiled to stop before a node pauses without saving an interrupt: such a graph's runs are never
    taken as finished from their last checkpoint."""
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    import triage.app as app_module
    from triage.checkpoints import RunRecord

    class S(TypedDict, total=False):
        n: int

    def build(stop: bool) -> Any:
        sub = StateGraph(S)
        sub.add_node("x", lambda state: {"n": 1})
        sub.add_edge(START, "x")
        sub.add_edge("x", END)
        graph = StateGraph(S)
        graph.add_node("inner", sub.compile(interrupt_before=["x"] if stop else None))
        graph.add_edge(START, "inner")
        graph.add_edge("inner", END)
        return graph.compile()

    record = RunRecord(checkpoint={"channel_values": {"n": 1}, "ts": "2026-12-01T00:00:00+00:00"})  # type: ignore[typeddict-item]
    assert app_module._finished_snapshot(build(stop=False), record).values == {"n": 1}
    assert app_module._finished_snapshot(build(stop=True), record) is None


_CHANNELS = ["a", "b", "branch:to:x", "__interrupt__", "__error__", "__resume__", "__pregel_tasks"]
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
_WRITES = st.lists(st.tuples(st.sampled_from(_CHANNELS), _VALUES), min_size=1, max_size=5)


@given(
    tasks=st.lists(st.tuples(st.sampled_from(["task-1", "task-2"]), _WRITES), max_size=4),
    updates=st.lists(_WRITES, max_size=3),
)
@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_tasks_writes_saved_as_one_row_read_back_as_langgraphs_saver_reads_them(
    tasks: list[tuple[str, list[tuple[str, Any]]]], updates: list[list[tuple[str, Any]]]
) -> None:
    """Writes saved on `CheckpointSaver` (a task's writes to state channels in one row) and on the stock saver, each
    in its own file, read back the same: pending writes in order, with their task ids, by `aget_tuple` and `alist`.

    A task of the graph saves its regular writes once (LangGraph keeps a finished task's writes, it does not save
    them again); its reserved writes (an error, an interrupt) may come later. The null task's writes are saved again
    with each addition, the reserved ones last, as LangGraph's loop saves them."""
    import asyncio
    import tempfile

    import aiosqlite
    from langgraph.checkpoint.base import WRITES_IDX_MAP, empty_checkpoint
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from triage.checkpoints import BATCH_TYPE, NULL_TASK_ID, CheckpointSaver

    def regular(writes: list[tuple[str, Any]]) -> bool:
        return any(channel not in WRITES_IDX_MAP for channel, _ in writes)

    for task in ("task-1", "task-2"):  # as LangGraph saves them: a task's regular writes once
        assume(sum(regular(writes) for name, writes in tasks if name == task) <= 1)
    puts: list[tuple[str, list[tuple[str, Any]]]] = list(tasks)
    accumulated: list[tuple[str, Any]] = []
    for writes in updates:
        accumulated = [w for w in accumulated if w[0] not in WRITES_IDX_MAP] + sorted(
            writes, key=lambda w: w[0] in WRITES_IDX_MAP
        )
        puts.append((NULL_TASK_ID, list(accumulated)))

    async def saved(make: Any, path: Path) -> tuple[Any, list[Any], int]:
        async with aiosqlite.connect(path) as conn:
            saver = make(conn)
            config: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
            config = await saver.aput(config, empty_checkpoint(), {"source": "loop", "step": 0}, {})
            for task_id, writes in puts:
                await saver.aput_writes(config, writes, task_id, "path")
            batches = await (await conn.execute("SELECT COUNT(*) FROM writes WHERE type = ?", (BATCH_TYPE,))).fetchone()
            listed = [t.pending_writes async for t in saver.alist({"configurable": {"thread_id": "t"}})]
            found = await saver.aget_tuple(config)
            return found.pending_writes if found else None, listed, batches[0] if batches else 0

    with tempfile.TemporaryDirectory() as folder:
        ours = asyncio.run(saved(CheckpointSaver, Path(folder) / "ours.sqlite"))
        stock = asyncio.run(saved(AsyncSqliteSaver, Path(folder) / "stock.sqlite"))
    assert ours[:2] == stock[:2]
    one_row = [
        writes
        for task, writes in tasks
        if len(writes) > 1 and not any(channel.startswith("__") for channel, _ in writes)
    ]
    assert ours[2] == len(one_row)


_ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=8)
"""Text with any code point, lone surrogates among them (which UTF-8 cannot hold)."""
_METADATA_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _ANY_TEXT,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(_ANY_TEXT | st.integers(min_value=-9, max_value=9), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(metadata=st.dictionaries(_ANY_TEXT, _METADATA_VALUES, max_size=4))
@example(metadata={"nul": "a\x00b", "nested": ["\x00", {"\ud800": 2**65, 7: "\udfff"}]})
@hypothesis_settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_checkpoint_metadata_reads_back_as_the_json_it_was_written_as(metadata: dict[str, Any]) -> None:
    """The metadata a checkpoint is saved with (written by `orjson`, or by `json` where `orjson` refuses it) reads back
    as `json.dumps` wrote it before: keys that are not strings as strings, big integers whole, lone surrogates
    dropped. The filter `alist` applies (`json_extract` in SQLite) finds it. (LangGraph's `get_checkpoint_metadata`
    takes NUL characters out of the top level's text first, whatever the saver.)"""
    import asyncio
    import json
    import tempfile

    import aiosqlite
    from langgraph.checkpoint.base import empty_checkpoint, get_checkpoint_metadata

    from triage.checkpoints import CheckpointSaver

    metadata = {**metadata, "source": "loop", "step": 3}
    config: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    as_kept = get_checkpoint_metadata(config, metadata)  # type: ignore[arg-type]
    expected = json.loads(json.dumps(as_kept, ensure_ascii=False).encode("utf-8", "ignore"))

    async def saved(path: Path) -> tuple[Any, int]:
        async with aiosqlite.connect(path) as conn:
            saver = CheckpointSaver(conn)
            saved_config = await saver.aput(config, empty_checkpoint(), metadata, {})  # type: ignore[arg-type]
            found = await saver.aget_tuple(saved_config)
            filtered = [t async for t in saver.alist(None, filter={"source": "loop", "step": 3})]
            return (found.metadata if found else None), len(filtered)

    with tempfile.TemporaryDirectory() as folder:
        read, listed = asyncio.run(saved(Path(folder) / "checkpoints.sqlite"))
    assert read == expected
    assert listed == 1


@pytest.mark.parametrize("saver", ["stock", "triage"])
def test_a_step_resumed_after_a_failure_keeps_the_finished_tasks_writes(tmp_path: Path, saver: str) -> None:
    """A step of two tasks where one returned several keys (saved as one row) and the other failed: resuming the
    thread runs only the failed one, and the finished one's keys are in the state, as on LangGraph's own saver."""
    import asyncio

    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from typing_extensions import TypedDict

    from triage.checkpoints import BATCH_TYPE, CheckpointSaver

    class Parts(TypedDict, total=False):
        left: str
        middle: list[int]
        right: str

    builder, runs, flaky = _steady_and_shaky(Parts, {"left": "done", "middle": [1, 2]}, {"right": "done"})
    config: Any = {"configurable": {"thread_id": "t"}}

    async def scenario() -> tuple[dict[str, Any], int]:
        async with aiosqlite.connect(tmp_path / "checkpoints.sqlite") as conn:
            checkpointer = CheckpointSaver(conn) if saver == "triage" else AsyncSqliteSaver(conn)
            graph = builder.compile(checkpointer=checkpointer)
            with pytest.raises(TimeoutError):
                await graph.ainvoke({}, config, durability="sync")
            cursor = await conn.execute("SELECT COUNT(*) FROM writes WHERE type = ?", (BATCH_TYPE,))
            (batches,) = await cursor.fetchone() or (0,)
            flaky["fail"] = False
            await graph.ainvoke(None, config, durability="sync")
            return dict((await graph.aget_state(config)).values), batches

    values, batches = asyncio.run(scenario())
    assert values == {"left": "done", "middle": [1, 2], "right": "done"}
    assert runs == ["steady", "shaky", "shaky"] or sorted(runs) == ["shaky", "shaky", "steady"]
    assert runs.count("steady") == 1
    assert batches == (1 if saver == "triage" else 0)


def _steady_and_shaky(
    schema: Any, steady_update: dict[str, Any], shaky_update: dict[str, Any]
) -> tuple[Any, list[str], dict[str, bool]]:
    """A graph whose first step runs two tasks: `steady` returns `steady_update`; `shaky` raises a TimeoutError
    while `flaky["fail"]` is set, else returns `shaky_update`. `runs` lists the tasks as they ran."""
    from langgraph.graph import END, START, StateGraph

    runs: list[str] = []
    flaky = {"fail": True}
    steady_ran = threading.Event()

    def steady(state: Any) -> Any:
        runs.append("steady")
        steady_ran.set()
        return steady_update

    def shaky(state: Any) -> Any:
        runs.append("shaky")
        if flaky["fail"]:
            # Fail only once the other branch has run: otherwise, on a loaded machine, the failure can cancel it
            # before it starts, and the step's first try would hold one task, not two.
            assert steady_ran.wait(30), "the steady branch never ran"
            raise TimeoutError("the store was busy")
        return shaky_update

    builder = StateGraph(schema)
    builder.add_node("steady", steady)
    builder.add_node("shaky", shaky)
    builder.add_edge(START, "steady")
    builder.add_edge(START, "shaky")
    builder.add_edge(["steady", "shaky"], END)
    return builder, runs, flaky
