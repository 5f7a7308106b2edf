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
from triage.nodes.common import attempted, stop_on_violation
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
) -> None:
    """Add a node that does I/O: limited, retried and counted.

    Each attempt is limited to `seconds`, a transient tool error starts it again (`TRANSIENT_RETRY`), and every
    attempt is counted in the run's meter (`attempted`).
    """
    graph.add_node(name, attempted(node, seconds=seconds, specialist=specialist), retry_policy=TRANSIENT_RETRY)


def _chain(name: str, steps: Sequence[tuple[str, Any]], timeout: float) -> StateGraph[Any, Context, Any, Any]:
    graph: StateGraph[Any, Context, Any, Any] = StateGraph(
        SpecialistState, context_schema=Context, output_schema=SpecialistOutput
    )
    names = [step for step, _ in steps]
    for step, node in steps:
        add_io_node(graph, step, stop_on_violation(node, route=name), timeout, specialist=name)
    graph.add_edge(START, names[0])
    for step, following in zip(names, [*names[1:], END], strict=True):
        graph.add_conditional_edges(step, continue_unless_refused(following), [following, END])
    return graph


def _technical(timeout: float, agent_timeout: float) -> StateGraph[Any, Context, Any, Any]:
    """Search -> (agent, once per model turn, while its loop runs) -> act; a refused tool call ends the subgraph."""
    graph: StateGraph[Any, Context, Any, Any] = StateGraph(
        SpecialistState, context_schema=Context, output_schema=SpecialistOutput
    )
    for step, node, limit in (
        ("search", technical.search, timeout),
        ("agent", technical.agent, agent_timeout),
        ("act", technical.act, timeout),
    ):
        add_io_node(graph, step, stop_on_violation(node, route="technical"), limit, specialist="technical")
    graph.add_edge(START, "search")

    async def after_search(state: SpecialistState) -> str:
        return END if state.get("outcome") in FALL_BACK_OUTCOMES else await technical.after_search(state)

    graph.add_conditional_edges("search", after_search, ["agent", "act", END])
    graph.add_conditional_edges("agent", technical.after_agent, ["agent", "act", END])
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
