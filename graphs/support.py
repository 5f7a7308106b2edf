"""The coordinator graph.

validate -> classify -> route -> specialist -> approve -> execute [-> account_change] -> compose -> send_reply
-> finish; a ticket that asks several things goes classify -> ask (one task per ask, in parallel) -> merge -> approve
instead.
"""

from __future__ import annotations

from typing import Any, cast

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from triage.context import Context
from triage.gateway import check_grants
from triage.graphs.account_change import build_account_change_graph
from triage.graphs.specialists import SPECIALISTS, add_io_node, build_specialist, io_timeout
from triage.nodes import execute as execute_node
from triage.nodes import saga as saga_node
from triage.nodes import send_reply as send_reply_node
from triage.nodes import validate as validate_node
from triage.nodes.approve import approve
from triage.nodes.ask import make_ask_node, merge_asks
from triage.nodes.classify import classify
from triage.nodes.common import command_after
from triage.nodes.compose import compose
from triage.nodes.execute import execute
from triage.nodes.finish import finish
from triage.nodes.route import after_execute, after_specialist, fall_back, route
from triage.nodes.send_reply import send_reply
from triage.nodes.validate import validate
from triage.policies import PolicyBundle, load_policy_bundle
from triage.state import InputState, State


def build_support_graph(*, policy: PolicyBundle | None = None) -> StateGraph[State, Context, InputState, State]:
    """Wire the coordinator and its specialists; the caller compiles it with its own checkpointer.

    Raises:
        GrantError: a node uses a tool outside the scopes `policy` grants it.
    """
    policy = policy or load_policy_bundle()
    check_grants("validate", validate_node.TOOLS, policy.permissions)
    check_grants("send_reply", send_reply_node.TOOLS, policy.permissions)
    check_grants("execute", execute_node.TOOLS, policy.permissions)

    graph: StateGraph[State, Context, InputState, State] = StateGraph(
        State, context_schema=Context, input_schema=InputState
    )
    timeout = io_timeout(policy)
    add_io_node(graph, "validate", validate, timeout)
    graph.add_node("classify", classify)
    graph.add_node("route", route)
    specialists = {name: build_specialist(name, policy) for name in SPECIALISTS}
    for name, specialist in specialists.items():
        if name == "escalation":
            graph.add_node(name, specialist)
        else:
            graph.add_node(name, then_approve_or_fall_back(specialist), destinations=("approve", "fall_back"))
    graph.add_node("ask", cast(Any, make_ask_node(specialists)))  # fed by `Send` payloads, not by the state
    graph.add_node("merge", merge_asks)
    graph.add_node("fall_back", fall_back)
    graph.add_node("approve", approve)
    add_io_node(graph, "execute", execute, timeout, then=(after_execute, ("account_change", "compose")))
    graph.add_node("account_change", build_account_change_graph(policy=policy).compile(name="account_change"))
    graph.add_node("compose", compose)
    add_io_node(graph, "send_reply", send_reply, timeout)
    graph.add_node("finish", finish)

    graph.add_edge(START, "validate")
    graph.add_edge("ask", "merge")
    graph.add_edge("merge", "approve")
    graph.add_edge("escalation", "compose")
    graph.add_edge("fall_back", "escalation")
    graph.add_edge("account_change", "compose")
    graph.add_edge("compose", "send_reply")
    graph.add_edge("send_reply", "finish")
    graph.add_edge("finish", END)
    return graph


def then_approve_or_fall_back(specialist: CompiledStateGraph[Any, Context, Any, Any]) -> Any:
    """The specialist subgraph as a node that goes on to approvals, or falls back when it was refused a tool.

    What a conditional edge with `after_specialist` would decide, without LangGraph's branch step over the whole
    coordinator state (`nodes.common.command_after`). The subgraph runs as it does as a node of its own: in this node's
    task, with its checkpoints under the node's namespace, drawn inside the node.
    """

    async def run(state: State) -> Command[Any]:
        return await command_after(after_specialist, state, await specialist.ainvoke(state))

    run.__name__ = specialist.get_name()
    return run


def node_tools() -> dict[str, tuple[str, ...]]:
    """Every node of the coordinator (specialists as one node each) and the tools it declares."""
    declared: dict[str, tuple[str, ...]] = dict.fromkeys(
        ("classify", "route", "fall_back", "approve", "compose", "finish", "ask", "merge"), ()
    )
    declared.update(
        validate=validate_node.TOOLS,
        execute=execute_node.TOOLS,
        send_reply=send_reply_node.TOOLS,
        account_change=saga_node.TOOLS,
    )
    declared.update({name: tuple(module.TOOLS) for name, (module, _) in SPECIALISTS.items()})
    return declared
