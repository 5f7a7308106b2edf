"""Small helpers every node uses: calling a tool through the gateway and recording the effect it had."""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol

from langgraph.config import get_config
from langgraph.errors import NodeTimeoutError
from langgraph.runtime import Runtime
from langgraph.types import Command

from triage.context import Context, meter_of, services_of, thread_id_of
from triage.errors import ScopeDeniedError
from triage.metering import attempt_key
from triage.policies.routing import other_customers, write_hold
from triage.state import ActionRecord, Draft, ProposedAction, Violation


class SpecialistNode(Protocol):
    """A specialist step: `async def step(state, runtime) -> update`."""

    def __call__(self, state: Any, runtime: Runtime[Context]) -> Awaitable[Any]:
        """Run the step."""
        ...


class WriteHeldError(Exception):
    """A specialist step tried to write while writes are held for this run (see `policies.routing.write_hold`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_write_hold: ContextVar[str | None] = ContextVar("triage_write_hold", default=None)
"""Set by `stop_on_violation` around a specialist step: why that step may not write, if it may not."""


async def call_tool(
    runtime: Runtime[Context], node: str, tool: str, *, key_from: Mapping[str, Any] | None = None, **args: Any
) -> Any:
    """Call a tool as `node` through the gateway, which checks the node's grant first.

    The effect is keyed by its arguments (the same node asking for the same effect in the same thread gets it
    once), or by `key_from` when some arguments may differ if the step runs again after a crash (a summary a model
    writes, the customer's memory as it is by then): `key_from` then holds what names the effect.

    Raises:
        WriteHeldError: the tool writes and the current specialist step may not (nothing was called).
    """
    from triage.tools import ALL_TOOLS, tool_scope
    from triage.tools.base import idempotency_key

    held = _write_hold.get()
    if held is not None and not tool_scope(ALL_TOOLS[tool]).endswith(":read"):
        raise WriteHeldError(held)
    services = await services_of(runtime)
    thread_id = thread_id_of(runtime)
    key = idempotency_key(thread_id, node, tool, key_from) if key_from is not None else None
    return await services.gateway.call(node, tool, args, thread_id=thread_id, idempotency_key=key)


def in_this_turn(state: Mapping[str, Any], identity: Mapping[str, Any]) -> dict[str, Any]:
    """What names an effect of this turn of the conversation (for `call_tool`'s `key_from`).

    `identity` and the step the turn began at, so a later turn that asks for the same again gets it again. A turn
    is known by its step, not its number (numbers repeat: a conversation keeps its last turns only). A first turn
    (step 0) adds nothing, so its keys stay what they were before turns were told apart.
    """
    began = state.get("turn_step", 0)
    return {**identity, "turn_step": began} if began else dict(identity)


def action_record(
    kind: str,
    tool: str,
    node: str,
    receipt: dict[str, Any],
    *,
    amount_cents: int | None = None,
    **details: Any,
) -> ActionRecord:
    """Describe an effect a tool performed, keyed by its receipt id."""
    return ActionRecord(
        kind=kind,
        tool=tool,
        receipt_id=str(receipt["id"]),
        node=node,
        details={"created": bool(receipt.get("created", True)), **details},
        amount_cents=amount_cents,
    )


def mask_email(email: str) -> str:
    """j***@example.com: enough for the customer to recognise, not enough to harvest."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "the address on file"


def numbered(steps: list[str]) -> str:
    """Steps as a numbered list."""
    return "\n".join(f"{number}. {step}" for number, step in enumerate(steps, start=1))


_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")


def find_emails(text: str) -> list[str]:
    """Email addresses mentioned in a text, in order, lower-cased and de-duplicated."""
    found: list[str] = []
    for match in _EMAIL.findall(text):
        email = match.lower().rstrip(".")
        if email not in found:
            found.append(email)
    return found


RESPONSE_TIMES = {
    "urgent": "within 1 hour",
    "high": "within 4 hours",
    "normal": "within one business day",
    "low": "within two business days",
}


def specialist_update(
    outcome: str,
    draft: Draft,
    actions: list[ActionRecord],
    *,
    findings: dict[str, Any] | None = None,
    proposed: list[ProposedAction] | None = None,
) -> dict[str, Any]:
    """The state update a specialist's last node returns: its verdict, the reply draft and its effects."""
    update: dict[str, Any] = {
        "outcome": outcome,
        "draft": draft,
        "actions": actions,
        "proposed_actions": proposed or [],
    }
    if findings is not None:
        update["findings"] = findings
    return update


async def remembered(runtime: Runtime[Context], customer_id: str | None) -> str | None:
    """The summary of what is remembered about a customer across conversations (for a person's queue ticket)."""
    from triage.stores.memory import read_memory

    memory = await read_memory(runtime.store, customer_id)
    return str(memory["summary"]) if memory else None


def article_facts(article: Mapping[str, Any]) -> dict[str, Any]:
    """Template facts for answering with a knowledge-base article."""
    return {
        "article_title": article["title"],
        "article_summary": article["summary"],
        "article_steps": numbered(article["steps"]),
    }


def ticket_text(state: Any) -> str:
    """A ticket's subject and body as one text."""
    ticket = state["ticket"]
    return f"{ticket['subject']}\n{ticket['body']}".strip()


def stop_on_violation(node: SpecialistNode, *, route: str) -> SpecialistNode:
    """Turn a refused tool call into a `policy_violation` outcome, so the run falls back instead of failing.

    The gateway has already refused the call before any I/O and recorded it; this only changes the course. Likewise
    a write held back for low confidence (`write_hold`) becomes a `held_for_person` outcome: the run falls back to
    a person, with the reason in `findings["held"]`, and nothing was written.
    """

    @functools.wraps(node)
    async def guarded(state: Any, runtime: Runtime[Context]) -> Any:
        services = await services_of(runtime)
        classification = state["classification"]
        ticket = state["ticket"]
        hold = write_hold(
            route,
            classification["confidence"],
            classification["intent"],
            services.policy.support,
            signals=frozenset(classification.get("signals", ())),
            others=other_customers(f"{ticket['subject']}\n{ticket['body']}", ticket.get("customer_id")),
        )
        token = _write_hold.set(hold)
        try:
            return await node(state, runtime)
        except ScopeDeniedError as refused:
            violation = Violation(node=refused.caller, tool=refused.tool, scope=refused.scope)
            return {"outcome": "policy_violation", "violations": [*state.get("violations", []), violation]}
        except WriteHeldError as held:
            return {"outcome": "held_for_person", "findings": {**state.get("findings", {}), "held": held.reason}}
        finally:
            _write_hold.reset(token)

    return guarded


Router = Callable[[Any], Awaitable[str]]
"""What a conditional edge calls: the state (with the node's writes) in, the next node's name out."""


async def command_after(decide: Router, state: Mapping[str, Any], update: Mapping[str, Any] | None) -> Command[Any]:
    """A node's `update`, going on to the node `decide` names: what a conditional edge with `decide` would choose.

    Without LangGraph's branch step, which copies every channel to show the router the state with the node's
    writes (`local_read`): about 0.1-0.2 ms of CPU a hop. `decide` may read only keys without a reducer: it is shown
    the state overlaid with the update, which is what such a key becomes. The graph names the possible successors
    (`destinations`), so Studio still draws the edges.
    """
    return Command(update=update, goto=await decide({**state, **(update or {})}))


def routed(node: SpecialistNode, decide: Router) -> SpecialistNode:
    """`node`, naming the node that comes next itself (`command_after`)."""

    @functools.wraps(node)
    async def step(state: Any, runtime: Runtime[Context]) -> Command[Any]:
        return await command_after(decide, state, await node(state, runtime))

    return step


def attempted(node: SpecialistNode, *, seconds: float, specialist: str | None = None) -> SpecialistNode:
    """`node` as one attempt of a node that does I/O: limited to `seconds`, and counted in the run's meter.

    An attempt over its limit is cancelled and raises LangGraph's `NodeTimeoutError` (transient: `triage recover`
    runs it again). This costs a timer on the loop; LangGraph's `TimeoutPolicy` ran each attempt as a task of its
    own beside a watchdog task: 0.07-0.08 ms more per attempt.

    A retry policy may start the node more than once: `RunResult.retries` reports the attempts beyond the first.
    `specialist` names whose step `node` is (see `metering.attempt_key`). A run without a meter (one that `langgraph
    dev` runs) counts nothing.

    Raises:
        TypeError: `node` is not an async function (only an awaited node can be limited in time).
    """
    if not inspect.iscoroutinefunction(node):
        raise TypeError(f"{getattr(node, '__name__', node)!r} does I/O and must be an async function")

    @functools.wraps(node)
    async def attempt(state: Any, runtime: Runtime[Context]) -> Any:
        metadata = get_config().get("metadata") or {}
        name = str(metadata.get("langgraph_node", ""))
        meter = meter_of(runtime)
        if meter is not None:
            namespace = str(metadata.get("langgraph_checkpoint_ns", ""))
            meter.attempt(attempt_key(namespace, name, specialist=specialist), namespace)
        started = time.monotonic()
        limit = asyncio.timeout(seconds)
        try:
            async with limit:
                return await node(state, runtime)
        except TimeoutError as exc:
            if not limit.expired():
                raise  # the node's own TimeoutError, not its time limit
            raise NodeTimeoutError(name, time.monotonic() - started, kind="run", run_timeout=seconds) from exc

    return attempt
