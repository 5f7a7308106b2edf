"""A node that does I/O (`graphs.specialists.add_io_node`): each attempt limited in time, retried on a transient
tool error, and counted in the run's meter."""

from __future__ import annotations

import asyncio
import operator
import time
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.errors import NodeTimeoutError
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from triage.context import Context
from triage.errors import TransientToolError
from triage.graphs.specialists import add_io_node
from triage.metering import Meter
from triage.policies.budgets import Budget


class _State(TypedDict, total=False):
    done: bool


def _run(node: Any, seconds: float, meter: Meter | None = None) -> Any:
    graph: StateGraph[Any, Context, Any, Any] = StateGraph(_State, context_schema=Context)
    add_io_node(graph, "work", node, seconds)
    graph.add_edge(START, "work")
    graph.add_edge("work", END)
    return asyncio.run(graph.compile().ainvoke({}, context=Context(meter=meter)))


def _meter() -> Meter:
    return Meter(Budget(max_steps=10, max_wall_seconds=60.0, max_model_tokens=0, max_model_cost_usd=0.0))


def test_an_attempt_over_its_limit_is_cancelled_and_fails_with_the_node_named() -> None:
    cancelled: list[bool] = []

    async def stuck(state: _State, runtime: Runtime[Context]) -> dict[str, Any]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return {"done": True}

    started = time.monotonic()
    with pytest.raises(NodeTimeoutError, match=r"'work' exceeded its run timeout of 0\.050s") as raised:
        _run(stuck, 0.05)
    assert time.monotonic() - started < 5
    assert cancelled == [True]
    assert (raised.value.node, raised.value.kind, raised.value.run_timeout) == ("work", "run", 0.05)


def test_a_timeout_error_of_the_node_itself_is_not_taken_for_its_limit() -> None:
    async def own_timeout(state: _State, runtime: Runtime[Context]) -> dict[str, Any]:
        raise TimeoutError("the mail server did not answer")

    with pytest.raises(TimeoutError, match="mail server") as raised:
        _run(own_timeout, 10.0)
    assert not isinstance(raised.value, NodeTimeoutError)


def test_a_node_within_its_limit_returns_and_each_attempt_is_counted() -> None:
    calls: list[int] = []

    async def flaky(state: _State, runtime: Runtime[Context]) -> dict[str, Any]:
        calls.append(1)
        if len(calls) < 3:
            raise TransientToolError("list_invoices", "database is locked")
        await asyncio.sleep(0)
        return {"done": True}

    meter = _meter()
    assert _run(flaky, 10.0, meter) == {"done": True}
    assert len(calls) == 3
    assert meter.retries() == {"work": 2}
    assert _run(flaky, 10.0) == {"done": True}, "without a meter (as under `langgraph dev`) nothing is counted"


def test_a_sync_node_is_refused_when_the_graph_is_built() -> None:
    def sync_node(state: _State, runtime: Runtime[Context]) -> dict[str, Any]:
        return {"done": True}

    graph: StateGraph[Any, Context, Any, Any] = StateGraph(_State, context_schema=Context)
    with pytest.raises(TypeError, match="'sync_node' does I/O and must be an async function"):
        add_io_node(graph, "work", sync_node, 1.0)


class _Routed(TypedDict, total=False):
    outcome: str
    visited: Annotated[list[str], operator.add]


def _routed_run(by_command: bool, start: str | None, written: str | None) -> tuple[Any, list[tuple[str, str]]]:
    """A node that may write `outcome`, then a router on it: as `then=` (the node names its successor) or as a
    conditional edge."""

    async def work(state: _Routed, runtime: Runtime[Context]) -> dict[str, Any]:
        return {"visited": ["work"], **({"outcome": written} if written else {})}

    async def after(state: _Routed) -> str:
        return END if state.get("outcome") == "refused" else "next"

    async def following(state: _Routed) -> dict[str, Any]:
        return {"visited": ["next"]}

    graph: StateGraph[Any, Context, Any, Any] = StateGraph(_Routed, context_schema=Context)
    if by_command:
        add_io_node(graph, "work", work, 5.0, then=(after, ("next", END)))
    else:
        add_io_node(graph, "work", work, 5.0)
        graph.add_conditional_edges("work", after, ["next", END])
    graph.add_node("next", following)
    graph.add_edge(START, "work")
    graph.add_edge("next", END)
    compiled = graph.compile()
    result = asyncio.run(compiled.ainvoke({"outcome": start} if start else {}, context=Context()))
    return result, sorted((e.source, e.target) for e in compiled.get_graph().edges)


@pytest.mark.parametrize("start", [None, "refused", "ok"])
@pytest.mark.parametrize("written", [None, "refused", "ok"])
def test_a_node_that_names_its_successor_goes_where_the_conditional_edge_would(
    start: str | None, written: str | None
) -> None:
    """The router sees the state with the node's own write (or the earlier value when it wrote none), the state
    ends the same, and the graph draws the same edges."""
    assert _routed_run(True, start, written) == _routed_run(False, start, written)
    result, _ = _routed_run(True, start, written)
    refused = (written or start) == "refused"
    assert result["visited"] == (["work"] if refused else ["work", "next"])
