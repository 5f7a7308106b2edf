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
from triage.policies.bundle import Permissions
from triage.state import SpecialistOutput, SpecialistState

TRANSIENT_RETRY = RetryPolicy(retry_on=TransientToolError, max_attempts=3, initial_interval=0.2)
"""Retry a node whose tool hit a busy database; other errors fail the step at once."""


def _chain(name: str, steps: Sequence[tuple[str, Any]]) -> StateGraph[Any, Context, Any, Any]:
    graph: StateGraph[Any, Context, Any, Any] = StateGraph(
        SpecialistState, context_schema=Context, output_schema=SpecialistOutput
    )
    previous = START
    for step, node in steps:
        graph.add_node(step, node, retry_policy=TRANSIENT_RETRY)
        graph.add_edge(previous, step)
        previous = step
    graph.add_edge(previous, END)
    return graph


SPECIALISTS: dict[str, tuple[Any, Sequence[tuple[str, Any]]]] = {
    "billing": (billing, (("lookup", billing.lookup), ("act", billing.act))),
    "technical": (technical, (("search", technical.search), ("act", technical.act))),
    "account": (account, (("lookup", account.lookup), ("act", account.act))),
    "general": (general, (("answer", general.answer),)),
    "escalation": (escalation, (("hand_off", escalation.hand_off),)),
}


def build_specialist(name: str, permissions: Permissions) -> CompiledStateGraph[Any, Context, Any, Any]:
    """Compile one specialist after checking that its tools are within its grant."""
    module, steps = SPECIALISTS[name]
    check_grants(name, module.TOOLS, permissions)
    return _chain(name, steps).compile(name=name)
