"""The Python API: `TriageApp` runs tickets through the graph and reads threads back from the checkpoint store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from triage.errors import ThreadNotFoundError
from triage.portal import Portal
from triage.schemas import Action, Reply, RunResult, ThreadSummary, Ticket, TimelineEntry
from triage.settings import Settings

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph.state import CompiledStateGraph

    from triage.models.tier import ModelTier
    from triage.services import Services


class ThreadView(BaseModel):
    """A thread read back from the store: its result and the node-by-node timeline."""

    thread_id: str
    result: RunResult
    timeline: list[TimelineEntry]


@dataclass
class _Engine:
    services: Services
    saver: AsyncSqliteSaver
    graph: CompiledStateGraph[Any, Any, Any, Any]


class TriageApp:
    """Runs support tickets through the triage graph, on the embedded default.

    Open it once per process and share it: it keeps one helpdesk connection and one checkpoint saver, opened on
    first use. Sync methods (`run`, `thread`, ...) suit scripts; async ones (`arun`, ...) suit servers. Both run
    on the app's own event loop thread, so they can be mixed.

    Example:
        >>> app = TriageApp.open()
        >>> result = app.run(Ticket(customer_id="cus_small_dup", subject="Charged twice", body="..."))
        >>> result.status, result.route, result.actions
    """

    def __init__(self, settings: Settings, *, models: ModelTier | None = None) -> None:
        self.settings = settings
        self._models = models
        self._portal = Portal()
        self._engine: _Engine | None = None
        self._opening: asyncio.Lock | None = None

    @classmethod
    def open(
        cls, home: str | Path | None = None, *, settings: Settings | None = None, models: ModelTier | None = None
    ) -> TriageApp:
        """Create an app whose files live in `home` (default: `$TRIAGE_HOME` or `./.triage`).

        `models` replaces the embedded local model tier (it is still wrapped by the PII and injection guard).
        """
        settings = settings or Settings()
        if home is not None:
            settings = settings.model_copy(update={"home": Path(home)})
        return cls(settings, models=models)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the stores and stop the app's loop thread."""
        if self._engine is not None:
            self._portal.call(self._aclose_engine())
        self._portal.stop()

    async def aclose(self) -> None:
        """Close the stores (async)."""
        await self._portal.acall(self._aclose_engine())
        self._portal.stop()

    def __enter__(self) -> TriageApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> TriageApp:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _aclose_engine(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.services.aclose()
            await engine.saver.conn.close()

    async def _get_engine(self) -> _Engine:
        if self._engine is not None:
            return self._engine
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._engine is None:
                self._engine = await self._open_engine()
        return self._engine

    async def _open_engine(self) -> _Engine:
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        from triage.graphs.support import build_support_graph
        from triage.helpdesk.store import quiet_sql_logging
        from triage.services import Services

        services = await Services.open(self.settings, models=self._models)
        quiet_sql_logging()
        conn = await aiosqlite.connect(self.settings.checkpoints_path)
        await conn.execute("PRAGMA busy_timeout = 10000")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        graph = build_support_graph(policy=services.policy).compile(checkpointer=saver, name="support")
        return _Engine(services=services, saver=saver, graph=graph)

    # -- running tickets -------------------------------------------------------------------------------------

    def run(
        self,
        ticket: Ticket | Mapping[str, Any],
        *,
        thread_id: str | None = None,
        budget: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Triage one ticket to a terminal status (see `arun`)."""
        return self._portal.call(self._arun(ticket, thread_id, budget))

    async def arun(
        self,
        ticket: Ticket | Mapping[str, Any],
        *,
        thread_id: str | None = None,
        budget: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Triage one ticket: validate, classify, route, act, reply; checkpointed after every node.

        `budget` overrides limits of the policy's per-run budget, e.g. `{"max_model_tokens": 2000}`.

        Raises:
            InvalidTicketError: the ticket is malformed (nothing is written).
            UnknownCustomerError: the customer id is not in the helpdesk (nothing is written).
            PolicyFileError: the budget override names an unknown limit or a bad value.
        """
        return await self._portal.acall(self._arun(ticket, thread_id, budget))

    async def _arun(
        self, ticket: Ticket | Mapping[str, Any], thread_id: str | None, budget: Mapping[str, Any] | None
    ) -> RunResult:
        from triage.context import Context
        from triage.metering import Meter
        from triage.nodes.validate import check_ticket

        engine = await self._get_engine()
        meter = Meter(budget=engine.services.policy.support.budget.override(budget))
        thread_id = thread_id or f"thr_{uuid.uuid4().hex}"
        data = ticket.model_dump() if isinstance(ticket, Ticket) else ticket
        # Refuse bad input before anything is written: no thread, no helpdesk row.
        parsed, _ = await check_ticket(data, engine.services.gateway, thread_id=thread_id)
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        started = time.perf_counter()
        try:
            await engine.graph.ainvoke(
                {"ticket": parsed.model_dump()},
                config,
                context=Context(services=engine.services, meter=meter),
                durability="sync",
            )
        except Exception as exc:
            await engine.graph.aupdate_state(
                config,
                {"status": "failed", "status_reason": f"{type(exc).__name__}: {exc}"},
                as_node="finish",
            )
        snapshot = await engine.graph.aget_state(config)
        return _result(thread_id, snapshot.values, duration_ms=(time.perf_counter() - started) * 1000)

    # -- reading threads -------------------------------------------------------------------------------------

    def thread(self, thread_id: str) -> ThreadView:
        """The thread's result and node-by-node timeline (see `athread`)."""
        return self._portal.call(self._athread(thread_id))

    async def athread(self, thread_id: str) -> ThreadView:
        """The thread's result and the timeline of every node it ran, subgraph nodes included.

        Raises:
            ThreadNotFoundError: no such thread in the checkpoint store.
        """
        return await self._portal.acall(self._athread(thread_id))

    async def _athread(self, thread_id: str) -> ThreadView:
        from triage.timeline import build_timeline

        engine = await self._get_engine()
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        snapshot = await engine.graph.aget_state(config)
        if not snapshot.values:
            raise ThreadNotFoundError(f"no thread {thread_id!r}; `triage threads` lists the existing ones")
        tuples = [t async for t in engine.saver.alist(config)]
        return ThreadView(
            thread_id=thread_id, result=_result(thread_id, snapshot.values), timeline=build_timeline(tuples)
        )

    def threads(self, *, limit: int = 20) -> list[ThreadSummary]:
        """The most recent threads, newest first (see `athreads`)."""
        return self._portal.call(self._athreads(limit))

    async def athreads(self, *, limit: int = 20) -> list[ThreadSummary]:
        """The most recent threads, newest first, with their status and route."""
        return await self._portal.acall(self._athreads(limit))

    async def _athreads(self, limit: int) -> list[ThreadSummary]:
        engine = await self._get_engine()
        saver = engine.saver
        async with (
            saver.lock,
            saver.conn.execute(
                "SELECT thread_id, MAX(checkpoint_id) AS latest FROM checkpoints WHERE checkpoint_ns = '' "
                "GROUP BY thread_id ORDER BY latest DESC LIMIT ?",
                (limit,),
            ) as cursor,
        ):
            rows = list(await cursor.fetchall())
        summaries = []
        for thread_id, _ in rows:
            config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
            snapshot = await engine.graph.aget_state(config)
            values = snapshot.values
            ticket = values.get("ticket") or {}
            summaries.append(
                ThreadSummary(
                    thread_id=thread_id,
                    updated_at=datetime.fromisoformat(str(snapshot.created_at)),
                    status=values.get("status", "running" if snapshot.next else "unknown"),
                    route=values.get("route"),
                    customer_id=ticket.get("customer_id"),
                    subject=ticket.get("subject", ""),
                )
            )
        return summaries

    def customers(self) -> list[dict[str, Any]]:
        """The helpdesk's customers with their status and plan, scenario customers first."""
        return self._portal.call(self._acustomers())

    async def _acustomers(self) -> list[dict[str, Any]]:
        engine = await self._get_engine()
        async with (
            engine.services.helpdesk.read() as conn,
            conn.execute(
                "SELECT c.id, c.name, c.status, c.notes FROM customers c ORDER BY c.id GLOB 'cus_[0-9]*', c.id"
            ) as cursor,
        ):
            return [dict(row) for row in await cursor.fetchall()]

    def warm_up(self) -> None:
        """Open the stores and load (or train) the classifier now, not on the first ticket."""
        self._portal.call(self._awarm_up())

    async def _awarm_up(self) -> None:
        engine = await self._get_engine()
        await engine.services.models.warm_up()


def _result(thread_id: str, values: Mapping[str, Any], *, duration_ms: float | None = None) -> RunResult:
    classification = values.get("classification") or {}
    reply = values.get("reply")
    return RunResult(
        thread_id=thread_id,
        status=values.get("status", "failed"),
        status_reason=values.get("status_reason", None if "status" in values else "the run did not finish"),
        route=values.get("route"),
        route_reason=values.get("route_reason"),
        intent=classification.get("intent"),
        urgency=classification.get("urgency"),
        sentiment=classification.get("sentiment"),
        confidence=classification.get("confidence"),
        signals=classification.get("signals", []),
        redactions=classification.get("redactions", {}),
        policy_version=values.get("policy_version"),
        violations=[dict(v) for v in values.get("violations", [])],
        budget_exceeded=values.get("budget_exceeded"),
        usage=values.get("usage", {}),
        reply=Reply(**reply) if reply else None,
        actions=[Action(**action) for action in values.get("actions", [])],
        proposed_actions=[dict(p) for p in values.get("proposed_actions", [])],
        findings=values.get("findings", {}),
        duration_ms=round(duration_ms, 1) if duration_ms is not None else None,
    )
