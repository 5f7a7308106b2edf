"""The Python API: `TriageApp` runs tickets through the graph and reads threads back from the checkpoint store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from triage.errors import (
    ApprovalRefusedError,
    InvalidDecisionError,
    NotAwaitingApprovalError,
    StaleApprovalError,
    ThreadNotFoundError,
)
from triage.portal import Portal
from triage.schemas import (
    Action,
    Decision,
    Reply,
    RunResult,
    ThreadSummary,
    Ticket,
    TimelineEntry,
    describe_validation_error,
)
from triage.settings import Settings

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph.state import CompiledStateGraph
    from langgraph.types import StateSnapshot

    from triage.metering import Meter
    from triage.models.tier import ModelTier
    from triage.services import Services


SWEEP_ACTOR = "system:sweep"
"""Who `sweep` records as the decider of an expired approval."""


class ThreadView(BaseModel):
    """A thread read back from the store: its result and the node-by-node timeline."""

    thread_id: str
    result: RunResult
    timeline: list[TimelineEntry]
    audit: list[dict[str, Any]] = []
    """Approval requests, decisions, refusals and effects, oldest first."""


@dataclass
class _Engine:
    services: Services
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
        from triage.graphs.support import build_support_graph
        from triage.services import Services

        services = await Services.open(self.settings, models=self._models)
        graph = build_support_graph(policy=services.policy).compile(checkpointer=services.saver, name="support")
        return _Engine(services=services, graph=graph)

    # -- running tickets -------------------------------------------------------------------------------------

    def run(
        self,
        ticket: Ticket | Mapping[str, Any],
        *,
        thread_id: str | None = None,
        budget: Mapping[str, Any] | None = None,
        callbacks: list[Any] | None = None,
    ) -> RunResult:
        """Triage one ticket to a terminal status (see `arun`)."""
        return self._portal.call(self._arun(ticket, thread_id, budget, callbacks))

    async def arun(
        self,
        ticket: Ticket | Mapping[str, Any],
        *,
        thread_id: str | None = None,
        budget: Mapping[str, Any] | None = None,
        callbacks: list[Any] | None = None,
    ) -> RunResult:
        """Triage one ticket: validate, classify, route, act, reply; checkpointed after every node.

        `budget` overrides limits of the policy's per-run budget, e.g. `{"max_model_tokens": 2000}`;
        `callbacks` are LangChain callback handlers for this run (tracing, telemetry).

        Raises:
            InvalidTicketError: the ticket is malformed (nothing is written).
            UnknownCustomerError: the customer id is not in the helpdesk (nothing is written).
            PolicyFileError: the budget override names an unknown limit or a bad value.
        """
        return await self._portal.acall(self._arun(ticket, thread_id, budget, callbacks))

    async def _arun(
        self,
        ticket: Ticket | Mapping[str, Any],
        thread_id: str | None,
        budget: Mapping[str, Any] | None,
        callbacks: list[Any] | None = None,
    ) -> RunResult:
        from triage.metering import Meter
        from triage.nodes.validate import check_ticket

        engine = await self._get_engine()
        meter = Meter(budget=engine.services.policy.support.budget.override(budget))
        thread_id = thread_id or f"thr_{uuid.uuid4().hex}"
        data = ticket.model_dump() if isinstance(ticket, Ticket) else ticket
        # Refuse bad input before anything is written: no thread, no helpdesk row.
        parsed, _ = await check_ticket(data, engine.services.gateway, thread_id=thread_id)
        return await self._drive(engine, {"ticket": parsed.model_dump()}, thread_id, meter, callbacks)

    async def _drive(
        self, engine: _Engine, graph_input: Any, thread_id: str, meter: Meter, callbacks: list[Any] | None = None
    ) -> RunResult:
        """Run the graph on a thread until it ends or pauses; a run that raises ends `failed` with the error."""
        from triage.context import Context

        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        if callbacks:
            config["callbacks"] = callbacks
        started = time.perf_counter()
        try:
            await engine.graph.ainvoke(
                graph_input, config, context=Context(services=engine.services, meter=meter), durability="sync"
            )
        except Exception as exc:
            await engine.graph.aupdate_state(
                config,
                {"status": "failed", "status_reason": f"{type(exc).__name__}: {exc}"},
                as_node="finish",
            )
        snapshot = await engine.graph.aget_state(config)
        return _result(thread_id, snapshot, duration_ms=(time.perf_counter() - started) * 1000)

    # -- approvals -------------------------------------------------------------------------------------------

    def resume(
        self, thread_id: str, decision: Decision | Mapping[str, Any], *, callbacks: list[Any] | None = None
    ) -> RunResult:
        """Answer the approval a thread is paused on and run it on (see `aresume`)."""
        return self._portal.call(self._aresume(thread_id, decision, callbacks=callbacks))

    async def aresume(
        self, thread_id: str, decision: Decision | Mapping[str, Any], *, callbacks: list[Any] | None = None
    ) -> RunResult:
        """Answer the approval a thread is paused on and run it on to its next pause or its end.

        Works from any process that opens the same home. The decision is checked before the thread is touched: a
        refused decision is recorded in the audit trail and changes nothing else.

        Raises:
            InvalidDecisionError: the decision is malformed.
            ThreadNotFoundError: no such thread.
            NotAwaitingApprovalError: the thread is not paused on an approval (e.g. already completed).
            StaleApprovalError: the decision names an approval that is no longer pending.
            ApprovalRefusedError: the approver may not give this approval.
        """
        return await self._portal.acall(self._aresume(thread_id, decision, callbacks=callbacks))

    async def _aresume(
        self,
        thread_id: str,
        decision: Decision | Mapping[str, Any],
        *,
        sweep: bool = False,
        callbacks: list[Any] | None = None,
    ) -> RunResult:
        from langgraph.types import Command

        from triage.metering import Meter
        from triage.nodes.approve import edit_refusal
        from triage.policies.approvals import approval_refusal

        engine = await self._get_engine()
        try:
            decision = decision if isinstance(decision, Decision) else Decision.model_validate(decision)
        except ValidationError as exc:
            raise InvalidDecisionError(describe_validation_error(exc, what="decision")) from None
        snapshot = await engine.graph.aget_state({"configurable": {"thread_id": thread_id}})
        if not snapshot.values:
            raise ThreadNotFoundError(f"no thread {thread_id!r}; `triage approvals` lists the ones awaiting approval")
        pending = _pending(snapshot)
        if pending is None:
            status = snapshot.values.get("status", "running")
            raise NotAwaitingApprovalError(f"thread {thread_id} is not awaiting approval (status {status})")
        if decision.approval_id is not None and decision.approval_id != pending["approval_id"]:
            raise StaleApprovalError(
                f"approval {decision.approval_id} is no longer pending on {thread_id}; the pending one is "
                f"{pending['approval_id']} (see `triage approvals`)"
            )
        policy = engine.services.policy
        refusal = None
        if decision.decision == "timeout" and not sweep:
            refusal = "a timeout is decided by `triage sweep`, not by an approver"
        elif decision.decision in ("approve", "edit"):
            refusal = approval_refusal(
                decision.approver, pending["tier"], pending["approvals_received"], policy.approvals
            )
        elif decision.decision == "reject" and policy.approvals.role_of(decision.approver) is None:
            refusal = f"'{decision.approver}' is not an approver in the approval policy"
        if refusal is None and decision.decision == "edit":
            action = {"kind": pending["action"], "args": pending["args"], "reason": ""}
            refusal = edit_refusal(action, decision.args or {})  # type: ignore[arg-type]
        if refusal is not None:
            await engine.services.journal.audit(
                thread_id,
                "refused",
                actor=decision.approver,
                approval_id=pending["approval_id"],
                details={"decision": decision.decision, "reason": refusal},
                policy_version=policy.version,
            )
            raise ApprovalRefusedError(f"{refusal}; the approval stays pending")
        answer = decision.model_copy(update={"approval_id": pending["approval_id"]}).model_dump(mode="json")
        meter = Meter(budget=policy.support.budget)
        return await self._drive(engine, Command(resume=answer), thread_id, meter, callbacks)

    def recover(self, thread_id: str) -> RunResult:
        """Continue a thread whose process died mid-run (see `arecover`)."""
        return self._portal.call(self._arecover(thread_id))

    async def arecover(self, thread_id: str) -> RunResult:
        """Continue a thread from its last checkpoint after its process died.

        A finished or paused thread is returned as it is. Effects already performed are not repeated (the
        executor's ledger remembers them).

        Raises:
            ThreadNotFoundError: no such thread.
        """
        return await self._portal.acall(self._arecover(thread_id))

    async def _arecover(self, thread_id: str) -> RunResult:
        from triage.metering import Meter

        engine = await self._get_engine()
        snapshot = await engine.graph.aget_state({"configurable": {"thread_id": thread_id}})
        if not snapshot.values:
            raise ThreadNotFoundError(f"no thread {thread_id!r}; `triage threads` lists the existing ones")
        if not snapshot.next or _pending(snapshot):
            return _result(thread_id, snapshot)
        meter = Meter(budget=engine.services.policy.support.budget)
        return await self._drive(engine, None, thread_id, meter)

    def pending_approvals(self, *, overdue: bool = False) -> list[dict[str, Any]]:
        """Approvals waiting for a decision across threads, oldest first (see `apending_approvals`)."""
        return self._portal.call(self._apending(overdue))

    async def apending_approvals(self, *, overdue: bool = False) -> list[dict[str, Any]]:
        """Approvals waiting for a decision across threads, oldest first, each with `overdue` set."""
        return await self._portal.acall(self._apending(overdue))

    async def _apending(self, overdue_only: bool) -> list[dict[str, Any]]:
        engine = await self._get_engine()
        now = datetime.now(UTC)
        found = []
        for thread_id in await self._thread_ids(engine, limit=None):
            snapshot = await engine.graph.aget_state({"configurable": {"thread_id": thread_id}})
            pending = _pending(snapshot)
            if pending is None:
                continue
            pending["overdue"] = datetime.fromisoformat(pending["expires_at"]) <= now
            if pending["overdue"] or not overdue_only:
                found.append(pending)
        return sorted(found, key=lambda p: (p["requested_at"], p["thread_id"]))

    def sweep(self) -> list[RunResult]:
        """Escalate every overdue approval to the human queue (see `asweep`)."""
        return self._portal.call(self._asweep())

    async def asweep(self) -> list[RunResult]:
        """Resume every overdue approval with a timeout decision: it is escalated, never approved."""
        return await self._portal.acall(self._asweep())

    async def _asweep(self) -> list[RunResult]:
        results = []
        for pending in await self._apending(overdue_only=True):
            timeout = Decision(
                approver=SWEEP_ACTOR, decision="timeout", reason="approval expired", approval_id=pending["approval_id"]
            )
            results.append(await self._aresume(pending["thread_id"], timeout, sweep=True))
        return results

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
        tuples = [t async for t in engine.services.saver.alist(config)]
        return ThreadView(
            thread_id=thread_id,
            result=_result(thread_id, snapshot),
            timeline=build_timeline(tuples),
            audit=await engine.services.journal.trail(thread_id),
        )

    def threads(self, *, limit: int = 20) -> list[ThreadSummary]:
        """The most recent threads, newest first (see `athreads`)."""
        return self._portal.call(self._athreads(limit))

    async def athreads(self, *, limit: int = 20) -> list[ThreadSummary]:
        """The most recent threads, newest first, with their status and route."""
        return await self._portal.acall(self._athreads(limit))

    async def _athreads(self, limit: int) -> list[ThreadSummary]:
        engine = await self._get_engine()
        saver = engine.services.saver
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
                    status="awaiting_approval" if _pending(snapshot) else values.get("status", "running"),
                    route=values.get("route"),
                    customer_id=ticket.get("customer_id"),
                    subject=ticket.get("subject", ""),
                )
            )
        return summaries

    @staticmethod
    async def _thread_ids(engine: _Engine, *, limit: int | None) -> list[str]:
        """Thread ids, newest first."""
        saver = engine.services.saver
        async with (
            saver.lock,
            saver.conn.execute(
                "SELECT thread_id, MAX(checkpoint_id) AS latest FROM checkpoints WHERE checkpoint_ns = '' "
                "GROUP BY thread_id ORDER BY latest DESC LIMIT ?",
                (-1 if limit is None else limit,),
            ) as cursor,
        ):
            return [row[0] for row in await cursor.fetchall()]

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

    async def acustomer(self, customer_id: str) -> dict[str, Any] | None:
        """The helpdesk's profile of one customer (name, email, status, plan), or None if there is no such id."""
        return await self._portal.acall(self._acustomer(customer_id))

    async def _acustomer(self, customer_id: str) -> dict[str, Any] | None:
        engine = await self._get_engine()
        profile = await engine.services.gateway.call(
            "validate", "get_customer", {"customer_id": customer_id}, thread_id="lookup"
        )
        return None if profile is None else dict(profile)

    async def acheck_ticket(self, ticket: Ticket | Mapping[str, Any] | str | bytes) -> Ticket:
        """Check a ticket exactly as `arun` does before it writes anything, without running it.

        Raises:
            InvalidTicketError: the ticket is malformed (the same message `arun` and the CLI give).
            UnknownCustomerError: the customer id is not in the helpdesk.
        """
        return await self._portal.acall(self._acheck_ticket(ticket))

    async def _acheck_ticket(self, ticket: Ticket | Mapping[str, Any] | str | bytes) -> Ticket:
        from triage.nodes.validate import check_ticket

        engine = await self._get_engine()
        data = ticket.model_dump() if isinstance(ticket, Ticket) else ticket
        parsed, _ = await check_ticket(data, engine.services.gateway, thread_id="intake")
        return parsed

    def warm_up(self) -> None:
        """Open the stores and load (or train) the classifier now, not on the first ticket."""
        self._portal.call(self._awarm_up())

    async def _awarm_up(self) -> None:
        engine = await self._get_engine()
        await engine.services.models.warm_up()


def _pending(snapshot: StateSnapshot) -> dict[str, Any] | None:
    """The approval request a thread is paused on, if any."""
    for pending in snapshot.interrupts:
        if isinstance(pending.value, dict) and "approval_id" in pending.value:
            return dict(pending.value)
    return None


def _result(thread_id: str, snapshot: StateSnapshot, *, duration_ms: float | None = None) -> RunResult:
    values: Mapping[str, Any] = snapshot.values
    classification = values.get("classification") or {}
    reply = values.get("reply")
    pending = _pending(snapshot)
    status = "awaiting_approval" if pending else values.get("status", "failed")
    reason = values.get("status_reason", None if "status" in values else "the run did not finish")
    if pending:
        reason = pending["description"]
    return RunResult(
        thread_id=thread_id,
        status=status,
        status_reason=reason,
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
        reply=Reply(**reply) if reply and not pending else None,
        actions=[Action(**action) for action in values.get("actions", [])],
        proposed_actions=[dict(p) for p in values.get("proposed_actions", [])],
        findings=values.get("findings", {}),
        pending_approval=pending,
        rejection=values.get("rejection"),
        duration_ms=round(duration_ms, 1) if duration_ms is not None else None,
    )
