"""Per-customer memory across conversations (LangGraph's store beside the checkpoints)."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rows
from triage import TriageApp


def _store_rows(app: TriageApp, customer_id: str) -> list[dict[str, object]]:
    """The raw rows LangGraph's SQLite store holds for a customer, read the way an operator would."""
    return rows(
        app.settings.checkpoints_path, "SELECT key, value FROM store WHERE prefix = ?", (f"customers.{customer_id}",)
    )


def test_memory_grows_across_conversations_and_reaches_the_people_a_ticket_is_handed_to(app: TriageApp) -> None:
    assert app.customer_memory("cus_locked") is None
    first = app.run({"customer_id": "cus_locked", "subject": "Locked out", "body": "My account is locked, help me."})
    memory = app.customer_memory("cus_locked")
    assert memory is not None
    assert [(o["thread_id"], o["route"], o["status"]) for o in memory["recent"]] == [
        (first.thread_id, first.route, first.status)
    ]
    assert memory["preferences"] == {"language": "en"}
    assert [r["id"] for r in memory["open_requests"]] == [
        a.receipt_id for a in first.actions if a.kind == "account_request"
    ]
    assert first.route is not None and first.route in memory["summary"]

    # `triage show` shows it, and the next conversation's human-queue ticket carries it.
    assert app.thread(first.thread_id).customer_memory == memory
    second = app.run(
        {"customer_id": "cus_locked", "subject": "Lawyer", "body": "I will contact my lawyer about this account."}
    )
    assert second.route == "escalation"
    (ticket,) = [a for a in second.actions if a.kind == "ticket"]
    (row,) = rows(app.settings.helpdesk_path, "SELECT summary FROM tickets WHERE id = ?", (ticket.receipt_id,))
    assert f"Customer history: {memory['summary']}" in str(row["summary"])
    later = app.customer_memory("cus_locked")
    assert later is not None and [o["thread_id"] for o in later["recent"]] == [first.thread_id, second.thread_id]


def test_an_account_deletion_deletes_the_customers_memory(app: TriageApp) -> None:
    app.run({"customer_id": "cus_small_dup", "subject": "Invoices", "body": "Can you send me my invoices?"})
    assert app.customer_memory("cus_small_dup") is not None
    assert _store_rows(app, "cus_small_dup")

    asked = app.run(
        {"customer_id": "cus_small_dup", "subject": "Delete me", "body": "Please delete my account and all my data."}
    )
    assert asked.status == "awaiting_approval"
    app.resume(asked.thread_id, {"approver": "alice", "decision": "approve"})
    done = app.resume(asked.thread_id, {"approver": "sam", "decision": "approve"})

    # An account with an active subscription closes step by step (cancel, refund, data jobs, confirm).
    assert done.status == "completed" and "confirm" in [a.kind for a in done.actions]
    assert app.customer_memory("cus_small_dup") is None
    assert _store_rows(app, "cus_small_dup") == []
    assert app.thread(asked.thread_id).customer_memory is None
    # Another customer's memory is untouched.
    app.run({"customer_id": "cus_new", "subject": "Hours", "body": "When are you open?"})
    assert app.customer_memory("cus_new") is not None


def test_a_deletion_without_a_subscription_deletes_the_customers_memory_too(app: TriageApp) -> None:
    # No active subscription: the executor deletes the account itself (no closure steps), and forgets the customer.
    app.run({"customer_id": "cus_0002", "subject": "Invoices", "body": "Can you send me my invoices?"})
    app.run({"customer_id": "cus_0003", "subject": "Invoices", "body": "Can you send me my invoices?"})
    assert app.customer_memory("cus_0002") is not None

    asked = app.run(
        {"customer_id": "cus_0002", "subject": "Delete me", "body": "Please delete my account and all of my data."}
    )
    assert asked.pending_approval is not None and asked.pending_approval["action"] == "account_deletion"
    app.resume(asked.thread_id, {"approver": "alice", "decision": "approve"})
    done = app.resume(asked.thread_id, {"approver": "sam", "decision": "approve"})

    assert done.status == "completed" and "account_deletion" in [a.kind for a in done.actions]
    assert app.customer_memory("cus_0002") is None
    assert _store_rows(app, "cus_0002") == []
    assert app.customer_memory("cus_0003") is not None  # only the deleted account is forgotten


def test_pruned_threads_leave_the_memory(app: TriageApp) -> None:
    only = app.run({"customer_id": "cus_new", "subject": "Hours", "body": "When is your support team open?"})
    assert only.status == "completed"
    assert app.customer_memory("cus_new") is not None
    report = app.prune(older_than=timedelta(0))
    assert only.thread_id in report.deleted
    assert app.customer_memory("cus_new") is None
    assert _store_rows(app, "cus_new") == []


def test_the_one_hop_store_reads_and_writes_what_langgraphs_async_store_does(tmp_path: Path) -> None:
    """The memory store runs each batch as LangGraph's synchronous store in one hop: on one file, both stores see each
    other's writes, and every kind of operation gives the same answer from either."""
    import asyncio

    import aiosqlite
    from langgraph.store.base import GetOp, ListNamespacesOp, PutOp, SearchOp
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    from triage.stores.sqlite_memory import OneHopSqliteStore

    async def scenario() -> None:
        async with aiosqlite.connect(tmp_path / "store.sqlite") as conn:
            stock, ours = AsyncSqliteStore(conn), OneHopSqliteStore(conn)
            await stock.setup()
            await conn.commit()  # LangGraph's setup leaves its migration rows uncommitted on a new file
            await ours.aput(("customers", "a"), "memory", {"language": "fr", "open": ["ref_1"]})
            await stock.aput(("customers", "b"), "memory", {"language": "de"})
            await ours.abatch([PutOp(("customers", "c"), "memory", {"n": 1}), PutOp(("customers", "c"), "x", {"n": 2})])
            await stock.adelete(("customers", "c"), "x")
            ops = [
                GetOp(("customers", "a"), "memory"),
                GetOp(("customers", "b"), "memory"),
                GetOp(("customers", "c"), "x"),
                GetOp(("customers", "nobody"), "memory"),
                SearchOp(("customers",), filter={"language": "de"}, limit=10),
                SearchOp(("customers",), limit=2, offset=1),
                ListNamespacesOp(match_conditions=None, max_depth=None, limit=10, offset=0),
            ]
            mine, theirs = await ours.abatch(ops), await stock.abatch(ops)
            assert mine == theirs
            assert mine[0] is not None and mine[0].value == {"language": "fr", "open": ["ref_1"]}
            assert mine[2] is None and mine[3] is None
            assert [item.key for item in mine[4]] == ["memory"] and mine[4][0].namespace == ("customers", "b")
            assert sorted(mine[6]) == [("customers", "a"), ("customers", "b"), ("customers", "c")]
            await ours.adelete(("customers", "a"), "memory")
            assert await stock.aget(("customers", "a"), "memory") is None

    asyncio.run(scenario())


def test_a_memory_update_with_the_step_is_read_back_as_langgraphs_store_reads_its_own(tmp_path: Path) -> None:
    """`update_with_step`'s own statements (an insert, then updates in place) leave items that LangGraph's store
    reads, gets by search and lists as it does the ones it wrote itself; an update keeps the item's `created_at`."""
    import asyncio

    import aiosqlite
    from langgraph.store.base import ListNamespacesOp, SearchOp
    from langgraph.store.sqlite.aio import AsyncSqliteStore
    from typing_extensions import TypedDict

    from triage.checkpoints import CheckpointSaver
    from triage.stores.sqlite_memory import OneHopSqliteStore

    class S(TypedDict, total=False):
        n: int

    seen: list[dict[str, Any] | None] = []
    TEXT = 'Ça va? \u2603 "quoted"'

    def bump(previous: dict[str, Any] | None) -> dict[str, Any]:
        seen.append(previous)
        return {"language": "fr", "n": (previous or {}).get("n", 0) + 1, "text": TEXT}

    async def scenario() -> None:
        async with aiosqlite.connect(tmp_path / "store.sqlite") as conn:
            saver = CheckpointSaver(conn)
            await saver.setup()
            stock, ours = AsyncSqliteStore(conn), OneHopSqliteStore(conn)
            await stock.setup()
            await ours.setup()
            await conn.commit()
            ours.saver = saver

            def one_step(namespace: tuple[str, ...], update: Any) -> Any:
                """A one-node graph on `saver` whose node updates the item `memory` in `namespace` with the step."""

                async def step(state: S) -> S:
                    assert ours.update_with_step(namespace, "memory", update)
                    return {"n": 1}

                return _one_node_graph(S, step, saver)

            compiled = one_step(("customers", "a"), bump)
            await compiled.ainvoke({}, {"configurable": {"thread_id": "one"}}, durability="sync")
            await conn.execute("UPDATE store SET created_at = '2026-01-02 03:04:05' WHERE prefix = 'customers.a'")
            await conn.commit()
            first = await stock.aget(("customers", "a"), "memory")
            await compiled.ainvoke({}, {"configurable": {"thread_id": "two"}}, durability="sync")
            await stock.aput(("customers", "b"), "memory", {"language": "fr", "n": 2, "text": TEXT})
            mine = await stock.aget(("customers", "a"), "memory")
            theirs = await stock.aget(("customers", "b"), "memory")
            assert first is not None and mine is not None and theirs is not None
            assert mine.value == theirs.value and mine.created_at == first.created_at
            assert first.created_at.year == 2026 and first.created_at.month == 1 and mine.updated_at > mine.created_at
            found = await stock.abatch(
                [
                    SearchOp(("customers",), filter={"n": 2}, limit=10),
                    ListNamespacesOp(match_conditions=None, max_depth=None, limit=10, offset=0),
                ]
            )
            assert sorted(item.namespace for item in found[0]) == [("customers", "a"), ("customers", "b")]
            assert sorted(found[1]) == [("customers", "a"), ("customers", "b")]
            assert await ours.aget(("customers", "a"), "memory") == mine
            rows = await (await conn.execute("SELECT COUNT(*) FROM store WHERE prefix = 'customers.a'")).fetchone()
            assert rows == (1,)

            # A new customer whose item another writer puts between the read and the write: updated, not refused.
            def racing(previous: dict[str, Any] | None) -> dict[str, Any]:
                assert previous is None
                conn._conn.execute(
                    "INSERT INTO store (prefix, key, value) VALUES ('customers.c', 'memory', ?)", (b'{"n": 7}',)
                )
                return {"n": 1}

            await one_step(("customers", "c"), racing).ainvoke(
                {}, {"configurable": {"thread_id": "three"}}, durability="sync"
            )
            raced = await stock.aget(("customers", "c"), "memory")
            assert raced is not None and raced.value == {"n": 1}

    asyncio.run(scenario())
    assert seen[0] is None and seen[1] is not None and seen[1]["n"] == 1 and len(seen) == 2


def test_a_memory_update_is_one_hop_whose_commit_waits_for_the_next_synced_one(tmp_path: Path) -> None:
    """`aupdate` reads and writes in one hop, commits its write with `synchronous = NORMAL` and puts the connection's
    own setting back, whether the update succeeds or raises (the checkpoint commits after it must stay synced)."""
    import asyncio

    import aiosqlite
    import aiosqlite.core
    import pytest

    from triage.storefiles import on_connection_thread
    from triage.stores.sqlite_memory import OneHopSqliteStore

    async def scenario() -> None:
        async with aiosqlite.connect(tmp_path / "store.sqlite", isolation_level=None) as conn:
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = FULL")
            store = OneHopSqliteStore(conn)
            await store.setup()
            statements: list[str] = []
            await on_connection_thread(conn, lambda db: db.set_trace_callback(statements.append))
            hops, original = 0, aiosqlite.core.Connection._execute

            async def counted(self: object, fn: object, *args: object, **kwargs: object) -> object:
                nonlocal hops
                hops += 1
                return await original(self, fn, *args, **kwargs)  # type: ignore[arg-type]

            aiosqlite.core.Connection._execute = counted  # type: ignore[method-assign]
            try:
                seen: list[object] = []

                def add(previous: dict[str, object] | None) -> dict[str, object]:
                    seen.append(previous)
                    return {"turns": [*(previous or {}).get("turns", []), len(seen)]}  # type: ignore[list-item]

                assert await store.aupdate(("customers", "a"), "memory", add) == {"turns": [1]}
                assert await store.aupdate(("customers", "a"), "memory", add) == {"turns": [1, 2]}
                assert seen == [None, {"turns": [1]}] and hops == 2
            finally:
                aiosqlite.core.Connection._execute = original  # type: ignore[method-assign]
            put_commits = [
                i for i, s in enumerate(statements) if s.startswith("COMMIT") and "INSERT" in statements[i - 1]
            ]
            assert put_commits, statements
            for i in put_commits:  # each write's commit: NORMAL before it, FULL (2) back after it
                assert "PRAGMA synchronous = NORMAL" in statements[i - 3 : i]
                assert statements[i + 1] == "PRAGMA synchronous = 2"

            def broken(previous: dict[str, object] | None) -> dict[str, object]:
                raise ValueError("no")

            with pytest.raises(ValueError, match="no"):
                await store.aupdate(("customers", "a"), "memory", broken)
            with pytest.raises(TypeError):  # the write itself fails, after the setting was lowered
                await store.aupdate(("customers", "a"), "memory", lambda previous: {"unwritable": object()})
            await store.aupdate(("customers", "b"), "memory", lambda previous: {"bad": True} if previous else {"n": 1})
            await on_connection_thread(conn, lambda db: db.set_trace_callback(None))
            assert await (await conn.execute("PRAGMA synchronous")).fetchone() == (2,)
            item = await store.aget(("customers", "a"), "memory")
            assert item is not None and item.value == {"turns": [1, 2]}

    asyncio.run(scenario())


HOURS = {"customer_id": "cus_new", "subject": "Hours", "body": "When is your support team open?"}


@pytest.mark.parametrize("fails", ["writes, before the memory", "writes, after the memory", "checkpoint", "both"])
def test_finishs_result_and_the_memory_update_are_saved_together(app: TriageApp, fails: str) -> None:
    """`finish` does not wait for the memory update: it is made in the transaction that saves the node's writes,
    or, when that one failed first, in the one that saves the step's checkpoint (LangGraph saves it without waiting
    for the writes). Whichever hop keeps failing, the memory is written exactly when the node's result is (review
    found it written for a turn whose result was never saved), and after `recover` it holds one record of the
    turn."""
    saver = app._portal.call(app._get_engine()).services.saver
    put_writes, put = saver._put_writes, saver._put
    carried: list[str] = []
    busy = sqlite3.OperationalError("database is locked (injected fault)")

    async def failing_writes(
        config: Any, writes: Any, task_id: str, task_path: str, *, before: Any = (), hold: Any = None
    ) -> Any:
        if not before or config["configurable"]["checkpoint_ns"]:
            return await put_writes(config, writes, task_id, task_path, before=before, hold=hold)
        carried.append("writes")
        assert "conversation" in [channel for channel, _ in writes], "finish's writes carry the update"
        if fails == "writes, before the memory":
            raise busy
        if fails in ("writes, after the memory", "both"):

            def then_fail(conn: sqlite3.Connection) -> None:
                before[0].work(conn)
                raise busy

            return await put_writes(config, writes, task_id, task_path, before=[Kept(then_fail)], hold=hold)
        return await put_writes(config, writes, task_id, task_path, before=before, hold=hold)

    async def failing_put(config: Any, checkpoint: Any, metadata: Any, *, before: Any, hold: Any = None) -> Any:
        if not before:
            return await put(config, checkpoint, metadata, before=before, hold=hold)

        def seen(conn: sqlite3.Connection) -> None:  # in the checkpoint's hop, on the connection's thread
            carried.append("checkpoint, done" if before[0].done else "checkpoint")
            if not before[0].done:
                before[0].work(conn)
            if fails in ("checkpoint", "both"):
                raise busy

        return await put(config, checkpoint, metadata, before=[Kept(seen)], hold=hold)

    saver._put_writes, saver._put = failing_writes, failing_put
    try:
        failed = app.run(HOURS)
    finally:
        del saver._put_writes, saver._put
    assert failed.status == "failed" and "stayed busy" in str(failed.status_reason), failed.status_reason
    # The checkpoint's hop may come between two tries of the writes' (LangGraph does not wait for them).
    assert (
        sorted(carried)
        == {
            "writes, before the memory": ["checkpoint"] + ["writes"] * 4,
            "writes, after the memory": ["checkpoint"] + ["writes"] * 4,
            "checkpoint": ["checkpoint, done"] * 4 + ["writes"],
            "both": ["checkpoint"] * 4 + ["writes"] * 4,
        }[fails]
    ), carried
    # Finish's record is saved exactly with its result. When neither was (both hops failed), the memory holds the
    # failed turn instead, as the app records any turn that fails.
    remembered = app.customer_memory("cus_new")
    statuses = [o["status"] for o in remembered["recent"]] if remembered else []
    assert statuses == (["failed"] if fails == "both" else ["completed"]), remembered
    assert not saver._kept

    done = app.recover(failed.thread_id)
    assert done.status == "completed", done.status_reason
    memory = app.customer_memory("cus_new")
    assert memory is not None
    assert [(o["thread_id"], o["turn"]) for o in memory["recent"]] == [(done.thread_id, 1)]


class Kept:
    """Work handed to the saver's hop in place of what it kept (the test above fails the hop after the work)."""

    def __init__(self, work: Any) -> None:
        self.work, self.done = work, False


def test_the_memory_survives_a_crash_between_finishs_writes_and_its_checkpoint(
    tmp_path: Path, model_cache: Path
) -> None:
    """A process killed right after `finish`'s writes were saved, before its step's checkpoint: `recover` takes the
    saved writes without running `finish` again, so the update must already be in (found by review)."""
    import json
    import subprocess
    import sys

    home, thread = tmp_path / "home", "thr_crash_finish"
    run = [sys.executable, "-m", "tests.integration.memory_crash_driver"]
    crashed = subprocess.run([*run, "crash", str(home), str(model_cache), thread], capture_output=True, text=True)
    assert crashed.returncode == -9, (crashed.returncode, crashed.stdout, crashed.stderr[-2000:])
    done = subprocess.run([*run, "recover", str(home), str(model_cache), thread], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed", result
    assert result["recent"] == [[thread, 1]], "the turn's memory update was lost or made twice"


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_the_memory_is_written_whatever_the_graphs_durability(app: TriageApp, durability: str) -> None:
    """The app's own graph run directly (as Studio's server or a test may), with each of LangGraph's durabilities:
    with "async" the previous step's checkpoint may still be on its way while `finish` runs (found by review)."""
    from triage.context import Context

    engine = app._portal.call(app._get_engine())
    config: Any = {"configurable": {"thread_id": f"thr_{durability}"}}
    graph_input = {"ticket": HOURS}
    app._portal.call(
        engine.graph.ainvoke(graph_input, config, context=Context(services=engine.services), durability=durability)
    )
    assert app._portal.call(engine.graph.aget_state(config)).values["status"] == "completed"
    memory = app.customer_memory("cus_new")
    assert memory is not None and [o["thread_id"] for o in memory["recent"]] == [f"thr_{durability}"]
    assert not engine.services.saver._kept


def test_kept_work_is_committed_once_with_the_tasks_result_and_only_then(tmp_path: Path) -> None:
    """`SqliteSaver.before_task_saved` keeps work only inside a task of a graph on that saver run with durability
    "sync"; the work is done in the transaction that saves the task's writes, before them, committed once with them
    (rolled back with them when they find the file busy, and done again by the retry), and never for a task that
    failed."""
    import asyncio

    import aiosqlite
    from langgraph.checkpoint.memory import InMemorySaver
    from typing_extensions import TypedDict

    from triage.checkpoints import CheckpointSaver

    class S(TypedDict, total=False):
        n: int

    kept: list[bool] = []
    ran: list[tuple[str, int, int]] = []

    def build(saver: Any, name: str = "", *, fail: bool = False) -> Any:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO done_work VALUES (?)", (name,))  # committed with the task's writes, or not
            (saved,) = conn.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", (name,)).fetchone()
            (written,) = conn.execute(
                "SELECT COUNT(*) FROM writes WHERE thread_id = ? AND channel = 'n'", (name,)
            ).fetchone()
            ran.append((name, saved, written))

        async def step(state: S) -> S:
            kept.append(ours.before_task_saved(work))
            if fail:
                raise ValueError("the node failed after keeping its work")
            return {"n": 1}

        return _one_node_graph(S, step, saver)

    async def scenario() -> None:
        nonlocal ours
        async with aiosqlite.connect(tmp_path / "c.sqlite") as conn:  # as the app opens it: implicit transactions
            ours = CheckpointSaver(conn)
            await ours.setup()
            await conn.execute("CREATE TABLE done_work (thread_id TEXT)")
            await conn.commit()
            assert ours.before_task_saved(lambda conn: None) is False  # no task is running

            def thread(name: str) -> Any:
                return {"configurable": {"thread_id": name}}

            await build(ours, "t").ainvoke({"n": 0}, thread("t"), durability="sync")
            assert (kept, ran) == ([True], [("t", 2, 0)])  # after the input's two checkpoints, before any write

            for durability in ("async", "exit"):
                await build(ours, durability).ainvoke({"n": 0}, thread(durability), durability=durability)
            await build(InMemorySaver(), "m").ainvoke({"n": 0}, thread("m"))
            with pytest.raises(ValueError, match="failed after keeping"):
                await build(ours, "f", fail=True).ainvoke({"n": 0}, thread("f"), durability="sync")
            assert (kept[1:], ran[1:]) == ([False, False, False, True], []) and not ours._kept

            # The task's writes find the file busy once, after the work ran: it is rolled back with them, and done
            # again, once, by the retry.
            real = conn._connection

            class BusyOnce:
                busy = True

                def __getattr__(self, name: str) -> Any:
                    return getattr(real, name)

                def executemany(self, sql: str, rows: Any) -> Any:
                    if BusyOnce.busy and "INTO writes" in sql and ran[-1][0] == "b":
                        BusyOnce.busy = False
                        raise sqlite3.OperationalError("database is locked")
                    return real.executemany(sql, rows)

            conn._connection = BusyOnce()  # type: ignore[assignment]
            try:
                await build(ours, "b").ainvoke({"n": 0}, thread("b"), durability="sync")
            finally:
                conn._connection = real
            assert (kept[5:], ran[1:], BusyOnce.busy) == ([True], [("b", 2, 0), ("b", 2, 0)], False)
            state = await build(ours).aget_state(thread("b"))
            assert state.values == {"n": 1} and not ours._kept
            async with conn.execute("SELECT thread_id FROM done_work ORDER BY rowid") as cursor:
                assert [row[0] for row in await cursor.fetchall()] == ["t", "b"]

            # Any error after the work undoes it within the hop, so nothing later on the connection can commit it
            # (found by review: the rollback used to wait for the lock in a hop of its own, and only for
            # `OperationalError`). The step's checkpoint, which LangGraph saves without waiting for the writes, then
            # does the work, once, with itself.
            class Broken:
                def __getattr__(self, name: str) -> Any:
                    return getattr(real, name)

                def executemany(self, sql: str, rows: Any) -> Any:
                    if "INTO writes" in sql and ran[-1][0] == "c":
                        raise sqlite3.DatabaseError("database disk image is malformed")
                    return real.executemany(sql, rows)

            conn._connection = Broken()  # type: ignore[assignment]
            try:
                with pytest.raises(sqlite3.DatabaseError, match="malformed"):
                    await build(ours, "c").ainvoke({"n": 0}, thread("c"), durability="sync")
            finally:
                conn._connection = real
            assert not conn.in_transaction and ran[-2:] == [("c", 2, 0), ("c", 2, 0)]
            assert (await build(ours).aget_state(thread("c"))).values == {"n": 1}
            await build(ours, "d").ainvoke({"n": 0}, thread("d"), durability="sync")
            async with conn.execute("SELECT thread_id FROM done_work ORDER BY rowid") as cursor:
                assert [row[0] for row in await cursor.fetchall()] == ["t", "b", "c", "d"]

    ours: Any = None
    asyncio.run(scenario())


def _one_node_graph(schema: Any, step: Any, saver: Any) -> Any:
    """`step` as the only node of a graph compiled on `saver`."""
    from langgraph.graph import END, START, StateGraph

    graph: Any = StateGraph(schema)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_edge("step", END)
    return graph.compile(checkpointer=saver)
