"""Plan a ticket that asks several things, handle each ask with its specialist in parallel, and merge what they did.

`plan_asks` (called by `classify`) splits the ticket where the customer signals several things and reads each part;
each ask then runs as its own `ask` task (LangGraph `Send`), which runs the ask's specialist subgraph, so every tool
call is still made under that specialist's grant. An ask its specialist could not handle (a refused tool, a write
held back) is handed to a person through the escalation specialist, with the reason. `merge_asks` gathers the
branches: their proposed actions go on to the one approval step and the one executor, their drafts become one
reply that answers every ask in order.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from triage.context import Context, meter_of, services_of
from triage.nodes.route import FALL_BACK_OUTCOMES
from triage.policies.conversation import clip
from triage.policies.planning import PLAN_TEMPLATE, ask_status, split_asks
from triage.policies.routing import decide_route
from triage.state import AskRecord, Classification, Draft, ProposedAction, State


async def plan_asks(state: State, classification: Classification, runtime: Runtime[Context]) -> list[Send] | None:
    """The `ask` tasks for a ticket with several asks on different routes, or None for the usual one-route path.

    Only a ticket that signals several things is split (a regex; no model call otherwise); a ticket the router would
    escalate as a whole (a signal, the customer's mood) is not split.
    """
    ticket = state["ticket"]
    parts = split_asks(ticket["body"])
    if len(parts) < 2 or state.get("conversation"):
        return None
    services = await services_of(runtime)
    policy = services.policy.support
    whole = decide_route(
        predicted=classification["route"],
        confidence=max(classification["confidence"], policy.routing.min_confidence),
        signals=frozenset(classification["signals"]),
        sentiment=classification["sentiment"],
        policy=policy,
    )
    if whole.route == "escalation":
        return None
    asks: list[tuple[str, Classification]] = []
    for part in parts:
        read = await services.models.classify(part, meter=meter_of(runtime))
        if read["route"] == "escalation" or read["confidence"] < policy.routing.min_confidence:
            continue
        same = next((i for i, (_, c) in enumerate(asks) if c["route"] == read["route"]), None)
        if same is None:
            asks.append((part, read))
        else:  # one ask per specialist: its parts read together
            text, first = asks[same]
            asks[same] = (f"{text}. {part}", first)
    if len({c["route"] for _, c in asks}) < 2:
        return None
    cap = policy.planning.max_asks
    return [
        Send(
            "ask",
            {
                "index": index,
                "text": text,
                "ticket": {**ticket, "subject": "", "body": text},
                "customer": state.get("customer"),
                "classification": read,
                "turn_step": state.get("turn_step", 0),
                "capped": index > cap,
                "max_asks": cap,
            },
        )
        for index, (text, read) in enumerate(asks, start=1)
    ]


AskNode = Callable[[Mapping[str, Any], Runtime[Context]], Coroutine[Any, Any, dict[str, Any]]]


def make_ask_node(specialists: Mapping[str, CompiledStateGraph[Any, Context, Any, Any]]) -> AskNode:
    """The `ask` node: one ask through its specialist (or to a person when it cannot be handled)."""

    async def ask(task: Mapping[str, Any], runtime: Runtime[Context]) -> dict[str, Any]:
        classification: Classification = task["classification"]
        route = classification["route"]
        given = {
            "ticket": task["ticket"],
            "customer": task["customer"],
            "classification": classification,
            "turn_step": task.get("turn_step", 0),
        }
        reason = None
        if task["capped"]:
            reason = f"more asks than one ticket may carry ({task['max_asks']}, the policy's planning.max_asks)"
        else:
            done = await specialists[route].ainvoke(given)
            if done.get("outcome") in FALL_BACK_OUTCOMES:
                reason = _why_not(done)
        if reason is not None:
            done = await specialists["escalation"].ainvoke(
                {**given, "route_reason": f"ask {task['index']} ({route}/{classification['intent']}): {reason}"}
            )
        record = AskRecord(
            index=task["index"],
            text=clip(task["text"], 200),
            route=route,
            intent=classification["intent"],
            status="handed_on" if reason else ask_status(str(done.get("outcome"))),
            reason=reason,
        )
        proposed = [
            ProposedAction(kind=p["kind"], args=p["args"], reason=p["reason"], ask=task["index"])
            for p in done.get("proposed_actions", [])
        ]
        return {
            "ask_results": [
                {
                    "ask": record,
                    "outcome": done.get("outcome"),
                    "draft": done.get("draft"),
                    "actions": done.get("actions", []),
                    "proposed_actions": proposed,
                    "findings": done.get("findings", {}),
                    "violations": done.get("violations", []),
                }
            ]
        }

    return ask


def _why_not(done: Mapping[str, Any]) -> str:
    if done.get("outcome") == "held_for_person":
        return str(done.get("findings", {}).get("held", "held for a person"))
    refused = "; ".join(
        f"{v['node']} called {v['tool']} without scope {v['scope']}" for v in done.get("violations", [])
    )
    return f"policy violation: {refused}"


async def merge_asks(state: State) -> dict[str, Any]:
    """Gather the asks' branches, in order: one list of effects and proposals, one draft answering every ask."""
    results = sorted(state.get("ask_results") or [], key=lambda r: r["ask"]["index"])
    asks = [r["ask"] for r in results]
    findings: dict[str, Any] = {}
    for result in results:
        findings.update(result["findings"])
    parts = [
        {"index": r["ask"]["index"], "template": r["draft"]["template"], "facts": r["draft"]["facts"]} for r in results
    ]
    answered = all(a["status"] == "answered" for a in asks)
    handed = [f"ask {a['index']}: {a['reason']}" for a in asks if a["reason"]]
    update: dict[str, Any] = {
        "asks": asks,
        "ask_results": None,  # merged: not carried in every later checkpoint
        "actions": [*state.get("actions", []), *(a for r in results for a in r["actions"])],
        "proposed_actions": [p for r in results for p in r["proposed_actions"]],
        "violations": [v for r in results for v in r["violations"]],
        "findings": findings,
        "outcome": "resolved" if answered else "handed_off",
        "draft": Draft(template=PLAN_TEMPLATE, facts={"parts": parts}),
    }
    if handed:
        update["route_reason"] = f"{state.get('route_reason', '')}; handed on: {'; '.join(handed)}".lstrip("; ")
    return update
