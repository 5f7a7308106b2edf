"""Every limit a policy file sets, at the limit, one unit below it and one unit above it.

The limits are read from the packaged bundle (so a changed file moves the tests with it), and the packaged values
are pinned once, so a change to them is a visible decision rather than a silent one.
"""

from __future__ import annotations

from typing import Any

import pytest

from triage.errors import PolicyFileError
from triage.policies import load_policy_bundle
from triage.policies.approvals import (
    REQUIRED_APPROVALS,
    ApprovalPolicy,
    approval_refusal,
    approval_tier,
    mass_notification_tier,
    reply_needs_approval,
)
from triage.policies.budgets import Budget, Usage, budget_exceeded
from triage.policies.routing import decide_route, kb_answers, priority_for

POLICY = load_policy_bundle()
APPROVALS = POLICY.approvals
SUPPORT = POLICY.support
NO_APPROVAL_MAX = APPROVALS.refunds.no_approval_max_cents
SINGLE_MAX = APPROVALS.refunds.single_approval_max_cents


def test_packaged_limits_are_the_documented_ones() -> None:
    assert (NO_APPROVAL_MAX, SINGLE_MAX) == (5000, 50000)  # $50.00 and $500.00
    assert APPROVALS.actions.low_confidence_reply_below == 0.9
    assert APPROVALS.sla.expiry_hours == 24
    assert SUPPORT.routing.min_confidence == 0.8
    assert SUPPORT.billing.duplicate_window_hours == 72
    assert SUPPORT.budget == Budget(
        max_steps=40, max_wall_seconds=60.0, max_model_tokens=20000, max_model_cost_usd=0.05
    )
    assert REQUIRED_APPROVALS == {"none": 0, "single": 1, "dual": 2}


@pytest.mark.parametrize(
    ("amount_cents", "tier"),
    [
        (1, "none"),
        (NO_APPROVAL_MAX - 1, "none"),
        (NO_APPROVAL_MAX, "none"),  # exactly $50.00 needs no approval
        (NO_APPROVAL_MAX + 1, "single"),  # $50.01 needs one
        (SINGLE_MAX - 1, "single"),
        (SINGLE_MAX, "single"),  # exactly $500.00 needs one
        (SINGLE_MAX + 1, "dual"),  # $500.01 needs two
        (10**9, "dual"),
    ],
)
def test_refund_tier_at_each_limit(amount_cents: int, tier: str) -> None:
    assert approval_tier("refund", {"amount_cents": amount_cents}, APPROVALS) == tier


def test_refund_amount_given_as_text_is_read_as_cents() -> None:
    assert approval_tier("refund", {"amount_cents": str(NO_APPROVAL_MAX + 1)}, APPROVALS) == "single"


def _approvals(**changes: Any) -> ApprovalPolicy:
    data = APPROVALS.model_dump()
    for section, values in changes.items():
        data[section] = {**data[section], **values}
    return ApprovalPolicy.model_validate(data)


def test_tiers_follow_the_policy_not_constants() -> None:
    policy = _approvals(
        refunds={"no_approval_max_cents": 100, "single_approval_max_cents": 200},
        actions={"account_deletion": "single", "data_export": "none", "low_confidence_reply": "dual"},
    )
    assert [approval_tier("refund", {"amount_cents": a}, policy) for a in (100, 101, 200, 201)] == [
        "none",
        "single",
        "single",
        "dual",
    ]
    assert approval_tier("account_deletion", {}, policy) == "single"
    assert approval_tier("data_export", {}, policy) == "none"
    assert approval_tier("reply", {}, policy) == "dual"


@pytest.mark.parametrize(
    ("kind", "tier"),
    [
        ("reply", "single"),
        ("account_deletion", "dual"),
        ("data_export", "dual"),
        ("wire_transfer", "dual"),  # anything the policy does not know needs two
        ("", "dual"),
    ],
)
def test_tier_of_other_actions(kind: str, tier: str) -> None:
    assert approval_tier(kind, {}, APPROVALS) == tier


@pytest.mark.parametrize(
    ("confidence", "needs"),
    [(0.0, True), (0.89, True), (0.8999, True), (0.9, False), (0.9001, False), (1.0, False)],
)
def test_reply_approval_threshold(confidence: float, needs: bool) -> None:
    assert reply_needs_approval(confidence, APPROVALS) is needs


@pytest.mark.parametrize(
    ("approver", "tier", "received", "refusal"),
    [
        ("alice", "single", [], None),
        ("sam", "single", [], None),
        ("alice", "dual", [], None),  # an agent may give the first of two
        ("bob", "dual", ["alice"], "a dual approval needs a supervisor; 'bob' is an agent (supervisors: sam)"),
        ("sam", "dual", ["alice"], None),
        ("alice", "dual", ["sam"], None),  # the supervisor came first
        (
            "alice",
            "dual",
            ["alice"],
            "'alice' has already approved this action; a dual approval needs a different approver",
        ),
        (
            "mallory",
            "single",
            [],
            "'mallory' is not an approver in the approval policy (approvers: alice, bob, sam)",
        ),
    ],
)
def test_approval_refusal(approver: str, tier: str, received: list[str], refusal: str | None) -> None:
    assert approval_refusal(approver, tier, received, APPROVALS) == refusal  # type: ignore[arg-type]


def test_role_of_and_unique_approvers() -> None:
    assert [APPROVALS.role_of(a) for a in ("alice", "bob", "sam", "nobody")] == ["agent", "agent", "supervisor", None]
    data = APPROVALS.model_dump()
    data["approvers"] = [*data["approvers"], {"id": "bob", "role": "supervisor"}]
    with pytest.raises(ValueError, match="approver ids must be unique: bob"):
        ApprovalPolicy.model_validate(data)


# -- routing -----------------------------------------------------------------------------------------------------

MIN_CONFIDENCE = SUPPORT.routing.min_confidence


@pytest.mark.parametrize(
    ("confidence", "route"),
    [
        (MIN_CONFIDENCE - 0.01, "escalation"),
        (MIN_CONFIDENCE - 1e-9, "escalation"),
        (MIN_CONFIDENCE, "billing"),  # exactly at the threshold: confident enough
        (MIN_CONFIDENCE + 0.01, "billing"),
    ],
)
def test_routing_confidence_threshold(confidence: float, route: str) -> None:
    decision = decide_route(
        predicted="billing", confidence=confidence, signals=frozenset(), sentiment="neutral", policy=SUPPORT
    )
    assert decision.route == route


def test_route_reasons_name_the_numbers() -> None:
    unsure = decide_route(predicted="account", confidence=0.3, signals=frozenset(), sentiment="neutral", policy=SUPPORT)
    assert unsure.reason == "classifier unsure (0.30 < 0.80 for account)"
    sure = decide_route(predicted="account", confidence=0.85, signals=frozenset(), sentiment="negative", policy=SUPPORT)
    assert sure.reason == "classified as account (0.85)"
    signalled = decide_route(
        predicted="billing",
        confidence=0.99,
        signals=frozenset({"security", "chargeback", "repeat_contact"}),
        sentiment="neutral",
        policy=SUPPORT,
    )
    assert (signalled.route, signalled.reason) == ("escalation", "escalation signal: chargeback, security")
    angry = decide_route(predicted="billing", confidence=0.99, signals=frozenset(), sentiment="angry", policy=SUPPORT)
    assert angry.reason == "customer sentiment is angry"


def test_priority_for_every_urgency() -> None:
    assert {u: priority_for(u, SUPPORT) for u in ("low", "normal", "high", "critical")} == {  # type: ignore[misc]
        "low": "low",
        "normal": "normal",
        "high": "high",
        "critical": "urgent",
    }


def _hit(score: float, key_terms: int, query_terms: int) -> dict[str, float]:
    return {"score": score, "key_terms": key_terms, "query_terms": query_terms}


@pytest.mark.parametrize(
    ("hit", "answers"),
    [
        (_hit(5.0, 2, 8), True),  # score exactly min_score, 2 of 8 words: coverage exactly 0.25
        (_hit(4.99, 2, 8), False),  # score just below
        (_hit(5.0, 2, 9), False),  # coverage just below 0.25, fewer than strong_key_terms
        (_hit(5.0, 1, 1), False),  # one key term is below min_key_terms, whatever the coverage
        (_hit(5.0, 4, 100), True),  # strong_key_terms exactly: coverage does not matter
        (_hit(5.0, 3, 100), False),  # one below strong, low coverage
        (_hit(5.0, 2, 0), True),  # no query terms counted: coverage is taken over at least one word
    ],
)
def test_kb_answer_limits(hit: dict[str, float], answers: bool) -> None:
    assert kb_answers(hit, SUPPORT) is answers


# -- budgets -----------------------------------------------------------------------------------------------------

BUDGET = SUPPORT.budget


def _usage(steps: int = 0, wall: float = 0.0, tokens: int = 0, cost: float = 0.0) -> Usage:
    return Usage(steps=steps, wall_seconds=wall, model_tokens=tokens, model_cost_usd=cost)


@pytest.mark.parametrize(
    ("usage", "reason"),
    [
        (_usage(steps=39), None),
        (_usage(steps=40), "step budget reached (40 of 40 steps)"),
        (_usage(steps=41), "step budget reached (41 of 40 steps)"),
        (_usage(wall=59.99), None),
        (_usage(wall=60.0), "time budget reached (60.00 s of 60.00 s)"),
        (_usage(tokens=19999), None),
        (_usage(tokens=20000), "model token budget reached (20000 of 20000 tokens)"),
        (_usage(cost=0.0499), None),
        (_usage(cost=0.05), "model cost budget reached ($0.0500 of $0.0500)"),
        (_usage(steps=40, wall=61.0, tokens=30000, cost=1.0), "step budget reached (40 of 40 steps)"),
        (_usage(wall=61.0, tokens=30000, cost=1.0), "time budget reached (61.00 s of 60.00 s)"),
        (_usage(tokens=30000, cost=1.0), "model token budget reached (30000 of 20000 tokens)"),
    ],
)
def test_budget_limits(usage: Usage, reason: str | None) -> None:
    assert budget_exceeded(usage, BUDGET) == reason


def test_zero_model_budget_is_reached_only_by_spending() -> None:
    none_allowed = BUDGET.override({"max_model_tokens": 0, "max_model_cost_usd": 0.0})
    assert budget_exceeded(_usage(steps=1), none_allowed) is None
    assert budget_exceeded(_usage(tokens=1), none_allowed) == "model token budget reached (1 of 0 tokens)"
    assert budget_exceeded(_usage(cost=0.0001), none_allowed) == "model cost budget reached ($0.0001 of $0.0000)"


def test_budget_override() -> None:
    assert BUDGET.override(None) is BUDGET
    assert BUDGET.override({}) is BUDGET
    assert BUDGET.override({"max_steps": 3}).max_steps == 3
    assert BUDGET.override({"max_steps": 3}).max_model_tokens == BUDGET.max_model_tokens


def test_supervisor_refusal_lists_every_supervisor() -> None:
    data = APPROVALS.model_dump()
    data["approvers"] = [*data["approvers"], {"id": "kim", "role": "supervisor"}]
    policy = ApprovalPolicy.model_validate(data)
    assert approval_refusal("bob", "dual", ["alice"], policy) == (
        "a dual approval needs a supervisor; 'bob' is an agent (supervisors: sam, kim)"
    )


def test_kb_coverage_is_taken_over_the_query_terms() -> None:
    data = SUPPORT.model_dump()
    data["knowledge_base"] = {"min_score": 1.0, "min_key_terms": 1, "strong_key_terms": 5, "min_key_coverage": 0.75}
    strict = type(SUPPORT).model_validate(data)
    assert kb_answers(_hit(2.0, 1, 1), strict)  # one word asked, one matched: full coverage
    assert not kb_answers(_hit(2.0, 1, 2), strict)


def test_budget_override_error_names_each_problem() -> None:
    with pytest.raises(PolicyFileError) as caught:
        BUDGET.override({"max_steps": 0, "max_colour": 1})
    assert str(caught.value) == (
        "invalid budget override: max_steps: Input should be greater than or equal to 1; "
        "max_colour: Extra inputs are not permitted"
    )


def test_mass_notification_tier_at_its_limit() -> None:
    limit = APPROVALS.release.mass_notification_above
    assert (limit, APPROVALS.release.mass_notification) == (10, "single")
    assert mass_notification_tier(limit - 1, APPROVALS) == "none"
    assert mass_notification_tier(limit, APPROVALS) == "none"  # up to the limit, the follow-up goes out on its own
    assert mass_notification_tier(limit + 1, APPROVALS) == "single"
