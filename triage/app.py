"""The Python API: `TriageApp` runs tickets through the graph and reads threads back from the checkpoint store."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from triage.errors import (
    ApprovalConflictError,
    ApprovalRefusedError,
    CheckpointStoreError,
    ConversationBusyError,
    HoldLostError,
    InvalidDecisionError,
    InvalidReleaseError,
    InvalidTicketError,
    NotAwaitingApprovalError,
    StaleApprovalError,
    StoreUnavailableError,
    ThreadNotFoundError,
    ToolError,
    ToolErrorKind,
    UnknownConversationError,
)
from triage.portal import Portal
from triage.schemas import (
    Action,
    Decision,
    FollowUp,
    PendingApproval,
    PendingGroup,
    ReleaseResult,
    Reply,
    RunResult,
    ThreadSummary,
    Ticket,
    TimelineEntry,
    describe_validation_error,
)
from triage.settings import Settings
from triage.state import RELEASE_THREAD_PREFIX

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph.state import CompiledStateGraph, StateGraph
    from langgraph.types import StateSnapshot

    from triage.checkpoints import RunRecord
    from triage.journal import ApprovalRow, ApprovalState
    from triage.metering import Meter
    from triage.models.tier import ModelTier
    from triage.policies import PolicyBundle
    from triage.retention import PruneReport
    from triage.services import Services
    from triage.state import Turn


_log = logging.getLogger(__name__)

START_ATTEMPTS = 3
"""Tries of a run's first helpdesk read (the ticket's customer) before the run is refused as not started."""
PAUSE_POLLS = 40
"""How many times (every 50 ms) a decision looks for the thread to be paused on the round the index offers."""


class ThreadView(BaseModel):
    """A thread read back from the store: its result and the node-by-node timeline."""

    thread_id: str
    result: RunResult
    timeline: list[TimelineEntry]
    audit: list[dict[str, Any]] = []
    """Approval requests, decisions, refusals and effects, oldest first."""
    customer_memory: dict[str, Any] | None = None
    """What is remembered about the thread's customer across conversations (`triage.stores.memory`)."""


class _Engine:
    """An open app's services and graphs: the support graph, and the release follow-up's, compiled when first used."""

    def __init__(self, services: Services, graphs: CompiledGraphs) -> None:
        self.services = services
        self._graphs = graphs
        self._stores = {"checkpointer": services.saver, "store": services.memory}
        self.graph = graphs.support(services.policy).copy(update=self._stores)
        self._release: CompiledStateGraph[Any, Any, Any, Any] | None = None

    @property
    def release(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The release follow-up graph, on the same checkpoint saver; its threads are named `rel_...`."""
        if self._release is None:
            self._release = self._graphs.release(self.services.policy).copy(update=self._stores)
        return self._release

    def graph_for(self, thread_id: str) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The graph a thread belongs to, by its name."""
        return self.release if thread_id.startswith(RELEASE_THREAD_PREFIX) else self.graph

    def last_node_for(self, thread_id: str) -> str:
        """The node that gives a thread of its graph its terminal status."""
        return "report" if thread_id.startswith(RELEASE_THREAD_PREFIX) else "finish"


class CompiledGraphs:
    """Support graphs compiled without a checkpointer, one per policy version, for apps to share.

    Building and compiling the graph takes 25-60 ms. Apps given the same `CompiledGraphs` compile it once and each
    attach their own saver to a copy (`Pregel.copy`, well under a millisecond); the eval, which opens an app per
    case, shares one across its cases. The policy version is a hash of the policy files, so a changed policy gets a
    graph of its own. An app given none compiles its own graph, with whatever node functions are bound then.
    """

    def __init__(self) -> None:
        self._by_version: dict[tuple[str, str], CompiledStateGraph[Any, Any, Any, Any]] = {}
        self._lock = threading.Lock()

    def support(self, policy: PolicyBundle) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The support graph for `policy`, compiled on first use."""
        from triage.graphs.support import build_support_graph

        return self._compiled("support", policy, build_support_graph)

    def release(self, policy: PolicyBundle) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The release follow-up graph for `policy`, compiled on first use."""
        from triage.graphs.release_followup import build_release_graph

        return self._compiled("release_followup", policy, build_release_graph)

    def _compiled(
        self, name: str, policy: PolicyBundle, build: Callable[..., StateGraph[Any, Any, Any, Any]]
    ) -> CompiledStateGraph[Any, Any, Any, Any]:
        with self._lock:
            graph = self._by_version.get((name, policy.version))
            if graph is None:
                graph = build(policy=policy).compile(name=name)
                self._by_version[(name, policy.version)] = graph
            return graph


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

    def __init__(
        self,
        settings: Settings,
        *,
        models: ModelTier | None = None,
        graphs: CompiledGraphs | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """An app on `settings`; nothing opens before its first call.

        Args:
            settings: Its home, stores and policies.
            models: The model tier (default: the embedded local tier, with the model if one is configured).
            graphs: Compiled graphs to share with other apps in this process.
            loop: Run the app on this event loop, which the caller runs, instead of a thread of the app's own. For a
                program that calls only the async methods, and from that loop (an eval worker does): each call
                then runs at once, without a hop to the app's thread and back. The app's own work (a
                classification, say) then runs on that loop too, and the sync methods work only from another
                thread while it runs. `close` leaves the loop running.
        """
        self.settings = settings
        self._models = models
        self._graphs = graphs or CompiledGraphs()
        self._portal = Portal(loop)
        self._engine: _Engine | None = None
        self._opening: asyncio.Lock | None = None
        self._conversation_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        """Per thread held or awaited in this process: its lock, and how many calls hold or await it."""

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
        from triage.services import Services

        # The helpdesk's reads run on the app's loop (`LoopReader`): a hop to a thread cost more than the read.
        services = await Services.open(
            self.settings, models=self._models, reads_on_loop=self.settings.helpdesk_reads_on_loop
        )
        return _Engine(services, self._graphs)

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

        A run that started always returns its thread (a run that failed ends `failed` with its reason and failure
        class; `recover` retries a transient one).

        Raises:
            InvalidTicketError: the ticket is malformed (nothing is written).
            UnknownCustomerError: the customer id is not in the helpdesk (nothing is written).
            PolicyFileError: the budget override names an unknown limit or a bad value.
            StoreError: the home or a store cannot be opened; `DamagedStoreError` when a store file is empty,
                truncated or foreign (nothing is written to it).
            StoreUnavailableError: the run could not start (a store did not answer; `thread_id` is None, nothing
                was written), or it started and the checkpoint store then failed (`thread_id` names the thread
                for `recover`).
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

        engine = await self._get_engine()
        meter = Meter(budget=engine.services.policy.support.budget.override(budget))
        data: Any = ticket.model_dump() if isinstance(ticket, Ticket) else ticket
        parsed = Ticket.parse(data)
        conversation_id = parsed.conversation_id
        if conversation_id is None:
            thread_id = thread_id or f"thr_{uuid.uuid4().hex}"
            # Held in this process only: a follow-up sent here while this turn runs waits for it, not refused as
            # busy. No lease: it cost every ticket 0.07x of the bare graph's time (two writes and a renewal task);
            # another process's follow-up finds the turn running and is refused as busy.
            async with self._hold_thread(engine, thread_id, lease=False):
                return await self._start(engine, parsed, thread_id, meter, callbacks)
        if thread_id is not None and thread_id != conversation_id:
            raise InvalidTicketError(
                f"the ticket continues conversation {conversation_id} but the run names thread {thread_id}: give one"
            )
        async with self._hold_thread(engine, conversation_id):
            return await self._follow_up(engine, data, conversation_id, meter, callbacks)

    @contextlib.asynccontextmanager
    async def _hold_thread(
        self, engine: _Engine, thread_id: str, *, busy: str | None = None, lease: bool = True
    ) -> AsyncIterator[None]:
        """Hold the thread for the body: turns, recoveries and resumed approvals of one thread take turns.

        In this process they queue on a lock without polling; across processes, on the lease in the checkpoint
        store (`triage.leases`), unless `lease` is False. `busy` is what a refusal after `conversation_wait_seconds`
        says.

        Raises:
            ConversationBusyError: another process held the thread all that time.
        """
        from triage.leases import hold_conversation

        lock, users = self._conversation_locks.get(thread_id) or (asyncio.Lock(), 0)
        self._conversation_locks[thread_id] = (lock, users + 1)
        try:
            async with (
                lock,
                hold_conversation(
                    engine.services.journal,
                    thread_id,
                    lease_seconds=self.settings.conversation_lease_seconds,
                    wait_seconds=self.settings.conversation_wait_seconds,
                    busy=busy,
                )
                if lease
                else contextlib.nullcontext(),
            ):
                yield
        finally:  # the last one out drops the lock: a long-lived process does not keep one per thread it ever held
            lock, users = self._conversation_locks[thread_id]
            if users == 1:
                del self._conversation_locks[thread_id]
            else:
                self._conversation_locks[thread_id] = (lock, users - 1)

    async def _follow_up(
        self, engine: _Engine, data: Any, conversation_id: str, meter: Meter, callbacks: list[Any] | None
    ) -> RunResult:
        """Run a follow-up as the conversation's next turn, or attach it to the turn that awaits approval."""
        from triage.nodes.validate import check_ticket
        from triage.policies.conversation import FOLLOW_UP_EVENT, attached_id, clip, taken_in

        config: RunnableConfig = {"configurable": {"thread_id": conversation_id}}
        snapshot = await engine.graph.aget_state(config)
        if not _exists(snapshot):
            raise UnknownConversationError(
                f"no conversation {conversation_id!r}: leave conversation_id out to start one (its result names the "
                "conversation_id that follow-ups give)"
            )
        ticket = Ticket.parse(data)
        known = (snapshot.values.get("customer") or {}).get("id")
        if ticket.customer_id is None and known is not None:
            data = ticket.model_copy(update={"customer_id": known}).model_dump()  # not asked for again
        elif known is not None and ticket.customer_id != known:
            raise UnknownConversationError(
                f"conversation {conversation_id} is with another customer than {ticket.customer_id}: leave "
                "conversation_id out to start a new conversation"
            )
        paused = _pending(snapshot)
        # A step's writes are saved before the checkpoint after it: in between, `next` is empty while the turn runs.
        running = paused is None and bool(snapshot.next or await _left_mid_step(engine, config, snapshot))
        if ticket.message_id is not None:
            # The same message again (a webhook retried, a restarted server's sweep) is taken in once: as a turn, or
            # attached while the thread awaited a decision (and not yet folded into a turn).
            attached = await self._follow_ups(engine, conversation_id)
            known = attached_id(conversation_id, ticket.message_id)
            if (
                taken_in(snapshot.values, conversation_id, ticket.message_id)
                or any(line.follow_up_id == known for line in attached)
                or await _input_saved_with(engine, config, ticket.message_id)
                or await _taken_in_before_kept_turns(engine, conversation_id, snapshot.values, ticket.message_id)
            ):
                result = _result(conversation_id, snapshot).model_copy(update={"follow_ups": attached})
                if running:  # its turn is still running, or stopped part-way (`recover` ends it): not the last one's
                    result = result.model_copy(
                        update={"status": "failed", "status_reason": _unfinished(conversation_id)}
                    )
                return result
        if running:
            raise ConversationBusyError(
                f"conversation {conversation_id} is still running its last turn: wait for it (or `triage recover "
                f"{conversation_id}` if its process died), then send the follow-up again"
            )
        if paused is None:
            return await self._start(engine, data, conversation_id, meter, callbacks)
        # Awaiting a decision: the message is attached for the approver and joins the next turn; the pending
        # decision and the paused run are left as they are.
        parsed, _ = await check_ticket(data, engine.services.gateway, thread_id=conversation_id)
        follow_up_id = attached_id(conversation_id, parsed.message_id)  # one line however often it is sent
        await engine.services.journal.audit(
            conversation_id,
            FOLLOW_UP_EVENT,
            actor="customer",
            approval_id=paused["approval_id"],
            details={"follow_up_id": follow_up_id, "turn": _turn_of(snapshot), "message": clip(parsed.text)},
            policy_version=engine.services.policy.version,
            dedupe_key=f"follow_up:{follow_up_id}",
        )
        result = _result(conversation_id, snapshot)
        return result.model_copy(update={"follow_ups": await self._follow_ups(engine, conversation_id)})

    @staticmethod
    async def _follow_ups(engine: _Engine, thread_id: str) -> list[FollowUp]:
        """Messages attached to the thread that no turn has taken in yet."""
        from triage.policies.conversation import FOLLOW_UP_EVENT

        turn = _turn_of(await engine.graph.aget_state({"configurable": {"thread_id": thread_id}}))
        return [
            FollowUp(follow_up_id=line["details"]["follow_up_id"], at=line["at"], message=line["details"]["message"])
            for line in await engine.services.journal.trail(thread_id)
            if line["event"] == FOLLOW_UP_EVENT and line["details"].get("turn") == turn
        ]

    async def _start(
        self, engine: _Engine, data: Ticket | Any, thread_id: str, meter: Meter, callbacks: list[Any] | None
    ) -> RunResult:
        """Check the ticket (a `Ticket`, or data) and run it on `thread_id` (a new thread, or a conversation's turn)."""
        from triage.nodes.validate import check_ticket

        # Refuse bad input before anything is written: no thread, no helpdesk row.
        for attempt in range(START_ATTEMPTS):
            try:
                parsed, customer = await check_ticket(data, engine.services.gateway, thread_id=thread_id)
                break
            except ToolError as exc:
                if exc.kind != "transient" or attempt == START_ATTEMPTS - 1:
                    raise StoreUnavailableError(
                        f"the run could not start: the helpdesk did not answer ({exc}); nothing was written, "
                        "submit the ticket again"
                    ) from exc
                await asyncio.sleep(0.1 * 2**attempt)
        graph_input = {"ticket": parsed.model_dump(), "customer": customer}  # `validate` need not look it up again
        return await self._drive(engine, graph_input, thread_id, meter, callbacks)

    async def _drive(
        self,
        engine: _Engine,
        graph_input: Any,
        thread_id: str,
        meter: Meter,
        callbacks: list[Any] | None = None,
        *,
        from_checkpoint: RunnableConfig | None = None,
    ) -> RunResult:
        """Run the graph on a thread until it ends or pauses; a run that raises ends `failed` with the error.

        `from_checkpoint` runs on from an earlier checkpoint of the thread (retrying a failed step) instead of
        the latest. The failure is saved with its class (transient or permanent) and the run's open refund
        requests are released. When even that cannot be saved, `StoreUnavailableError` carries the thread id. A
        new turn that saved nothing, not even its input, raises `StoreUnavailableError` without a thread id and
        leaves the thread as it was.
        """
        from triage.checkpoints import RunRecorder
        from triage.context import Context
        from triage.policies.pii import redactions_kept

        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        run_config: RunnableConfig = {**(from_checkpoint or config)}
        if callbacks:
            run_config["callbacks"] = callbacks
        graph = engine.graph_for(thread_id)
        saver = engine.services.saver
        started = time.perf_counter()
        finished: RunRecord | None = None  # the record of a run that returned
        recording = saver.recording(thread_id) if isinstance(saver, RunRecorder) else contextlib.nullcontext()
        with recording as record, redactions_kept():  # the message is redacted by `classify` and again by `finish`
            try:
                # No stream: the values LangGraph would gather after every step (what `ainvoke` returns) go
                # unread, as the result comes from the run's last checkpoint. Leaving them out is 2-4% of a
                # ticket's CPU.
                async for _ in graph.astream(
                    graph_input,
                    run_config,
                    context=Context(services=engine.services, meter=meter),
                    durability="sync",
                    stream_mode=[],
                ):
                    pass
                finished = record
            except HoldLostError:
                raise  # another process runs the thread now: this run records nothing more, not even its failure
            except Exception as exc:
                if _saved_nothing(record) and _starts_a_turn(graph_input):
                    # Not even its input was saved: the thread is as it was (a follow-up's conversation stays with
                    # its last turn's status), and there is nothing for `recover` to run.
                    cause = exc.__cause__ or exc  # the store's own error, without the saver's advice to recover
                    raise StoreUnavailableError(
                        f"the run could not start on thread {thread_id}: its first checkpoint was not saved "
                        f"({type(cause).__name__}: {cause}); nothing was saved, send the ticket again once the store "
                        "is available"
                    ) from exc
                await self._record_failure(engine, thread_id, exc)
        snapshot = _finished_snapshot(graph, finished)
        try:
            if snapshot is None:
                snapshot = await graph.aget_state(config)
        except Exception as exc:
            raise StoreUnavailableError(
                f"run {thread_id} ran but its result cannot be read ({exc}); `triage show {thread_id}` once the "
                "checkpoint store is back",
                thread_id=thread_id,
            ) from exc
        return _result(thread_id, snapshot, duration_ms=(time.perf_counter() - started) * 1000, retries=meter.retries())

    async def _record_failure(self, engine: _Engine, thread_id: str, exc: Exception) -> None:
        from langgraph.constants import START

        from triage.nodes.finish import remember_turn
        from triage.policies.conversation import turn_record, with_turn
        from triage.tools.refunds import release_refund_requests

        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        failure = failure_class(exc)
        reason = f"{type(exc).__name__}: {exc}"
        withdraw: tuple[set[str], set[str] | None] = (set(), None)  # see `_failed_turns_requests`
        record: Turn | None = None  # the failed turn's record, when this records its end
        try:
            snapshot = await engine.graph_for(thread_id).aget_state(config)
            if not _exists(snapshot):
                raise StoreUnavailableError(
                    f"the run could not start: {reason}; nothing was saved, try again once the store is available"
                ) from exc
            if any(task.name == START for task in snapshot.tasks):
                # Its input is saved and no step has read it: a failed status written over it would drop the message
                # (review: a follow-up was lost so, and `recover` then had nothing to run). `recover` runs it.
                raise StoreUnavailableError(
                    f"run {thread_id} stopped before its first step ({reason}); its input is saved: `triage recover "
                    f"{thread_id}` runs it once the store is back",
                    thread_id=thread_id,
                ) from exc
            values = snapshot.values
            update: dict[str, Any] = {"status": "failed", "status_reason": reason, "failure_class": failure}
            if engine.last_node_for(thread_id) == "finish":
                withdraw = _failed_turns_requests(values)
                if not _recorded(values):  # as `finish` records a turn that ends: the next one follows it
                    record = turn_record(values.get("turn", 1), {**values, **update})
                    update["conversation"] = with_turn(values.get("conversation", []), record)
            await engine.graph_for(thread_id).aupdate_state(config, update, as_node=engine.last_node_for(thread_id))
        except StoreUnavailableError:
            raise
        except Exception as mark:
            raise StoreUnavailableError(
                f"run {thread_id} stopped ({reason}) and the checkpoint store could not record it ({mark}); "
                f"`triage recover {thread_id}` continues it once the store is back",
                thread_id=thread_id,
            ) from exc
        released: list[str] = []
        try:
            keep, only = withdraw
            released = await release_refund_requests(engine.services.helpdesk, thread_id, keep=keep, only=only)
            if released:
                await engine.services.journal.audit(
                    thread_id,
                    "released",
                    actor="system:failure",
                    details={"refund_requests": released, "failure_class": failure},
                    policy_version=engine.services.policy.version,
                )
        except Exception:  # the helpdesk is down as well; the request is released by the next failure or recover
            _log.warning("could not release the refund requests of failed run %s", thread_id, exc_info=True)
        if record is not None:
            # As `finish` remembers a turn that ends: the customer's next conversation sees it failed, and what it
            # left open (an account request, a hand-off ticket), not the refund requests just withdrawn.
            try:
                await remember_turn(engine.services.memory, {**values, **update}, record, thread_id, withdrawn=released)
            except Exception:
                _log.warning("could not remember the failed turn of run %s", thread_id, exc_info=True)

    # -- release follow-up -----------------------------------------------------------------------------------

    def release(
        self,
        version: str,
        fixes: str | list[str],
        notes: str | None = None,
        *,
        thread_id: str | None = None,
        callbacks: list[Any] | None = None,
    ) -> ReleaseResult:
        """Follow up a shipped release (see `arelease`)."""
        return self._portal.call(self._arelease(version, fixes, notes, thread_id, callbacks))

    async def arelease(
        self,
        version: str,
        fixes: str | list[str],
        notes: str | None = None,
        *,
        thread_id: str | None = None,
        callbacks: list[Any] | None = None,
    ) -> ReleaseResult:
        """Follow up a shipped release: close the engineering tickets it fixes and tell the customers who reported them.

        `fixes` names engineering ticket ids (`TCK_...`) or issue keys (`ENG-42`) that tickets mention; `notes` are
        the release notes, summarised for customers. Each ticket is closed and each customer told once per release,
        however often the release is run. More recipients than the approval policy's `release.mass_notification_above`
        pause the run for approval (`triage approvals`, `resume`).

        Raises:
            InvalidReleaseError: a malformed version, no fixes, or a malformed key (nothing is written).
        """
        return await self._portal.acall(self._arelease(version, fixes, notes, thread_id, callbacks))

    async def _arelease(
        self,
        version: str,
        fixes: str | list[str],
        notes: str | None,
        thread_id: str | None,
        callbacks: list[Any] | None,
    ) -> ReleaseResult:
        from triage.metering import Meter
        from triage.schemas import Release

        release = Release.model_validate({"version": version, "fixes": fixes, "notes": notes or ""})
        if thread_id is not None and not thread_id.startswith(RELEASE_THREAD_PREFIX):
            raise InvalidReleaseError(f"a release follow-up's thread id starts with {RELEASE_THREAD_PREFIX!r}")
        engine = await self._get_engine()
        meter = Meter(budget=engine.services.policy.support.budget)
        thread_id = thread_id or f"{RELEASE_THREAD_PREFIX}{uuid.uuid4().hex}"
        if _exists(await engine.release.aget_state({"configurable": {"thread_id": thread_id}})):
            raise InvalidReleaseError(
                f"thread {thread_id} already followed up a release; run it again without a thread id (a new thread "
                "repeats nothing that was done)"
            )
        result = await self._drive(engine, {"release": release.model_dump()}, thread_id, meter, callbacks)
        assert isinstance(result, ReleaseResult)
        return result

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

        Works from any process that opens the same home. The decision is checked against the approval's current
        state in the approval index and recorded there by a compare-and-set before the thread is touched, while
        the thread is held: of decisions racing on one approval (in this process or others) one is applied per
        round, and a later one meets the approval as the earlier left it. A refused decision is recorded in the
        audit trail and changes nothing else. Once the claim is under way, a cancelled call (a timeout, a cancelled
        task) still takes the decision in: its run goes on to its end, holding the thread, unless this process's
        hold on the thread was lost. A caller on the app's own event loop sees its cancellation once the run ended.

        Raises:
            InvalidDecisionError: the decision is malformed.
            ThreadNotFoundError: no such thread.
            NotAwaitingApprovalError: the thread is not paused on an approval (e.g. already completed).
            StaleApprovalError: the decision names an approval that is no longer pending.
            ApprovalRefusedError: the approver may not give this approval.
            ApprovalConflictError: another decision on the same approval won; it names the winner.
            ConversationBusyError: another process held the thread (a follow-up, a recover, a decision) for all of
                `conversation_wait_seconds`; the decision was not recorded.
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
        engine = await self._get_engine()
        try:
            decision = decision if isinstance(decision, Decision) else Decision.model_validate(decision)
        except ValidationError as exc:
            raise InvalidDecisionError(describe_validation_error(exc, what="decision")) from None
        busy = (
            f"{decision.approver}'s {decision.decision} was not recorded: another process is running thread "
            f"{thread_id}; send it again once that is done"
        )
        # Held from before the claim to the end of the run: a decision that wins its claim is applied by this call,
        # never left recorded but untaken because the thread was busy (and a recover or follow-up waits for it).
        async with self._hold_thread(engine, thread_id, busy=busy):
            return await self._resume_held(engine, thread_id, decision, sweep=sweep, callbacks=callbacks)

    async def _resume_held(
        self,
        engine: _Engine,
        thread_id: str,
        decision: Decision,
        *,
        sweep: bool,
        callbacks: list[Any] | None,
    ) -> RunResult:
        """`aresume`'s work, while the thread is held (`_hold_thread`)."""
        from langgraph.types import Command

        from triage.leases import run_to_its_end
        from triage.metering import Meter

        journal = engine.services.journal
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        # The index first, then the thread: a thread seen paused on the round the index offers stays paused there
        # until a decision claims that round's version.
        row = await journal.current_approval(thread_id)
        snapshot = await engine.graph_for(thread_id).aget_state(config)
        if not _exists(snapshot):
            raise ThreadNotFoundError(f"no thread {thread_id!r}; `triage approvals` lists the ones awaiting approval")
        status = _status_of(snapshot)
        paused = _pending(snapshot)
        if paused is not None and (row is None or row.approval_id != paused["approval_id"]):
            # Paused on an approval the index does not hold (a thread from before the index): index it now.
            await journal.offer_approval(paused, origin_id=paused["approval_id"])
            row = await journal.approval(paused["approval_id"])
        if row is None:
            raise NotAwaitingApprovalError(f"thread {thread_id} is not awaiting approval (status {status})")
        if decision.approval_id is not None and decision.approval_id != row.approval_id:
            raise StaleApprovalError(
                f"approval {decision.approval_id} is no longer pending on {thread_id}; the current one is "
                f"{row.approval_id} (see `triage approvals`)"
            )
        if row.state != "pending":
            raise ApprovalConflictError(
                f"thread {thread_id} is not awaiting approval (status {status}): approval {row.approval_id} was "
                f"already decided by {row.winner}",
                approval_id=row.approval_id,
                winner=row.winner,
            )
        # The node offers a round just before the thread pauses on it: give the pause a moment to be saved.
        for _ in range(PAUSE_POLLS):
            if paused is not None and (paused["approval_id"], len(paused["approvals_received"])) == (
                row.approval_id,
                row.round,
            ):
                break
            await asyncio.sleep(0.05)
            snapshot = await engine.graph_for(thread_id).aget_state(config)
            paused = _pending(snapshot)
        else:
            latest = await journal.approval(row.approval_id)
            if latest is not None and latest.version != row.version:  # decided while we looked: that one won
                raise self._lost(decision, row.approval_id, latest, request=row.request)
            raise NotAwaitingApprovalError(
                f"thread {thread_id} is not paused on approval {row.approval_id} (status {_status_of(snapshot)}); "
                f"`triage recover {thread_id}` continues it"
            )
        request = row.request
        refusal = self._refusal(engine, decision, request, sweep=sweep)
        if refusal is not None:
            await journal.audit(
                thread_id,
                "refused",
                actor=decision.approver,
                approval_id=row.approval_id,
                details={"decision": decision.decision, "reason": refusal},
                policy_version=engine.services.policy.version,
            )
            raise ApprovalRefusedError(f"{refusal}; the approval stays pending")
        answer = decision.model_copy(update={"approval_id": row.approval_id}).model_dump(mode="json")

        async def claim_and_take_in() -> RunResult:
            won = await journal.claim(
                row.approval_id,
                version=row.version,
                state=state_after(decision, request),
                decision=answer,
                approver=decision.approver,
            )
            if not won:
                raise self._lost(decision, row.approval_id, await journal.approval(row.approval_id), request=request)
            meter = Meter(budget=engine.services.policy.support.budget)
            return await self._drive(engine, Command(resume=answer), thread_id, meter, callbacks)

        # A caller that gives up (a timeout, a cancelled task) must not leave a claimed decision untaken: the thread
        # would wait, paused on an approval the index shows as decided, for a `triage recover`.
        return await run_to_its_end(claim_and_take_in())

    @staticmethod
    def _lost(
        decision: Decision, approval_id: str, latest: ApprovalRow | None, *, request: Mapping[str, Any]
    ) -> ApprovalConflictError:
        """The refusal of a decision that another one (`latest.winner`) beat to the approval."""
        winner = latest.winner if latest is not None else "another decision"
        now = (
            f"it awaits approval again ({latest.round}/{request['approvals_required']} received)"
            if latest is not None and latest.state == "pending"
            else f"it is {latest.state if latest else 'gone'}"
        )
        return ApprovalConflictError(
            f"{decision.approver}'s {decision.decision} of approval {approval_id} was not applied: "
            f"{winner} decided it first; {now}",
            approval_id=approval_id,
            winner=winner,
        )

    @staticmethod
    def _refusal(engine: _Engine, decision: Decision, request: Mapping[str, Any], *, sweep: bool) -> str | None:
        """Why `decision` may not answer `request`, or None (the same check the approve node applies)."""
        from triage.policies.approvals import SWEEP_ACTOR, decision_refusal

        if decision.decision == "timeout" and not sweep and decision.approver == SWEEP_ACTOR:
            return "a timeout is decided by `triage sweep`, not by an approver"
        return decision_refusal(
            decision.approver,
            decision.decision,
            tier=request["tier"],
            received=request["approvals_received"],
            kind=request["action"],
            args=request["args"],
            changes=decision.args,
            policy=engine.services.policy.approvals,
        )

    def recover(self, thread_id: str) -> RunResult:
        """Continue a thread whose run died or failed on a transient fault (see `arecover`)."""
        return self._portal.call(self._arecover(thread_id))

    async def arecover(self, thread_id: str) -> RunResult:
        """Give a thread that is not terminal its way forward, from its last checkpoint.

        - died mid-run (whatever the point, including after a node's writes were saved but before its
          checkpoint): it runs on;
        - paused on an approval whose decision was recorded but never taken in (its process died): the recorded
          decision is applied;
        - `failed` on a transient fault (a busy store, a timeout): the failed step is retried;
        - completed, escalated, failed for good, or waiting for a decision: returned as it is.

        Effects already performed are not repeated (the executor's ledger remembers them). The thread is held
        while it is recovered, as a follow-up holds its conversation: a recover waits for a follow-up, a decision
        or another recover running the same thread, here or in another process, and then finds it as that left it.
        A conversation's first turn holds its thread in its own process only: recover a thread whose first turn
        another process may still be running only once that process is gone.

        Raises:
            ThreadNotFoundError: no such thread.
            ConversationBusyError: another process held the thread for all of `conversation_wait_seconds`.
        """
        return await self._portal.acall(self._arecover(thread_id))

    async def _arecover(self, thread_id: str) -> RunResult:
        engine = await self._get_engine()
        busy = (
            f"thread {thread_id} is being run by another process (a follow-up, a decision or another recover): "
            f"`triage recover {thread_id}` again once that is done (a process that died holding it lets go within "
            f"{self.settings.conversation_lease_seconds:g} s)"
        )
        async with self._hold_thread(engine, thread_id, busy=busy):
            return await self._recover_held(engine, thread_id)

    async def _recover_held(self, engine: _Engine, thread_id: str) -> RunResult:
        """`arecover`'s work, while the thread is held (`_hold_thread`)."""
        from langgraph.types import Command

        from triage.metering import Meter

        journal = engine.services.journal
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        meter = Meter(budget=engine.services.policy.support.budget)
        result: RunResult | None = None
        for _ in range(3):  # e.g. a died run goes on, pauses on an approval already decided, which is applied
            snapshot = await engine.graph_for(thread_id).aget_state(config)
            if not _exists(snapshot):
                raise ThreadNotFoundError.named(thread_id)
            paused = _pending(snapshot)
            values = snapshot.values
            if paused is not None:
                row = await journal.approval(paused["approval_id"])
                if row is None:
                    await journal.offer_approval(paused, origin_id=paused["approval_id"])
                unapplied = (
                    row is not None
                    and row.state != "pending"
                    and row.decision is not None
                    and row.round == len(paused["approvals_received"])
                )
                if not unapplied or row is None:
                    break
                result = await self._drive(engine, Command(resume=row.decision), thread_id, meter)
            elif values.get("status") and not snapshot.next and not await _left_mid_step(engine, config, snapshot):
                retry = values["status"] == "failed" and values.get("failure_class") == "transient"
                if not retry or snapshot.parent_config is None:
                    break
                result = await self._drive(engine, None, thread_id, meter, from_checkpoint=snapshot.parent_config)
                if result.status == "failed":
                    break
            else:
                result = await self._drive(engine, None, thread_id, meter)
        if result is not None:
            return result
        return _result(thread_id, await engine.graph_for(thread_id).aget_state(config))

    def pending_approvals(
        self,
        *,
        overdue: bool = False,
        tier: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[PendingApproval]:
        """Approvals waiting for a decision across threads, oldest first (see `apending_approvals`)."""
        return self._portal.call(self._apending(overdue, tier, action, limit, offset))

    async def apending_approvals(
        self,
        *,
        overdue: bool = False,
        tier: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[PendingApproval]:
        """Approvals waiting for a decision across threads, oldest first, read from the approval index.

        `overdue` keeps only those past their expiry; `tier` and `action` filter; `limit` and `offset` page.
        """
        return await self._portal.acall(self._apending(overdue, tier, action, limit, offset))

    async def _apending(
        self, overdue_only: bool, tier: str | None, action: str | None, limit: int | None, offset: int
    ) -> list[PendingApproval]:
        engine = await self._get_engine()
        now = datetime.now(UTC)
        expired_by = now.isoformat(timespec="seconds") if overdue_only else None
        rows = await engine.services.journal.pending_approvals(
            tier=tier, action=action, expired_by=expired_by, limit=limit, offset=offset
        )
        return [
            PendingApproval(
                **row.request,
                origin_id=row.origin_id,
                version=row.version,
                overdue=datetime.fromisoformat(row.expires_at) <= now,
                follow_ups=await self._follow_ups(engine, row.thread_id),
            )
            for row in rows
        ]

    async def apending_counts(self) -> list[PendingGroup]:
        """How many approvals wait, by tier, action and overdue or not: the inbox's counts without reading them."""
        return await self._portal.acall(self._apending_counts())

    async def _apending_counts(self) -> list[PendingGroup]:
        engine = await self._get_engine()
        groups = await engine.services.journal.pending_counts(datetime.now(UTC).isoformat(timespec="seconds"))
        return [PendingGroup(tier=t, action=a, overdue=o, count=n) for t, a, o, n in groups]

    def sweep(self) -> list[RunResult]:
        """Escalate every overdue approval to the human queue (see `asweep`)."""
        return self._portal.call(self._asweep())

    async def asweep(self) -> list[RunResult]:
        """Resume every overdue approval with a timeout decision: it is escalated, never approved."""
        return await self._portal.acall(self._asweep())

    async def _asweep(self) -> list[RunResult]:
        results = []
        for pending in await self._apending(True, None, None, None, 0):
            from triage.policies.approvals import SWEEP_ACTOR

            timeout = Decision(
                approver=SWEEP_ACTOR, decision="timeout", reason="approval expired", approval_id=pending.approval_id
            )
            try:
                results.append(await self._aresume(pending.thread_id, timeout, sweep=True))
            except ApprovalConflictError:
                continue  # decided by a person meanwhile
            except ConversationBusyError:
                _log.warning("sweep: thread %s is busy in another process; a later sweep expires it", pending.thread_id)
            except (StaleApprovalError, NotAwaitingApprovalError) as moved:  # decided or edited since it was listed
                _log.warning("sweep: passed over thread %s: %s", pending.thread_id, moved)
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

    async def atimeline(self, thread_id: str) -> list[TimelineEntry]:
        """Only the timeline of `athread`: what a caller that judges each node needs (the eval), at half the cost.

        Raises:
            ThreadNotFoundError: no such thread in the checkpoint store.
        """
        return await self._portal.acall(self._atimeline(thread_id))

    async def _atimeline(self, thread_id: str, engine: _Engine | None = None) -> list[TimelineEntry]:
        from triage.timeline import build_timeline

        engine = engine or await self._get_engine()
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        tuples = [t async for t in engine.services.saver.alist(config)]
        if not tuples:
            raise ThreadNotFoundError.named(thread_id)
        return build_timeline(tuples)

    async def _athread(self, thread_id: str) -> ThreadView:
        from triage.stores.memory import read_memory

        engine = await self._get_engine()
        config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
        snapshot = await engine.graph_for(thread_id).aget_state(config)
        if not _exists(snapshot):
            raise ThreadNotFoundError.named(thread_id)
        timeline = await self._atimeline(thread_id, engine)
        result = _result(thread_id, snapshot)
        if result.pending_approval is not None:
            result = result.model_copy(update={"follow_ups": await self._follow_ups(engine, thread_id)})
        customer = snapshot.values.get("customer") or {}
        return ThreadView(
            thread_id=thread_id,
            result=result,
            timeline=timeline,
            audit=await engine.services.journal.trail(thread_id),
            customer_memory=await read_memory(engine.services.memory, customer.get("id")),
        )

    def threads(self, *, limit: int = 20, status: str | None = None) -> list[ThreadSummary]:
        """The most recent threads, newest first (see `athreads`)."""
        return self._portal.call(self._athreads(limit, status))

    async def athreads(self, *, limit: int = 20, status: str | None = None) -> list[ThreadSummary]:
        """The most recent threads, newest first, with their status and route.

        `status` keeps only threads in that state: running (started, neither finished nor paused: `triage
        recover` continues it), awaiting_approval, completed, escalated or failed.
        """
        return await self._portal.acall(self._athreads(limit, status))

    async def _athreads(self, limit: int, status: str | None) -> list[ThreadSummary]:
        engine = await self._get_engine()
        summaries: list[ThreadSummary] = []
        for thread_id in await self._thread_ids(engine, limit=limit if status is None else None):
            config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
            snapshot = await engine.graph_for(thread_id).aget_state(config)
            values = snapshot.values
            ticket = values.get("ticket") or {}
            summary = ThreadSummary(
                thread_id=thread_id,
                updated_at=datetime.fromisoformat(str(snapshot.created_at)),
                status=_status_of(snapshot),
                route=values.get("route"),
                customer_id=ticket.get("customer_id"),
                subject=ticket.get("subject", "")
                or (f"release {values['release'].get('version')}" if "release" in values else ""),
            )
            if status is None or summary.status == status:
                summaries.append(summary)
                if len(summaries) >= limit:
                    break
        return summaries

    @staticmethod
    async def _thread_ids(engine: _Engine, *, limit: int | None) -> list[str]:
        """Thread ids, newest first."""
        return await engine.services.journal.thread_ids(limit=limit)

    # -- retention -------------------------------------------------------------------------------------------

    def prune(
        self, *, older_than: timedelta | None = None, keep: int | None = None, dry_run: bool = False
    ) -> PruneReport:
        """Delete finished threads and compact the checkpoint store (see `aprune`)."""
        return self._portal.call(self._aprune(older_than, keep, dry_run))

    async def aprune(
        self, *, older_than: timedelta | None = None, keep: int | None = None, dry_run: bool = False
    ) -> PruneReport:
        """Delete finished threads older than `older_than` and beyond the newest `keep` per status, then compact.

        Never deletes a thread that awaits approval, has not finished, failed on a transient fault or holds an
        open request; the effects ledger and the audit trail are kept. `dry_run` only reports what would go.

        Raises:
            RetentionError: neither rule was given, or `keep` is negative.
        """
        return await self._portal.acall(self._aprune(older_than, keep, dry_run))

    async def _aprune(self, older_than: timedelta | None, keep: int | None, dry_run: bool) -> PruneReport:
        from triage import retention

        engine = await self._get_engine()
        records = []
        for thread_id in await self._thread_ids(engine, limit=None):
            snapshot = await engine.graph_for(thread_id).aget_state({"configurable": {"thread_id": thread_id}})
            pending = _pending(snapshot)
            records.append(
                retention.ThreadRecord(
                    thread_id=thread_id,
                    status="awaiting_approval" if pending else snapshot.values.get("status") or "running",
                    updated_at=datetime.fromisoformat(str(snapshot.created_at)),
                    finished=not snapshot.next and pending is None,
                    status_reason=str(snapshot.values.get("status_reason") or ""),
                )
            )
        held = await retention.open_requests(engine.services)
        plan = retention.plan_prune(records, now=datetime.now(UTC), older_than=older_than, keep=keep, held=held)
        before = await retention.store_bytes(engine.services)
        if not dry_run:
            await retention.delete_and_compact(engine.services, plan)
        return retention.PruneReport(
            dry_run=dry_run,
            deleted=[r.thread_id for r in plan.delete],
            kept=plan.kept,
            bytes_before=before,
            bytes_after=before if dry_run else await retention.store_bytes(engine.services),
        )

    # -- labels for training ----------------------------------------------------------------------------------

    def relabel(self, thread_id: str, *, route: str, intent: str | None = None, actor: str) -> dict[str, Any]:
        """Record a person's correction of a thread's route and intent (see `arelabel`)."""
        return self._portal.call(self._arelabel(thread_id, route, intent, actor))

    async def arelabel(self, thread_id: str, *, route: str, intent: str | None = None, actor: str) -> dict[str, Any]:
        """Record a person's correction of a thread's route and intent in its audit trail.

        `labels()` prefers it over the machine's decision. The thread itself is not re-run.

        Raises:
            InvalidLabelError: unknown route, or an intent that is not one of the route's.
            ThreadNotFoundError: no such thread.
        """
        return await self._portal.acall(self._arelabel(thread_id, route, intent, actor))

    async def _arelabel(self, thread_id: str, route: str, intent: str | None, actor: str) -> dict[str, Any]:
        from triage.labels import RELABEL_EVENT, check_label

        route, intent = check_label(route, intent)
        engine = await self._get_engine()
        snapshot = await engine.graph_for(thread_id).aget_state({"configurable": {"thread_id": thread_id}})
        if not snapshot.values:
            raise ThreadNotFoundError.named(thread_id)
        details = {"route": route, "intent": intent, "previous_route": snapshot.values.get("route")}
        await engine.services.journal.audit(
            thread_id, RELABEL_EVENT, actor=actor, details=details, policy_version=engine.services.policy.version
        )
        return {"thread_id": thread_id, **details}

    def labels(self) -> tuple[list[dict[str, Any]], int]:
        """The decided labels of past threads and how many threads had none (see `alabels`)."""
        return self._portal.call(self._alabels())

    async def alabels(self) -> tuple[list[dict[str, Any]], int]:
        """The decided labels of past threads, oldest first, a person's correction preferred (`triage.labels`).

        Returns:
            The labels (`text`, `route`, `intent`, `source`, `thread_id`) and how many threads were left out for
            want of a trustworthy label.
        """
        return await self._portal.acall(self._alabels())

    async def _alabels(self) -> tuple[list[dict[str, Any]], int]:
        from triage.labels import thread_label

        engine = await self._get_engine()
        threshold = engine.services.policy.support.routing.min_confidence
        labels: list[dict[str, Any]] = []
        skipped = 0
        for thread_id in reversed(await self._thread_ids(engine, limit=None)):
            snapshot = await engine.graph_for(thread_id).aget_state({"configurable": {"thread_id": thread_id}})
            trail = await engine.services.journal.trail(thread_id)
            label = thread_label(thread_id, dict(snapshot.values), trail, threshold)
            if label is None:
                skipped += 1
            else:
                labels.append(label)
        return labels, skipped

    def conversation_replied_to(
        self, in_reply_to: str | None = None, references: str | Sequence[str] | None = None
    ) -> str | None:
        """The conversation an email answers, from its In-Reply-To / References headers (see the async form)."""
        return self._portal.call(self._aconversation_replied_to(in_reply_to, references))

    async def aconversation_replied_to(
        self, in_reply_to: str | None = None, references: str | Sequence[str] | None = None
    ) -> str | None:
        """The conversation an email answers: the thread of the most recent of our replies its headers name.

        `in_reply_to` and `references` are the header values as received (`<msg_1f3a@support.example>` or bare
        ids). None when they name none of our replies: the email starts a new conversation.
        """
        return await self._portal.acall(self._aconversation_replied_to(in_reply_to, references))

    async def _aconversation_replied_to(
        self, in_reply_to: str | None, references: str | Sequence[str] | None
    ) -> str | None:
        from triage.policies.conversation import replied_message_ids

        engine = await self._get_engine()
        for message_id in replied_message_ids(in_reply_to, references):
            async with (
                engine.services.helpdesk.read() as conn,
                conn.execute("SELECT thread_id FROM outbox WHERE id = ?", (message_id,)) as cursor,
            ):
                row = await cursor.fetchone()
            if row is not None and row[0]:
                return str(row[0])
        return None

    def customer_memory(self, customer_id: str) -> dict[str, Any] | None:
        """What is remembered about a customer across conversations, or None (see `acustomer_memory`)."""
        return self._portal.call(self._acustomer_memory(customer_id))

    async def acustomer_memory(self, customer_id: str) -> dict[str, Any] | None:
        """What is remembered about a customer across conversations, or None when nothing is.

        The memory holds their open requests, recent outcomes, a summary and preferences; None for a new customer or
        one whose account was deleted.
        """
        return await self._portal.acall(self._acustomer_memory(customer_id))

    async def _acustomer_memory(self, customer_id: str) -> dict[str, Any] | None:
        from triage.stores.memory import read_memory

        engine = await self._get_engine()
        return await read_memory(engine.services.memory, customer_id)

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
        conversation_id = Ticket.parse(data).conversation_id
        if conversation_id is not None:
            snapshot = await engine.graph.aget_state({"configurable": {"thread_id": conversation_id}})
            if not _exists(snapshot):
                raise UnknownConversationError(
                    f"no conversation {conversation_id!r}: leave conversation_id out to start one"
                )
            known = (snapshot.values.get("customer") or {}).get("id")
            if isinstance(data, Mapping) and data.get("customer_id") is None and known is not None:
                data = {**data, "customer_id": known}
        parsed, _ = await check_ticket(data, engine.services.gateway, thread_id="intake")
        return parsed

    def warm_up(self) -> None:
        """Open the stores and load (or train) the classifier now, not on the first ticket."""
        self._portal.call(self._awarm_up())

    async def awarm_up(self) -> None:
        """`warm_up` from a running event loop (without blocking it)."""
        await self._portal.acall(self._awarm_up())

    async def _awarm_up(self) -> None:
        engine = await self._get_engine()
        await engine.services.models.warm_up()


def _finished_snapshot(graph: Any, record: RunRecord | None) -> StateSnapshot | None:
    """The state a run that just returned ended in, from the checkpoint it saved last, when that is certainly it.

    It is when the run saved a checkpoint, no interrupt, and was the thread's only run in the process, and neither
    the graph nor a subgraph stops before or after a node (a pause LangGraph saves no interrupt for): LangGraph's
    loop then returned because no task was left. The snapshot has no next task and no interrupt, and the values
    `aget_state` reads back: each state key in that checkpoint, and a key the run never wrote at its channel's
    empty value (a reducer's `[]`). Its metadata is the run's own (the store keeps the run's config metadata
    too). Otherwise None: read the state from the store.
    """
    if record is None or record.checkpoint is None or record.interrupted or record.shared:
        return None
    if _pauses_silently(graph):
        return None
    from langgraph.types import StateSnapshot

    saved = record.checkpoint["channel_values"]
    keys = graph.stream_channels_asis
    values: dict[str, Any] = {}
    for key in [keys] if isinstance(keys, str) else keys:
        if key in saved:
            values[key] = saved[key]
        elif (channel := graph.channels[key]).is_available():
            values[key] = copy.deepcopy(channel.get())  # the graph's own channel: never hand out its value
    return StateSnapshot(
        values=values,
        next=(),
        config=record.config or {},
        metadata=record.metadata,
        created_at=record.checkpoint["ts"],
        parent_config=record.parent_config,
        tasks=(),
        interrupts=(),
    )


_SILENT_PAUSES: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _pauses_silently(graph: Any) -> bool:
    """Whether the graph or any subgraph of it stops before or after a node (worked out once per graph)."""
    found = _SILENT_PAUSES.get(graph)
    if found is None:
        graphs = [graph, *(sub for _, sub in graph.get_subgraphs(recurse=True))]
        found = any(g.interrupt_before_nodes or g.interrupt_after_nodes for g in graphs)
        _SILENT_PAUSES[graph] = found
    return found


def _pending(snapshot: StateSnapshot) -> dict[str, Any] | None:
    """The approval request a thread is paused on, if any."""
    for pending in snapshot.interrupts:
        if isinstance(pending.value, dict) and "approval_id" in pending.value:
            return dict(pending.value)
    return None


THREAD_STATUSES = ("running", "awaiting_approval", "completed", "escalated", "failed")
"""What `triage threads --status` filters on; `running` is a run that neither finished nor paused."""


INPUT_WRITES_TASK = "00000000-0000-0000-0000-000000000000"
"""The task id under which LangGraph saves writes that no task made, a run's input among them (its private
`NULL_TASK_ID`; `tests/integration/test_later_turn_crashes.py` checks that the two agree)."""


async def _left_mid_step(engine: _Engine, config: RunnableConfig, snapshot: StateSnapshot) -> bool:
    """Whether a thread that shows a status stopped between two checkpoints, so its run has not ended.

    A process that dies after a step's writes are saved and before the next checkpoint leaves `next` empty (the
    step's tasks are done) while the rest of the graph has not run: a rolled-back change's status is set before its
    reply is sent. One that dies once a follow-up's input is saved, before `validate` starts the turn, leaves the
    last turn's status beside input that no step has read. Either way `recover` runs on from there.
    """
    if snapshot.tasks:
        return True
    saved = await engine.services.saver.aget_tuple(config)
    return saved is not None and any(write[0] == INPUT_WRITES_TASK for write in saved.pending_writes or [])


async def _input_saved_with(engine: _Engine, config: RunnableConfig, message_id: str) -> bool:
    """Whether a follow-up with `message_id` had its input saved and its turn then stopped before `validate` read it.

    Its ticket is then the input of the thread's last checkpoint (LangGraph's `__start__` channel; langgraph 1.2
    keeps no input as pending writes, which are checked in case a later version does), not yet in the thread's
    values: `recover` runs it (review found it refused as busy at each try, then given up by the intake as "not
    run").
    """
    from langgraph.constants import START

    saved = await engine.services.saver.aget_tuple(config)
    if saved is None:
        return False
    inputs = [saved.checkpoint["channel_values"].get(START)]
    inputs += [{channel: value} for task, channel, value in saved.pending_writes or [] if task == INPUT_WRITES_TASK]
    return any(_is_input_of(given, message_id) for given in inputs)


def _is_input_of(given: Any, message_id: str) -> bool:
    """Whether a run's saved input is a ticket with the message id `message_id`."""
    return (
        isinstance(given, dict)
        and isinstance(given.get("ticket"), dict)
        and given["ticket"].get("message_id") == message_id
    )


async def _taken_in_before_kept_turns(
    engine: _Engine, conversation_id: str, values: Mapping[str, Any], message_id: str
) -> bool:
    """Whether a turn older than the conversation's kept records (`MAX_TURNS`) was the message `message_id`.

    Every turn's input is saved in a checkpoint of its own (metadata `source: input`) until the thread is pruned,
    so the promise that a message is taken in once holds however long ago it came. Only a conversation whose
    records are full can have dropped one: any other costs nothing here. (A message attached while a decision was
    pending has its audit line, which is never dropped.)
    """
    from langgraph.constants import START

    from triage.policies.conversation import MAX_TURNS

    if len(values.get("conversation") or []) < MAX_TURNS:
        return False
    config: RunnableConfig = {"configurable": {"thread_id": conversation_id, "checkpoint_ns": ""}}
    async for saved in engine.services.saver.alist(config, filter={"source": "input"}):
        if _is_input_of(saved.checkpoint["channel_values"].get(START), message_id):
            return True
    return False


def _recorded(values: Mapping[str, Any]) -> bool:
    """Whether the thread's current turn has its record in the conversation, so a failure now adds none.

    It has when the turn ended: a follow-up that fails before `validate` has not begun a turn of its own.
    """
    number = values.get("turn", 1)
    return any(turn["turn"] == number for turn in values.get("conversation", []))


def _failed_turns_requests(values: Mapping[str, Any]) -> tuple[set[str], set[str] | None]:
    """Which open refund requests of the thread a failed turn may withdraw: (those to keep, those only, or None).

    Those an earlier turn recorded are kept (one left open for a person, say). While the conversation keeps every
    turn's record, any other open request is the failed turn's, even one its step filed before raising. Once
    early records have been dropped (`MAX_TURNS`), an unrecorded request may be an early turn's: only those the
    failed turn's own actions hold are withdrawn then.
    """
    conversation = values.get("conversation", [])
    keep = {request for turn in conversation for request in turn.get("requests", [])}
    if not conversation or conversation[0]["turn"] == 1:
        return keep, None
    own = [] if _recorded(values) else values.get("actions") or []
    return keep, {action["receipt_id"] for action in own if action.get("kind") == "refund_request"}


def _turn_of(snapshot: StateSnapshot) -> int:
    """The conversation turn a thread is on (or ended last)."""
    return int(snapshot.values.get("turn", 1))


def _saved_nothing(record: RunRecord | None) -> bool:
    """Whether a recorded run saved no checkpoint, not even its input's.

    A new turn's input goes into its input checkpoint (triage has no `DeltaChannel`, whose input LangGraph would
    save as writes on the thread's last checkpoint instead); writes a task saved after that checkpoint failed name
    a checkpoint that does not exist, and are never read.
    """
    return record is not None and not record.shared and record.config is None


def _starts_a_turn(graph_input: Any) -> bool:
    """Whether a run's input is a ticket: a new thread or a conversation's next turn (not a resume or a recover)."""
    return isinstance(graph_input, Mapping) and "ticket" in graph_input


def _exists(snapshot: StateSnapshot) -> bool:
    """Whether the thread has a checkpoint (its first one holds only the input: no values yet, but a way on)."""
    return snapshot.created_at is not None


def _status_of(snapshot: StateSnapshot) -> str:
    """A thread's status: its terminal status, awaiting_approval, or running (started, not finished)."""
    if _pending(snapshot):
        return "awaiting_approval"
    status = snapshot.values.get("status")
    return str(status) if status is not None and not snapshot.next else "running"


def state_after(decision: Decision, request: Mapping[str, Any]) -> ApprovalState:
    """The approval's state once `decision` is taken: final, or `deciding` when more approvals are needed."""
    if decision.decision == "approve":
        received = len(request["approvals_received"]) + 1
        return "approved" if received >= int(request["approvals_required"]) else "deciding"
    return {"reject": "rejected", "edit": "edited", "timeout": "expired"}[decision.decision]  # type: ignore[return-value]


def failure_class(exc: BaseException) -> ToolErrorKind:
    """Whether a run's failure may pass on retry (transient) or not (permanent), by the error's class."""
    import sqlite3

    from langgraph.errors import NodeTimeoutError

    from triage.helpdesk.store import is_transient

    if isinstance(exc, ToolError | CheckpointStoreError):
        return exc.kind
    if isinstance(exc, NodeTimeoutError | TimeoutError) or (
        isinstance(exc, sqlite3.OperationalError) and is_transient(exc)
    ):
        return "transient"
    return "permanent"


def _unfinished(thread_id: str) -> str:
    """Why a thread that stopped between two steps is not terminal, and what to do."""
    return (
        f"the run did not finish: it is still running, or its process stopped; once no process runs it, `triage "
        f"recover {thread_id}` continues it"
    )


def _result(
    thread_id: str,
    snapshot: StateSnapshot,
    *,
    duration_ms: float | None = None,
    retries: Mapping[str, int] | None = None,
) -> RunResult:
    if thread_id.startswith(RELEASE_THREAD_PREFIX):
        return _release_result(thread_id, snapshot, duration_ms=duration_ms, retries=retries)
    values: Mapping[str, Any] = snapshot.values
    classification = values.get("classification") or {}
    reply = values.get("reply")
    pending = _pending(snapshot)
    status = "awaiting_approval" if pending else values.get("status") or "failed"
    reason = values.get("status_reason") if values.get("status") else _unfinished(thread_id)
    if not pending and snapshot.next:
        status, reason = "failed", _unfinished(thread_id)
    if pending:
        reason = pending["description"]
    turn = _turn_of(snapshot)
    return RunResult(
        thread_id=thread_id,
        conversation_id=thread_id,
        turn=turn,
        conversation=[dict(t) for t in values.get("conversation", []) if t["turn"] < turn],
        asks=[dict(a) for a in values.get("asks") or []],
        status=status,
        status_reason=reason,
        route=values.get("route"),
        route_reason=values.get("route_reason"),
        intent=classification.get("intent"),
        urgency=classification.get("urgency"),
        sentiment=classification.get("sentiment"),
        confidence=classification.get("confidence"),
        decided_by=classification.get("decided_by"),
        model_calls=[
            *classification.get("model_calls", []),
            *((values.get("findings") or {}).get("agent") or {}).get("model_calls", []),
            *((reply or {}).get("model_calls", [])),
        ],
        signals=classification.get("signals", []),
        redactions=classification.get("redactions", {}),
        policy_version=values.get("policy_version"),
        model_version=classification.get("model_version"),
        language=classification.get("language"),
        evidence=classification.get("evidence", []),
        violations=[dict(v) for v in values.get("violations", [])],
        budget_exceeded=values.get("budget_exceeded"),
        usage=values.get("usage") or {},
        reply=Reply(
            subject=reply["subject"], body=reply["body"], template=reply["template"], verdict=reply.get("verdict")
        )
        if reply and not pending
        else None,
        actions=[Action(**action) for action in values.get("actions", [])],
        proposed_actions=[dict(p) for p in values.get("proposed_actions", [])],
        findings=values.get("findings", {}),
        pending_approval=pending,
        rejection=values.get("rejection"),
        saga=values.get("saga"),
        failure_class=values.get("failure_class") if status == "failed" else None,
        retries=dict(retries or {}),
        duration_ms=round(duration_ms, 1) if duration_ms is not None else None,
    )


def _release_result(
    thread_id: str,
    snapshot: StateSnapshot,
    *,
    duration_ms: float | None = None,
    retries: Mapping[str, int] | None = None,
) -> ReleaseResult:
    values: Mapping[str, Any] = snapshot.values
    release = values.get("release") or {}
    pending = _pending(snapshot)
    status = "awaiting_approval" if pending else values.get("status", "failed")
    reason = values.get("status_reason", None if "status" in values else _unfinished(thread_id))
    if not pending and snapshot.next:
        status, reason = "failed", _unfinished(thread_id)
    if pending:
        reason = pending["description"]
    summary = values.get("summary")
    return ReleaseResult(
        thread_id=thread_id,
        status=status,
        status_reason=reason,
        version=str(release.get("version", "")),
        fixes=list(release.get("fixes", [])),
        unknown_keys=values.get("unknown_keys", []),
        tickets=[dict(t) for t in values.get("tickets", [])],
        closed=values.get("closed", []),
        already_closed=[t["id"] for t in values.get("tickets", []) if t["state"] == "solved_before"],
        notified=values.get("notified", []),
        summary=dict(summary) if summary else None,
        model_calls=list((summary or {}).get("model_calls", [])),
        policy_version=values.get("policy_version"),
        usage=values.get("usage") or {},
        actions=[Action(**action) for action in values.get("actions", [])],
        pending_approval=pending,
        rejection=values.get("rejection"),
        failure_class=values.get("failure_class") if status == "failed" else None,
        retries=dict(retries or {}),
        duration_ms=round(duration_ms, 1) if duration_ms is not None else None,
    )
