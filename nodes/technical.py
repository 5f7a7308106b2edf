"""The technical specialist: answer from the knowledge base when a fix is documented, else open a ticket.

With a model configured, a ticket the knowledge-base rule cannot answer gets a bounded agent step first (`agent`,
repeated once per model turn): the model may search the knowledge base with its own queries, read the service
status page's open incidents and list the customer's open tickets, read-only and through the gateway with only those
tools offered, within the policy's caps on turns, tokens and cost (`[agent]` in support.toml) and the run's budget.
Every turn is a checkpointed graph step. The loop ends in an answer with an article its own searches returned (the
draft is the article's template reply, verified like any other) or hands on to the deterministic path, which opens
the engineering ticket. A tool outside the offered set is refused and recorded by the gateway, and the run falls
back to a person. Without a model nothing changes.
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime

from triage.context import Context, meter_of, services_of, thread_id_of
from triage.errors import PermanentToolError, ScopeDeniedError
from triage.nodes.common import (
    RESPONSE_TIMES,
    action_record,
    article_facts,
    call_tool,
    in_this_turn,
    remembered,
    specialist_update,
    ticket_text,
)
from triage.policies.routing import kb_answers, priority_for
from triage.state import AgentCallRecord, AgentStep, AgentTrace, Draft, SpecialistState, Violation
from triage.tools.tickets import HISTORY_LABEL

NODE = "technical"
TOOLS = ("search_kb", "service_status", "find_tickets", "create_ticket")
AGENT_TOOLS = ("search_kb", "service_status", "find_tickets")
"""What the agent step is offered: the specialist's read-only tools. Writes stay with the deterministic `act`."""


async def search(state: SpecialistState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Full-text search of the knowledge base (bm25 ranked) for the ticket's words; start the agent if it may run."""
    articles = await call_tool(runtime, NODE, "search_kb", query=ticket_text(state), limit=3)
    update: dict[str, Any] = {"findings": {"articles": articles}}
    services = await services_of(runtime)
    policy = services.policy.support
    best = articles[0] if articles else None
    answered = best is not None and kb_answers(best, policy)
    outage = state["classification"]["intent"] == "outage"
    if policy.agent.enabled and not answered and not outage and services.models.agent_ready():
        update["agent"] = AgentTrace(status="running", steps=[], reason="", article=None)
    return update


async def after_search(state: SpecialistState) -> Literal["agent", "act"]:
    """Into the agent loop when `search` started it, else straight to `act`."""
    return "agent" if state.get("agent", {}).get("status") == "running" else "act"


async def after_agent(state: SpecialistState) -> Literal["agent", "act", "__end__"]:
    """Another turn while the loop runs; stop on a refused tool (the run falls back); else `act`."""
    if state.get("outcome") == "policy_violation":
        return "__end__"
    return "agent" if state.get("agent", {}).get("status") == "running" else "act"


async def agent(state: SpecialistState, runtime: Runtime[Context]) -> dict[str, Any]:
    """One turn of the bounded agent loop: a model call and the tool calls it asks for (see the module docstring)."""
    from triage.metering import BudgetExceededError
    from triage.models.llm import ModelCallError
    from triage.tools import ALL_TOOLS
    from triage.tools.base import idempotency_key

    services = await services_of(runtime)
    rules = services.policy.support.agent
    trace: AgentTrace = state["agent"]
    steps: list[AgentStep] = list(trace["steps"])
    customer_id = state["ticket"].get("customer_id")
    offered = [name for name in AGENT_TOOLS if name != "find_tickets" or customer_id]
    bound = {"find_tickets": {"customer_id": customer_id}}

    def done(status: str, reason: str, article: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"agent": AgentTrace(status=status, steps=steps, reason=reason, article=article)}

    if spent := _over_caps(steps, rules.max_model_tokens, rules.max_model_cost_usd):
        return done("handed_on", spent)
    try:
        turn = await services.models.agent_turn(
            ticket_text(state),
            steps,
            _specs(offered, bound),
            known_tools=ALL_TOOLS,
            meter=meter_of(runtime),
        )
    except BudgetExceededError as over:
        return done("handed_on", f"run budget: {over}")
    except ModelCallError as failed:
        steps.append(AgentStep(turn=len(steps) + 1, calls=[], model_call=failed.call.as_dict(), text=""))
        return done("handed_on", f"model call failed: {failed.call.outcome}")

    calls: list[AgentCallRecord] = []
    step = AgentStep(turn=len(steps) + 1, calls=calls, model_call=turn.call.as_dict(), text=turn.text[:500])
    steps.append(step)
    for request in turn.requests:
        args = {**request.args, **bound.get(request.name, {})}
        record = AgentCallRecord(
            id=request.id, tool=request.name, args=request.args, outcome="ok", detail="", result=None
        )
        calls.append(record)
        try:
            thread_id = thread_id_of(runtime)
            # Keyed per turn: the same call refused in a later turn is an attempt of its own in the audit table.
            key = idempotency_key(thread_id, NODE, request.name, in_this_turn(state, args))
            record["result"] = await services.gateway.call(
                NODE, request.name, args, thread_id=thread_id, idempotency_key=key, offered=offered
            )
        except ScopeDeniedError as refused:
            record["outcome"], record["detail"] = "refused", str(refused)
            violation = Violation(node=NODE, tool=refused.tool, scope=refused.scope)
            return {
                **done("refused", f"the model called {request.name}, which it was not offered"),
                "outcome": "policy_violation",
                "violations": [*state.get("violations", []), violation],
            }
        except PermanentToolError as bad:
            record["outcome"], record["detail"] = "malformed", str(bad)
    for malformed in turn.malformed:
        calls.append(
            AgentCallRecord(
                id=malformed.id,
                tool=malformed.name,
                args=malformed.args,
                outcome="malformed",
                detail=malformed.problem,
                result=None,
            )
        )
    if turn.finish is not None:
        finish = turn.finish
        record = AgentCallRecord(
            id=turn.finish_id, tool="finish", args=finish.model_dump(), outcome="finish", detail="", result=None
        )
        calls.append(record)
        if finish.decision == "hand_on":
            return done("handed_on", f"the model handed on: {finish.rationale}")
        article = _found_article(steps, finish.article)
        if article is not None:
            return done("answered", f"answered with {article['slug']}: {finish.rationale}", article)
        record["outcome"] = "malformed"
        record["detail"] = f"article {finish.article!r} was not returned by your searches; answer with one that was"
    elif not calls:
        return done("handed_on", "the model called no tool")
    if len(steps) >= rules.max_steps:
        return done("handed_on", f"step cap reached ({len(steps)} of {rules.max_steps} turns)")
    if spent := _over_caps(steps, rules.max_model_tokens, rules.max_model_cost_usd):
        return done("handed_on", spent)
    return {"agent": AgentTrace(status="running", steps=steps, reason="", article=None)}


def _specs(offered: list[str], bound: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    from triage.models.agent import finish_spec, tool_spec
    from triage.tools import ALL_TOOLS

    return [*(tool_spec(ALL_TOOLS[name], bound=bound.get(name, {})) for name in offered), finish_spec()]


def _over_caps(steps: list[Any], max_tokens: int, max_cost: float) -> str | None:
    tokens = sum(int(s["model_call"]["input_tokens"]) + int(s["model_call"]["output_tokens"]) for s in steps)
    cost = sum(float(s["model_call"]["cost_usd"]) for s in steps)
    if tokens >= max_tokens:
        return f"token cap reached ({tokens} of {max_tokens} tokens)"
    if cost and cost >= max_cost:
        return f"cost cap reached (${cost:.4f} of ${max_cost:.4f})"
    return None


def _found_article(steps: list[Any], slug: str | None) -> dict[str, Any] | None:
    """The article `slug` as one of the agent's own knowledge-base searches returned it, or None."""
    for step in steps:
        for record in step["calls"]:
            if record["tool"] == "search_kb" and record["outcome"] == "ok":
                for article in record["result"] or []:
                    if article.get("slug") == slug:
                        found: dict[str, Any] = article
                        return found
    return None


def agent_summary(trace: AgentTrace) -> dict[str, Any]:
    """What the agent did, for the run's findings: its end, turns, tool calls, tokens and cost."""
    steps = trace["steps"]
    return {
        "status": trace["status"],
        "reason": trace["reason"],
        "turns": len(steps),
        "calls": [f"{c['tool']}: {c['outcome']}" for s in steps for c in s["calls"]],
        "tokens": sum(int(s["model_call"]["input_tokens"]) + int(s["model_call"]["output_tokens"]) for s in steps),
        "cost_usd": round(sum(float(s["model_call"]["cost_usd"]) for s in steps), 8),
        "model_calls": [{**s["model_call"], "purpose": "agent"} for s in steps],
    }


async def act(state: SpecialistState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Answer with the best article's steps when the match is good (or the agent found one); else open a ticket.

    A reported outage always opens a ticket (at least high priority): an article cannot fix a service that is down.
    """
    services = await services_of(runtime)
    policy = services.policy.support
    findings = dict(state["findings"])
    articles: list[dict[str, Any]] = findings["articles"]
    actions = list(state.get("actions", []))
    trace = state.get("agent")
    if trace is not None:
        findings["agent"] = agent_summary(trace)
        if trace["status"] == "answered" and trace["article"] is not None:
            article = trace["article"]
            return specialist_update(
                "resolved",
                Draft(template="technical.kb_answer", facts=article_facts(article)),
                actions,
                findings={**findings, "answered_with": article["slug"]},
            )
    best = articles[0] if articles else None
    outage = state["classification"]["intent"] == "outage"
    if best is not None and not outage and kb_answers(best, policy):
        return specialist_update(
            "resolved",
            Draft(template="technical.kb_answer", facts=article_facts(best)),
            actions,
            findings={**findings, "answered_with": best["slug"]},
        )
    classification = state["classification"]
    priority = priority_for(classification["urgency"], policy)
    if outage and priority in ("low", "normal"):
        priority = "high"
    ticket = state["ticket"]
    summary = await services.models.summarise(ticket["body"], max_chars=600, meter=meter_of(runtime))
    if best is not None:
        summary += f"\n\nClosest article: {best['slug']} (score {best['score']}, not a confident match)."
    history = await remembered(runtime, ticket["customer_id"])
    if history:
        summary += f"\n\n{HISTORY_LABEL}{history}"
    receipt = await call_tool(
        runtime,
        NODE,
        "create_ticket",
        # The summary holds the customer's memory and, with a model tier, a model's words: a step run again after
        # a crash may write another one, so the ticket is keyed by the message it is about, in this turn.
        key_from=in_this_turn(state, {"queue": "engineering", "priority": priority, "message": ticket}),
        queue="engineering",
        priority=priority,
        subject=ticket["subject"]
        or await services.models.summarise(ticket["body"], max_chars=80, meter=meter_of(runtime)),
        summary=summary,
        customer_id=ticket["customer_id"],
    )
    actions.append(action_record("ticket", "create_ticket", NODE, receipt, queue="engineering", priority=priority))
    facts = {"ticket_id": receipt["id"], "priority": priority, "response_time": RESPONSE_TIMES[priority]}
    template = "technical.outage_ticket" if outage else "technical.engineering_ticket"
    update = specialist_update("handed_off", Draft(template=template, facts=facts), actions)
    if trace is not None:
        update["findings"] = findings
    return update
