"""The account change graph: a plan change or an account closure carried out as a saga.

prepare -> run_steps -> hand_off. The support graph adds it as a node after `execute` for an approved change;
LangGraph Studio shows it on its own (its input is the support graph's proposed action and approvals).
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from triage.context import Context
from triage.gateway import check_grants
from triage.graphs.specialists import add_io_node, io_timeout
from triage.nodes import saga
from triage.policies import PolicyBundle, load_policy_bundle
from triage.state import AccountChangeOutput, AccountChangeState


def build_account_change_graph(
    *, policy: PolicyBundle | None = None
) -> StateGraph[AccountChangeState, Context, AccountChangeState, AccountChangeOutput]:
    """Wire the saga; the caller compiles it (the support graph compiles it as a subgraph).

    Raises:
        GrantError: the saga's tools are outside the scopes `policy` grants `account_change`.
    """
    policy = policy or load_policy_bundle()
    check_grants(saga.NODE, saga.TOOLS, policy.permissions)
    graph: StateGraph[AccountChangeState, Context, AccountChangeState, AccountChangeOutput] = StateGraph(
        AccountChangeState, context_schema=Context, output_schema=AccountChangeOutput
    )
    timeout = io_timeout(policy)
    graph.add_node("prepare", saga.prepare)
    # No node retry on run_steps: it retries each step by failure class itself, and a re-run repeats nothing.
    graph.add_node("run_steps", saga.run_steps)
    add_io_node(graph, "hand_off", saga.hand_off, timeout)
    graph.add_edge(START, "prepare")
    graph.add_edge("prepare", "run_steps")
    graph.add_edge("run_steps", "hand_off")
    graph.add_edge("hand_off", END)
    return graph
