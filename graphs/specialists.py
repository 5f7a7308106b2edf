"""The five specialist subgraphs. Each is compiled and added to the coordinator as a single node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import RetryPolicy

from triage.context import Context
from triage.errors import TransientToolError
from triage.gateway import check_grants
from triage.nodes import account, billing, escalation, general, technical
from triage.nodes.common import Router, attempted, routed, stop_on_violation
from triage.nodes.route import FALL_BACK_OUTCOMES, continue_unless_refused
from triage.policies.bundle import PolicyBundle
from triage.state import SpecialistOutput, SpecialistState

TRANSIENT_RETRY = RetryPolicy(retry_on=TransientToolError, max_attempts=3, initial_interval=0.2)
"""Retry a node whose tool hit a busy database; other errors fail the step at once."""


def add_io_node(
    graph: StateGraph[Any, Any, Any, Any],
    name: str,
    node: Any,
    seconds: float,
    *,
    specialist: str | None = None,
    then: tuple[Router, Sequence[str]] | None = None,
) -> None:
    """Add a node that does I/O: limited, retried and counted.

    Each attempt is limited to `seconds`, a transient tool error starts it again (`TRANSIENT_RETRY`), and every
    attempt is counted in the run's meter (`attempted`). `then` is a router and the nodes it may name: the node
    goes on to the one it names (`routed`), as after a conditional edge.
    """
    if then is not None:
        node = routed(node, then[0])
    graph.add_node(
        name,
        attempted(node, seconds=seconds, specialist=specialist),
        retry_policy=TRANSIENT_RETRY,
        destinations=tuple(then[1]) if then is not None else None,
    )


def _chain(name: str, steps: Sequence[tuple[str, Any]], timeout: float) -> StateGraph[Any, Context, Any, Any]:
    graph: StateGraph[Any, Context, Any, Any] = StateGraph(
        SpecialistState, context_schema=Context, output_schema=SpecialistOutput
    )
    names = [step for step, _ in steps]
    for (step, node), following in zip(steps, [*names[1:], END], strict=True):
        guarded = stop_on_violation(node, route=name)
        if following == END:
            add_io_node(graph, step, guarded, timeout, specialist=name)
            graph.add_edge(step, END)
        else:
            then = (continue_unless_refused(following), (following, END))
            add_io_node(graph, step, guarded, timeout, specialist=name, then=then)
    graph.add_edge(START, names[0])
    return graph


def _technical(timeout: float, agent_timeout: float) -> StateGraph[Any, Context, Any, Any]:
    """Search -> (agent, once per model turn, while its loop runs) -> act; a refused tool call ends the subgraph."""
    graph: StateGraph[Any, Context, Any, Any] = StateGraph(
        SpecialistState, context_schema=Context, output_schema=SpecialistOutput
    )

    async def after_search(state: SpecialistState) -> str:
        return END if state.get("outcome") in FALL_BACK_OUTCOMES else await technical.after_search(state)

    for step, node, limit, then in (
        ("search", technical.search, timeout, (after_search, ("agent", "act", END))),
        ("agent", technical.agent, agent_timeout, (technical.after_agent, ("agent", "act", END))),
        ("act", technical.act, timeout, None),
    ):
        guarded = stop_on_violation(node, route="technical")
        add_io_node(graph, step, guarded, limit, specialist="technical", then=then)
    graph.add_edge(START, "search")
    graph.add_edge("act", END)
    return graph


SPECIALISTS: dict[str, tuple[Any, Sequence[tuple[str, Any]]]] = {
    "billing": (billing, (("lookup", billing.lookup), ("act", billing.act))),
    # The technical specialist's optional agent loop between its steps is wired in `_technical`.
    "technical": (technical, (("search", technical.search), ("act", technical.act))),
    "account": (account, (("lookup", account.lookup), ("act", account.act))),
    "general": (general, (("answer", general.answer),)),
    "escalation": (escalation, (("hand_off", escalation.hand_off),)),
}


def build_specialist(name: str, policy: PolicyBundle) -> CompiledStateGraph[Any, Context, Any, Any]:
    """Compile one specialist after checking that its tools are within its grant."""
    module, steps = SPECIALISTS[name]
    check_grants(name, module.TOOLS, policy.permissions)
    if name == "technical":
        return _technical(io_timeout(policy), policy.support.agent.turn_seconds).compile(name=name)
    return _chain(name, steps, io_timeout(policy)).compile(name=name)


def io_timeout(policy: PolicyBundle) -> float:
    """The per-attempt time limit of a node that does I/O, in seconds."""
    return policy.support.timeouts.io_node_seconds
