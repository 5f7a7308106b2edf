"""Pure rules for account requests: which changes need the customer's explicit words before anything is filed."""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time
from typing import Any

from triage.policies.billing import refundable_cents

# Irreversible or data-releasing requests are only filed when the ticket asks for them in so many words; a
# classifier's guess ("something is wrong with my account" -> account_deletion) is not enough.
_EXPLICIT: dict[str, re.Pattern[str]] = {
    "account_deletion": re.compile(
        r"\b(delet\w*|clos\w*|erase|erasure|remov\w*|terminat\w*|cancel\w*|shut down)\b[^.?!\n]{0,40}"
        r"\b(account|profile|data|workspace|everything|me)\b|\bright to (be forgotten|erasure)\b"
        r"|\b(account|data|profile)\b[^.?!\n]{0,30}\b(delet\w*|erase\w*|remov\w*|clos\w*)\b",
        re.IGNORECASE,
    ),
    "data_export": re.compile(
        r"\b(export\w*|copy|copies|download\w*|send me|access request|portability|dsar|takeout)\b[^.?!\n]{0,40}"
        r"\b(data|information|everything|files|account)\b|\bsubject access\b|\b(data|information) (export|request)\b",
        re.IGNORECASE,
    ),
}


def needs_explicit_request(kind: str) -> bool:
    """Whether `kind` is only filed on an explicit request."""
    return kind in _EXPLICIT


def explicitly_requested(kind: str, text: str) -> bool:
    """Whether the ticket asks for `kind` in so many words (always true for kinds without the rule)."""
    pattern = _EXPLICIT.get(kind)
    return pattern is None or pattern.search(text) is not None


# -- multi-step account changes -------------------------------------------------------------------------------

SAGA_KINDS = ("plan_change", "account_closure")
"""The proposed actions carried out as a sequence of compensable steps (the `account_change` graph)."""
_SEATS = re.compile(r"\bup to (\d+) members\b", re.IGNORECASE)


def included_seats(plan_description: str) -> int | None:
    """The members a plan includes ('Up to 25 members'), or None when it sets no limit."""
    match = _SEATS.search(plan_description)
    return int(match.group(1)) if match else None


def _add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def unused_share(renews_at: str | None, as_of: datetime) -> tuple[int, int]:
    """Days left of the current monthly period at `as_of` (a day begun counts), and the period's length in days.

    The period ends on the first date after `as_of` that is a whole number of months from `renews_at`, before or
    after it (a subscription keeps renewing monthly, so a renewal date months ahead still leaves one period at most);
    without a renewal date nothing is left: (0, 30).
    """
    if not renews_at:
        return 0, 30
    end = datetime.fromisoformat(renews_at.replace("Z", "+00:00"))
    if end.tzinfo is None:
        end = end.replace(tzinfo=as_of.tzinfo)
    step = 0
    while _add_months(end, step) <= as_of:
        step += 1
    while _add_months(end, step - 1) > as_of:
        step -= 1
    period_end, period_start = _add_months(end, step), _add_months(end, step - 1)
    return math.ceil((period_end - as_of).total_seconds() / 86400), (period_end - period_start).days


def billing_moment(billing_date: date | None) -> datetime:
    """The instant billing arithmetic is done as of: noon UTC of `billing_date` (`Settings.billing_date`), or now."""
    if billing_date is None:
        return datetime.now(UTC)
    return datetime.combine(billing_date, time(12), tzinfo=UTC)


def prorated_cents(monthly_cents: int, days_left: int, period_days: int) -> int:
    """The part of a month's price for the days left, rounded to the cent."""
    return round(monthly_cents * days_left / period_days) if period_days > 0 else 0


def plan_change_args(
    customer: Mapping[str, Any], target: Mapping[str, Any], request_id: str, *, as_of: datetime
) -> dict[str, Any]:
    """The arguments of a plan change: plans, the prorated charge (+) or credit (-) and the new plan's seats."""
    days_left, period = unused_share(customer.get("renews_at"), as_of)
    current_price = int(customer.get("monthly_price_cents") or 0)
    difference = int(target["monthly_price_cents"]) - current_price
    return {
        "customer_id": customer["id"],
        "request_id": request_id,
        "subscription_id": customer["subscription_id"],
        "from_plan": customer.get("plan_id"),
        "to_plan": target["id"],
        "proration_cents": prorated_cents(abs(difference), days_left, period) * (1 if difference >= 0 else -1),
        "seats": included_seats(str(target.get("description", ""))),
    }


def refund_source(payments: Sequence[Mapping[str, Any]], amount_cents: int, *, prefer: str | None = None) -> str | None:
    """The payment to refund `amount_cents` from: `prefer` while it has that much left, else the first that has.

    `payments` come newest first. What a payment has left is what it has to refund (`refundable_cents`) less
    `requested_cents`, what open refund requests are to refund from it. None when no payment has enough left: a
    refund is never split over payments.
    """
    enough = [
        str(p["id"]) for p in payments if refundable_cents(p) - int(p.get("requested_cents") or 0) >= amount_cents
    ]
    return prefer if prefer in enough else next(iter(enough), None)


def closure_args(
    customer: Mapping[str, Any], payments: Sequence[Mapping[str, Any]], request_id: str, *, as_of: datetime
) -> dict[str, Any]:
    """The arguments of an account closure: the subscription and the refund of its unused period, if any.

    The refund is planned from the newest payment that still has that much to refund (`refund_source`); the step
    that refunds it chooses again from what is left when it runs.
    """
    days_left, period = unused_share(customer.get("renews_at"), as_of)
    refund = prorated_cents(int(customer.get("monthly_price_cents") or 0), days_left, period)
    payment = refund_source(payments, refund)
    active = customer.get("subscription_status") in ("active", "trialing", "past_due")
    return {
        "customer_id": customer["id"],
        "request_id": request_id,
        "subscription_id": customer["subscription_id"] if active else None,
        "payment_id": payment if payment is not None and refund > 0 and active else None,
        "refund_cents": refund if payment is not None and active else 0,
    }


def saga_steps(kind: str, args: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The steps of a multi-step change, in order: each a name, the tool that performs it and its arguments.

    A plan change: change the subscription, post the prorated charge or credit, adjust the seats, confirm. An
    account closure: cancel the subscription, refund the unused period, schedule the data export and deletion,
    confirm. Steps with nothing to do (no difference to prorate, no refund) are left out.
    """
    customer = args["customer_id"]
    steps: list[dict[str, Any]] = []

    def step(name: str, tool: str, **tool_args: Any) -> None:
        steps.append({"name": name, "tool": tool, "args": {"customer_id": customer, **tool_args}})

    if kind == "plan_change":
        step("change_plan", "change_subscription", subscription_id=args["subscription_id"], to_plan=args["to_plan"])
        amount = int(args["proration_cents"])
        if amount:
            what = "charge" if amount > 0 else "credit"
            step("prorate", "post_account_credit", amount_cents=amount, reason=f"prorated {what}: {args['to_plan']}")
        if args.get("seats"):
            step("adjust_seats", "adjust_seats", subscription_id=args["subscription_id"], seats=int(args["seats"]))
        step("confirm", "confirm_account_change", request_id=args["request_id"])
    elif kind == "account_closure":
        if args.get("subscription_id"):
            step("cancel_subscription", "change_subscription", subscription_id=args["subscription_id"], cancel=True)
        if args.get("payment_id") and int(args.get("refund_cents", 0)) > 0:
            step(
                "refund_unused",
                "refund_unused_period",
                payment_id=args["payment_id"],
                amount_cents=int(args["refund_cents"]),
            )
        step("schedule_data_jobs", "schedule_data_jobs")
        step("confirm", "confirm_account_change", request_id=args["request_id"], close_account=True)
    else:
        raise ValueError(f"unknown account change {kind!r}; known: {', '.join(SAGA_KINDS)}")
    return steps
