"""Pure routing decisions: which specialist handles a classified ticket, and at what priority."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triage.policies.bundle import Priority, SupportPolicy
from triage.taxonomy import Route, Sentiment, Urgency


@dataclass(frozen=True)
class RouteDecision:
    """Where a ticket goes and why."""

    route: Route
    reason: str


def decide_route(
    *,
    predicted: Route,
    confidence: float,
    signals: frozenset[str],
    sentiment: Sentiment,
    policy: SupportPolicy,
) -> RouteDecision:
    """Route to the predicted specialist unless a signal, the customer's mood or low confidence says escalate."""
    rules = policy.routing
    triggered = sorted(signals & rules.escalate_on_signals)
    if triggered:
        return RouteDecision("escalation", f"escalation signal: {', '.join(triggered)}")
    if sentiment in rules.escalate_on_sentiment:
        return RouteDecision("escalation", f"customer sentiment is {sentiment}")
    if predicted != "escalation" and confidence < rules.min_confidence:
        return RouteDecision(
            "escalation", f"classifier unsure ({confidence:.2f} < {rules.min_confidence:.2f} for {predicted})"
        )
    return RouteDecision(predicted, f"classified as {predicted} ({confidence:.2f})")


_CUSTOMER_ID = re.compile(r"\bcus_[A-Za-z0-9_\-]+")


def other_customers(text: str, customer_id: str | None) -> list[str]:
    """Customer ids a ticket names besides its own, in order of appearance."""
    found: list[str] = []
    for named in _CUSTOMER_ID.findall(text):
        if named != customer_id and named not in found:
            found.append(named)
    return found


def write_hold(
    route: str,
    confidence: float,
    intent: str,
    policy: SupportPolicy,
    *,
    signals: frozenset[str] = frozenset(),
    others: Sequence[str] = (),
) -> str | None:
    """Why a specialist on `route` may not write to the helpdesk for this ticket, or None if it may.

    A specialist that writes (`acting_routes`) may still read and answer, but its first write (a refund or account
    request, an engineering ticket) hands the ticket to a person instead when the classification is below
    `min_confidence_to_act`, when a signal in `hold_writes_on_signals` is present (the customer says the matter is
    resolved), or when the ticket names another customer's account (`others`).
    """
    rules = policy.routing
    if route not in rules.acting_routes:
        return None
    if confidence < rules.min_confidence_to_act:
        return (
            f"not confident enough to act ({confidence:.2f} < {rules.min_confidence_to_act:.2f} for {route}/{intent}); "
            "nothing was filed, a person decides"
        )
    held_on = sorted(signals & rules.hold_writes_on_signals)
    if held_on:
        return f"signal {', '.join(held_on)}: nothing was filed, a person decides"
    if others:
        return f"the ticket names another customer ({', '.join(others)}); nothing was filed, a person decides"
    return None


def priority_for(urgency: Urgency, policy: SupportPolicy) -> Priority:
    """The queue priority for a ticket of this urgency."""
    return policy.priority[urgency]


def article_for_intent(
    intent: str, articles: Sequence[Mapping[str, Any]], policy: SupportPolicy
) -> Mapping[str, Any] | None:
    """The best-ranked search hit that the policy names as an answer to `intent`, if one matched a key term."""
    answers = policy.knowledge_base.intent_articles.get(intent, frozenset())
    return next((a for a in articles if a["slug"] in answers and int(a["key_terms"]) >= 1), None)


def kb_answers(article: Mapping[str, Any], policy: SupportPolicy) -> bool:
    """Whether a knowledge-base hit (from `search_kb`) is good enough to answer the ticket with."""
    rules = policy.knowledge_base
    key_terms = int(article["key_terms"])
    coverage = key_terms / max(1, int(article["query_terms"]))
    return (
        float(article["score"]) >= rules.min_score
        and key_terms >= rules.min_key_terms
        and (key_terms >= rules.strong_key_terms or coverage >= rules.min_key_coverage)
    )
