"""The release follow-up graph.

find_tickets -> find_related -> summarise -> approve_mass -> close_tickets -> notify -> report; a release that fixes
nothing left to do goes from find_tickets straight to report, and a rejected or expired mass notification from
approve_mass.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph

from triage.context import Context
from triage.gateway import check_grants
from triage.graphs.specialists import add_io_node, io_timeout
from triage.nodes.release import close_tickets as close_node
from triage.nodes.release import find_related as related_node
from triage.nodes.release import find_tickets as find_node
from triage.nodes.release import notify as notify_node
from triage.nodes.release.approve import approve_mass
from triage.nodes.release.close_tickets import close_tickets
from triage.nodes.release.find_related import find_related
from triage.nodes.release.find_tickets import find_tickets, has_work
from triage.nodes.release.notify import notify
from triage.nodes.release.report import report
from triage.nodes.release.summarise import summarise
from triage.policies import PolicyBundle, load_policy_bundle
from triage.state import ReleaseInput, ReleaseState


def build_release_graph(
    *, policy: PolicyBundle | None = None
) -> StateGraph[ReleaseState, Context, ReleaseInput, ReleaseState]:
    """Wire the release follow-up; the caller compiles it with its own checkpointer.

    Raises:
        GrantError: a node uses a tool outside the scopes `policy` grants it.
    """
    policy = policy or load_policy_bundle()
    for name, tools in node_tools().items():
        check_grants(name, tools, policy.permissions)
    graph: StateGraph[ReleaseState, Context, ReleaseInput, ReleaseState] = StateGraph(
        ReleaseState, context_schema=Context, input_schema=ReleaseInput
    )
    timeout = io_timeout(policy)
    add_io_node(graph, "find_tickets", find_tickets, timeout)
    add_io_node(graph, "find_related", find_related, timeout)
    graph.add_node("summarise", summarise)
    graph.add_node("approve_mass", approve_mass)
    add_io_node(graph, "close_tickets", close_tickets, timeout)
    add_io_node(graph, "notify", notify, timeout)
    graph.add_node("report", report)
    graph.add_edge(START, "find_tickets")
    graph.add_conditional_edges("find_tickets", _after_find, ["find_related", "report"])
    graph.add_edge("find_related", "summarise")
    graph.add_edge("summarise", "approve_mass")
    graph.add_edge("close_tickets", "notify")
    graph.add_edge("notify", "report")
    graph.add_edge("report", END)
    return graph


async def _after_find(state: ReleaseState) -> Literal["find_related", "report"]:
    return "find_related" if has_work(state) else "report"


def node_tools() -> dict[str, tuple[str, ...]]:
    """Every node of the release follow-up and the tools it declares."""
    declared: dict[str, tuple[str, ...]] = dict.fromkeys(("summarise", "approve_mass", "report"), ())
    declared.update(
        find_tickets=find_node.TOOLS,
        find_related=related_node.TOOLS,
        close_tickets=close_node.TOOLS,
        notify=notify_node.TOOLS,
    )
    return declared
