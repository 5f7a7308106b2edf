"""The pure parts of multi-step account changes: proration, the steps, their compensations, tiers, fault plans and
the eval's rollback figures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from triage.errors import PermanentToolError, TransientToolError
from triage.evals.metrics import CaseEvaluation, run_metrics
from triage.faults import FaultInjector, FaultPlan, FaultSpecError
from triage.nodes.saga import check_compensations
from triage.policies import load_policy_bundle
from triage.policies.account import (
    closure_args,
    included_seats,
    plan_change_args,
    prorated_cents,
    refund_source,
    saga_steps,
    unused_share,
)
from triage.policies.approvals import approval_tier
from triage.tools import ALL_TOOLS
from triage.tools.base import compensation_of

POLICY = load_policy_bundle()
AS_OF = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CUSTOMER = {
    "id": "cus_x",
    "subscription_id": "sub_1",
    "subscription_status": "active",
    "plan_id": "team",
    "monthly_price_cents": 4900,
    "renews_at": "2026-09-01T00:00:00Z",  # renews on the 1st: the period around AS_OF is Nov 1 - Dec 1
}


def test_the_unused_share_follows_the_monthly_renewal_forward() -> None:
    assert unused_share("2026-09-01T00:00:00Z", AS_OF) == (11, 30)  # 10.5 days left: a day begun counts
    assert unused_share("2026-12-01T00:00:00Z", AS_OF) == (11, 30)  # a renewal ahead: the period before it
    assert unused_share(None, AS_OF) == (0, 30)


def test_the_period_around_a_date_has_its_own_month_length() -> None:
    # A renewal on the 31st falls on the month's last day in shorter months; a day begun counts as left.
    assert unused_share("2026-01-31T00:00:00Z", datetime(2026, 2, 10, tzinfo=UTC)) == (18, 28)  # Jan 31 - Feb 28
    assert unused_share("2026-01-31T00:00:00Z", datetime(2026, 3, 1, tzinfo=UTC)) == (30, 31)  # Feb 28 - Mar 31
    # At the renewal instant a new period begins: the whole of it is left.
    assert unused_share("2026-11-01T00:00:00Z", datetime(2026, 11, 1, tzinfo=UTC)) == (30, 30)
    # Across a year end, and with a renewal date without a zone (read in the zone of `as_of`).
    assert unused_share("2026-12-15T00:00:00", datetime(2027, 1, 14, 12, tzinfo=UTC)) == (1, 31)
    assert unused_share("", AS_OF) == (0, 30)


def test_the_prorated_part_of_a_price_is_rounded_to_the_cent() -> None:
    assert prorated_cents(4900, 11, 30) == 1797  # 1796.67
    assert prorated_cents(4900, 30, 30) == 4900
    assert prorated_cents(100, 1, 3) == 33
    assert prorated_cents(100, 1, 1) == 100  # a one-day period
    assert prorated_cents(4900, 5, 0) == 0  # no period: nothing to share


def test_an_upgrade_charges_and_a_downgrade_credits_the_prorated_difference() -> None:
    business = {"id": "business", "monthly_price_cents": 9900, "description": "Up to 100 members, 5 TB"}
    starter = {"id": "starter", "monthly_price_cents": 1900, "description": "Up to 5 members, 100 GB"}
    up = plan_change_args(CUSTOMER, business, "ar_1", as_of=AS_OF)
    down = plan_change_args(CUSTOMER, starter, "ar_1", as_of=AS_OF)
    assert (up["proration_cents"], up["seats"]) == (round(5000 * 11 / 30), 100)
    assert (down["proration_cents"], down["seats"]) == (-round(3000 * 11 / 30), 5)
    assert included_seats("Unlimited members, custom storage") is None


def test_a_closure_refunds_the_unused_period_from_a_payment_with_enough_left() -> None:
    payments = [
        {"id": "pay_new", "status": "refunded", "amount_cents": 4900, "refunded_cents": 4900},
        {"id": "pay_old", "status": "succeeded", "amount_cents": 4900, "refunded_cents": 0},
    ]
    args = closure_args(CUSTOMER, payments, "ar_2", as_of=AS_OF)
    assert (args["payment_id"], args["refund_cents"]) == ("pay_old", round(4900 * 11 / 30))
    canceled = closure_args({**CUSTOMER, "subscription_status": "canceled"}, payments, "ar_2", as_of=AS_OF)
    assert (canceled["subscription_id"], canceled["payment_id"], canceled["refund_cents"]) == (None, None, 0)
    assert [s["name"] for s in saga_steps("account_closure", canceled)] == ["schedule_data_jobs", "confirm"]


def test_every_step_but_the_last_declares_a_compensation_that_exists() -> None:
    plan = plan_change_args(
        CUSTOMER, {"id": "business", "monthly_price_cents": 9900, "description": ""}, "ar", as_of=AS_OF
    )
    closure = closure_args(CUSTOMER, [{"id": "p", "status": "succeeded", "amount_cents": 9999}], "ar", as_of=AS_OF)
    for kind, args in (("plan_change", plan), ("account_closure", closure)):
        steps = saga_steps(kind, args)
        check_compensations(steps)  # type: ignore[arg-type]
        for step in steps[:-1]:
            undo = compensation_of(ALL_TOOLS[step["tool"]])
            assert undo in ALL_TOOLS and list(ALL_TOOLS[undo].args) == ["customer_id", "receipt_id"]
    with pytest.raises(ValueError, match="declares no compensation"):
        check_compensations([{"name": "confirm", "tool": "confirm_account_change", "args": {}}] * 2)
    with pytest.raises(ValueError, match="unknown account change"):
        saga_steps("merge_accounts", {"customer_id": "c"})


@pytest.mark.parametrize(
    ("deletion", "refund", "tier"),
    [
        ("none", 0, "none"),
        ("none", 5000, "none"),
        ("none", 9000, "single"),
        ("single", 90_000, "dual"),
        ("dual", 0, "dual"),
        ("single", 4000, "single"),
    ],
)
def test_a_closure_needs_the_higher_of_the_deletion_and_refund_tiers(deletion: str, refund: int, tier: str) -> None:
    actions = POLICY.approvals.actions.model_copy(update={"account_deletion": deletion})
    policy = POLICY.approvals.model_copy(update={"actions": actions})
    assert approval_tier("account_closure", {"refund_cents": refund}, policy) == tier
    assert approval_tier("plan_change", {}, POLICY.approvals) == "none"


def test_a_fault_plan_fails_or_flakes_named_tools() -> None:
    plan = FaultPlan.parse("fail=adjust_seats,fail=void_account_credit,flaky=change_subscription")
    assert plan.fail == {"adjust_seats", "void_account_credit"} and plan.flaky == {"change_subscription"}
    injector = FaultInjector(plan)

    async def ok() -> str:
        return "done"

    async def calls() -> list[str]:
        outcomes = []
        for tool in ("adjust_seats", "change_subscription", "change_subscription", "adjust_seats"):
            try:
                outcomes.append(await injector.around_tool(tool, ok))
            except (PermanentToolError, TransientToolError) as exc:
                outcomes.append(exc.kind)
        return outcomes

    assert asyncio.run(calls()) == ["permanent", "transient", "done", "permanent"]
    assert injector.injected == {"fail": 2, "flaky": 1}
    with pytest.raises(FaultSpecError, match="fail=TOOL"):
        FaultPlan.parse("fail=")


def test_the_rollback_rate_counts_runs_that_carried_out_a_change() -> None:
    def case(change: str | None, undone: int = 0) -> CaseEvaluation:
        return CaseEvaluation("c", (), "account", "account", True, 1.0, change=change, compensations=undone)

    run = run_metrics([case(None), case("completed"), case("rolled_back", 2), case("rollback_failed", 1)])
    assert (run["account_changes"], run["rollback_rate"], run["compensations_per_run"]) == (3, 0.6667, 1.0)
    assert run["rollback_failures"] == 1
    assert run_metrics([case(None)])["rollback_rate"] is None


def test_the_account_change_graph_prepares_runs_the_steps_then_hands_off() -> None:
    from triage.graphs.account_change import build_account_change_graph

    drawn = build_account_change_graph(policy=POLICY).compile().get_graph()
    edges = sorted((edge.source, edge.target) for edge in drawn.edges)
    assert edges == [
        ("__start__", "prepare"),
        ("hand_off", "__end__"),
        ("prepare", "run_steps"),
        ("run_steps", "hand_off"),
    ]


PERIOD_START = datetime(2026, 11, 1, tzinfo=UTC)
"""A renewal instant of CUSTOMER: a whole period (30 of 30 days) is left."""
LAST_DAY = datetime(2026, 11, 30, 12, tzinfo=UTC)
"""Half a day before CUSTOMER's next renewal: one day of 30 is left."""


def test_a_plan_change_names_both_plans_and_charges_whole_cents() -> None:
    business = {"id": "business", "monthly_price_cents": 9900, "description": "Up to 100 members, 5 TB"}
    args = plan_change_args(CUSTOMER, business, "ar_1", as_of=AS_OF)
    assert args == {
        "customer_id": "cus_x",
        "request_id": "ar_1",
        "subscription_id": "sub_1",
        "from_plan": "team",
        "to_plan": "business",
        "proration_cents": 1833,
        "seats": 100,
    }
    assert type(args["proration_cents"]) is int  # cents, never a float
    credit = plan_change_args(CUSTOMER, {"id": "starter", "monthly_price_cents": 1900}, "ar_1", as_of=AS_OF)
    assert type(credit["proration_cents"]) is int and credit["proration_cents"] == -1100
    # A customer on a free plan (no price) pays the whole new price for a whole period, not a cent less.
    free = {**CUSTOMER, "monthly_price_cents": None}
    assert plan_change_args(free, business, "ar_1", as_of=PERIOD_START)["proration_cents"] == 9900


def test_a_closure_refund_comes_from_a_payment_that_was_made_and_has_enough_left() -> None:
    refund = round(4900 * 11 / 30)  # 1797

    def paid_from(*payments: dict[str, object], customer: dict[str, object] = CUSTOMER) -> tuple[object, object]:
        args = closure_args(customer, payments, "ar_2", as_of=AS_OF)
        return args["payment_id"], args["refund_cents"]

    failed = {"id": "pay_failed", "status": "failed", "amount_cents": 4900}
    nearly_spent = {"id": "pay_spent", "status": "partially_refunded", "amount_cents": 4900, "refunded_cents": 4000}
    partly = {"id": "pay_partly", "status": "partially_refunded", "amount_cents": 4900, "refunded_cents": 3103}
    exact = {"id": "pay_exact", "status": "succeeded", "amount_cents": refund}
    assert paid_from(failed, exact) == ("pay_exact", refund)  # a failed charge took no money
    assert paid_from(nearly_spent, partly) == ("pay_partly", refund)  # 900 left is too little; 1797 is enough
    assert paid_from(exact) == ("pay_exact", refund)  # exactly enough left (no refunds recorded) will do
    assert paid_from() == (None, 0)  # nothing to refund from: the closure goes on without a refund
    for status in ("trialing", "past_due"):
        assert paid_from(exact, customer={**CUSTOMER, "subscription_status": status}) == ("pay_exact", refund)


def test_a_refund_comes_from_the_planned_payment_while_it_has_enough_left_else_from_the_newest_that_has() -> None:
    newest = {"id": "pay_3", "status": "succeeded", "amount_cents": 1000}
    planned = {"id": "pay_2", "status": "partially_refunded", "amount_cents": 1000, "refunded_cents": 400}
    oldest = {"id": "pay_1", "status": "succeeded", "amount_cents": 1000, "refunded_cents": 0, "requested_cents": 0}
    payments = [newest, planned, oldest]
    assert refund_source(payments, 600, prefer="pay_2") == "pay_2"  # exactly enough left on the planned one
    assert refund_source(payments, 601, prefer="pay_2") == "pay_3"  # one cent short: the newest with enough
    assert refund_source(payments, 600) == "pay_3"  # no plan: the newest with enough
    assert refund_source(payments, 600, prefer="pay_9") == "pay_3"  # a payment not in the list is never used
    assert refund_source(payments, 1000, prefer="pay_1") == "pay_1"
    assert refund_source(payments, 1001) is None  # none has that much: not split over payments
    assert refund_source([], 1) is None


def test_what_a_payment_has_left_counts_its_refunds_and_its_open_refund_requests() -> None:
    def left(**payment: object) -> list[int]:
        row = {"id": "pay_1", "status": "succeeded", "amount_cents": 24000, **payment}
        return [cents for cents in (1, 980, 4000, 24000) if refund_source([row], cents) == "pay_1"]

    assert left() == [1, 980, 4000, 24000]
    assert left(refunded_cents=20000) == [1, 980, 4000]  # e.g. an edited duplicate refund left 4000
    assert left(requested_cents=23020) == [1, 980]  # another thread's open request will take the rest
    assert left(refunded_cents=3000, requested_cents=20020) == [1, 980]  # both count
    assert left(refunded_cents=24000) == []  # refunded in full by another ask of the same ticket
    assert left(status="failed") == []  # a failed charge took nothing
    assert left(status="partially_refunded", refunded_cents=1) == [1, 980, 4000]


def test_a_closure_refunds_nothing_when_nothing_is_left_and_a_single_cent_when_that_is() -> None:
    payment = {"id": "pay_1", "status": "succeeded", "amount_cents": 4900, "refunded_cents": 0}
    free = {**CUSTOMER, "monthly_price_cents": None}
    nothing = closure_args(free, [payment], "ar_2", as_of=PERIOD_START)
    assert (nothing["payment_id"], nothing["refund_cents"]) == (None, 0)
    no_renewal = closure_args({**CUSTOMER, "renews_at": None}, [payment], "ar_2", as_of=AS_OF)
    assert (no_renewal["payment_id"], no_renewal["refund_cents"]) == (None, 0)
    cent = closure_args({**CUSTOMER, "monthly_price_cents": 30}, [payment], "ar_2", as_of=LAST_DAY)
    assert (cent["payment_id"], cent["refund_cents"]) == ("pay_1", 1)


def test_the_prorate_step_says_charge_or_credit() -> None:
    change = {"customer_id": "cus_x", "subscription_id": "sub_1", "to_plan": "pro", "request_id": "ar_1"}
    charge = saga_steps("plan_change", {**change, "proration_cents": 1, "seats": None})
    credit = saga_steps("plan_change", {**change, "proration_cents": -250, "seats": None})
    assert [s["name"] for s in charge] == ["change_plan", "prorate", "confirm"]
    assert charge[1]["args"] == {"customer_id": "cus_x", "amount_cents": 1, "reason": "prorated charge: pro"}
    assert credit[1]["args"] == {"customer_id": "cus_x", "amount_cents": -250, "reason": "prorated credit: pro"}
    even = saga_steps("plan_change", {**change, "proration_cents": 0, "seats": 5})
    assert [s["name"] for s in even] == ["change_plan", "adjust_seats", "confirm"]


@pytest.mark.parametrize(
    ("refund", "steps"),
    [
        ({"payment_id": "pay_1", "refund_cents": 1}, ["cancel_subscription", "refund_unused", "schedule_data_jobs"]),
        ({"payment_id": "pay_1", "refund_cents": 0}, ["cancel_subscription", "schedule_data_jobs"]),
        ({"payment_id": "pay_1"}, ["cancel_subscription", "schedule_data_jobs"]),
        ({"payment_id": None, "refund_cents": 500}, ["cancel_subscription", "schedule_data_jobs"]),
    ],
)
def test_a_closure_refunds_only_a_positive_amount_from_a_named_payment(
    refund: dict[str, object], steps: list[str]
) -> None:
    args = {"customer_id": "cus_x", "subscription_id": "sub_1", "request_id": "ar_2", **refund}
    assert [s["name"] for s in saga_steps("account_closure", args)] == [*steps, "confirm"]


def test_an_unknown_change_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown account change 'merge'; known: plan_change, account_closure$"):
        saga_steps("merge", {"customer_id": "cus_x"})


def test_a_renewal_months_ahead_leaves_at_most_one_period() -> None:
    # A renewal date three months ahead (a stale or prepaid record) still bills monthly: the period around
    # AS_OF is Nov 1 - Dec 1, so a closure refunds at most one month and a plan change prorates one month.
    assert unused_share("2027-02-01T00:00:00Z", AS_OF) == (11, 30)
    assert unused_share("2027-01-01T00:00:00Z", AS_OF) == (11, 30)  # two months ahead: walked back month by month
    far = closure_args({**CUSTOMER, "renews_at": "2027-02-01T00:00:00Z"}, [], "ar_3", as_of=AS_OF)
    near = closure_args(CUSTOMER, [], "ar_3", as_of=AS_OF)
    assert far == near


def test_a_day_and_a_second_left_counts_as_two_days() -> None:
    assert unused_share("2026-09-01T00:00:00Z", datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC)) == (2, 30)


def test_a_closure_without_a_refund_needs_only_the_deletion_tier() -> None:
    actions = POLICY.approvals.actions.model_copy(update={"account_deletion": "none"})
    refunds = POLICY.approvals.refunds.model_copy(update={"no_approval_max_cents": 0})
    policy = POLICY.approvals.model_copy(update={"actions": actions, "refunds": refunds})
    assert approval_tier("account_closure", {"customer_id": "c"}, policy) == "none"  # no refund: nothing to pay
    assert approval_tier("account_closure", {"customer_id": "c", "refund_cents": 1}, policy) == "single"
