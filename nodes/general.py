"""The general specialist: answer from the knowledge base / FAQ, thank for feedback, or a templated reply."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, services_of
from triage.nodes.common import article_facts, call_tool, specialist_update, ticket_text
from triage.policies.routing import article_for_intent, kb_answers
from triage.state import Draft, SpecialistState

NODE = "general"
TOOLS = ("search_kb",)


async def answer(state: SpecialistState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Reply from the FAQ when an article matches well; otherwise a polite templated reply."""
    actions = list(state.get("actions", []))
    intent = state["classification"]["intent"]
    if intent == "feedback":
        return specialist_update("resolved", Draft(template="general.feedback_thanks", facts={}), actions, findings={})
    if intent == "other":  # off-topic: a polite reply, no tool call
        return specialist_update("resolved", Draft(template="general.off_topic", facts={}), actions, findings={})
    services = await services_of(runtime)
    policy = services.policy.support
    seen: dict[str, dict[str, Any]] = {}
    for category in ("general", None):  # the FAQ first, then every article
        articles: list[dict[str, Any]] = await call_tool(
            runtime, NODE, "search_kb", query=ticket_text(state), category=category, limit=3
        )
        for article in articles:
            seen.setdefault(article["slug"], {k: article[k] for k in ("slug", "score", "key_terms")})
        best: Mapping[str, Any] | None = articles[0] if articles and kb_answers(articles[0], policy) else None
        if best is None and category == "general":
            best = article_for_intent(intent, articles, policy)
        if best is not None:
            return specialist_update(
                "resolved",
                Draft(template="general.kb_answer", facts=article_facts(best)),
                actions,
                findings={"articles": list(seen.values()), "answered_with": best["slug"]},
            )
    return specialist_update(
        "needs_info", Draft(template="general.fallback", facts={}), actions, findings={"articles": list(seen.values())}
    )
