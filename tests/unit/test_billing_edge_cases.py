"""The readings of a billing history that decide whether money goes back: each case a reviewer would try."""

from __future__ import annotations

from typing import Any

import pytest

from triage.policies import load_policy_bundle
from triage.policies.billing import (
    DuplicateCharge,
    find_duplicate_charges,
    format_money,
    latest_failed_payment,
    latest_refundable_payment,
    refundable_cents,
)

RULES = load_policy_bundle().support.billing


def pay(
    pid: str,
    amount: int,
    at: str,
    invoice: str | None = None,
    *,
    status: str = "succeeded",
    refunded: int | None = 0,
    currency: str = "usd",
) -> dict[str, Any]:
    return {
        "id": pid,
        "amount_cents": amount,
        "created_at": at,
        "invoice_id": invoice,
        "status": status,
        "refunded_cents": refunded,
        "currency": currency,
    }


def duplicates(payments: list[dict[str, Any]], **kwargs: Any) -> list[tuple[str, str]]:
    return [(d.duplicate_id, d.original_id) for d in find_duplicate_charges(payments, RULES, **kwargs)]


def test_failed_charge_then_successful_retry_on_the_same_invoice_is_not_a_duplicate() -> None:
    # The card was declined, the retry went through: the customer paid once and must not be refunded.
    history = [
        pay("pay_1", 4900, "2026-08-10T07:00:00Z", "in_8", status="failed"),
        pay("pay_2", 4900, "2026-08-13T07:00:00Z", "in_8"),
    ]
    assert duplicates(history) == []
    assert latest_refundable_payment(history) == history[1]
    assert latest_failed_payment(history) is None


def test_several_failed_attempts_then_one_success_is_not_a_duplicate() -> None:
    history = [
        pay("pay_1", 4900, "2026-08-10T07:00:00Z", None, status="failed"),
        pay("pay_2", 4900, "2026-08-10T08:00:00Z", None, status="failed"),
        pay("pay_3", 4900, "2026-08-10T09:00:00Z", None),
    ]
    assert duplicates(history) == []


def test_success_then_failed_retry_is_not_a_duplicate() -> None:
    history = [
        pay("pay_1", 4900, "2026-08-10T07:00:00Z", "in_8"),
        pay("pay_2", 4900, "2026-08-10T07:05:00Z", "in_8", status="failed"),
    ]
    assert duplicates(history) == []


def test_two_successful_charges_on_one_invoice_are_a_duplicate_whatever_the_gap() -> None:
    history = [
        pay("pay_1", 1900, "2026-08-01T10:00:00Z", "in_1"),
        pay("pay_2", 1900, "2026-08-20T10:00:00Z", "in_1"),
    ]
    [found] = find_duplicate_charges(history, RULES)
    assert found == DuplicateCharge(
        duplicate_id="pay_2", original_id="pay_1", amount_cents=1900, invoice_id="in_1", paid_on="2026-08-20"
    )


def test_same_amount_on_different_invoices_is_not_a_duplicate() -> None:
    history = [
        pay("pay_1", 1900, "2026-08-01T10:00:00Z", "in_1"),
        pay("pay_2", 1900, "2026-08-01T10:02:00Z", "in_2"),  # two invoices, minutes apart
    ]
    assert duplicates(history) == []
    # One with an invoice, one without: not the same bill either.
    assert duplicates([history[0], pay("pay_3", 1900, "2026-08-01T10:03:00Z", None)]) == []


def test_different_amounts_are_not_a_duplicate() -> None:
    history = [
        pay("pay_1", 1900, "2026-08-01T10:00:00Z", "in_1"),
        pay("pay_2", 1901, "2026-08-01T10:01:00Z", "in_1"),
    ]
    assert duplicates(history) == []


def test_same_amount_in_another_currency_is_not_a_duplicate() -> None:
    history = [
        pay("pay_1", 1900, "2026-08-01T10:00:00Z", None, currency="usd"),
        pay("pay_2", 1900, "2026-08-01T10:01:00Z", None, currency="eur"),
    ]
    assert duplicates(history) == []
    assert duplicates([history[1], pay("pay_3", 1900, "2026-08-01T10:02:00Z", None, currency="eur")]) == [
        ("pay_3", "pay_2")
    ]


@pytest.mark.parametrize(
    ("second_at", "duplicate"),
    [
        ("2026-08-04T09:59:59Z", True),
        ("2026-08-04T10:00:00Z", True),  # exactly duplicate_window_hours (72) apart
        ("2026-08-04T10:00:01Z", False),  # one second more
        ("2026-08-04T11:00:00Z", False),
    ],
)
def test_window_for_charges_without_an_invoice(second_at: str, duplicate: bool) -> None:
    history = [pay("pay_1", 500, "2026-08-01T10:00:00Z"), pay("pay_2", 500, second_at)]
    assert duplicates(history) == ([("pay_2", "pay_1")] if duplicate else [])


def test_window_is_symmetric_and_reads_offsets() -> None:
    # Same instant written two ways: 12:00+02:00 is 10:00Z.
    history = [pay("pay_1", 500, "2026-08-01T10:00:00Z"), pay("pay_2", 500, "2026-08-04T12:00:00+02:00")]
    assert duplicates(history) == [("pay_2", "pay_1")]


def test_partially_refunded_duplicate_is_not_reported_again() -> None:
    history = [
        pay("pay_1", 24000, "2026-08-19T11:20:00Z", "in_5"),
        pay("pay_2", 24000, "2026-08-19T11:24:00Z", "in_5", refunded=1),
    ]
    assert duplicates(history) == []
    assert refundable_cents(history[1]) == 23999


def test_pending_refund_counts_as_refunded() -> None:
    # list_payments sums every refund that has not failed, pending ones included, into refunded_cents.
    history = [
        pay("pay_1", 24000, "2026-08-19T11:20:00Z", "in_5"),
        pay("pay_2", 24000, "2026-08-19T11:24:00Z", "in_5", refunded=24000),
    ]
    assert duplicates(history) == []
    assert refundable_cents(history[1]) == 0


def test_open_refund_request_is_not_requested_twice() -> None:
    history = [
        pay("pay_1", 24000, "2026-08-19T11:20:00Z", "in_5"),
        pay("pay_2", 24000, "2026-08-19T11:24:00Z", "in_5"),
    ]
    assert duplicates(history, already_requested=frozenset({"pay_2"})) == []
    assert duplicates(history, already_requested=frozenset({"pay_1"})) == [("pay_2", "pay_1")]


def test_a_triple_charge_reports_each_extra_payment_once_newest_first() -> None:
    history = [
        pay("pay_1", 1900, "2026-08-01T10:00:00Z", "in_1"),
        pay("pay_3", 1900, "2026-08-03T10:00:00Z", "in_1"),
        pay("pay_2", 1900, "2026-08-02T10:00:00Z", "in_1"),
    ]
    assert duplicates(history) == [("pay_3", "pay_1"), ("pay_2", "pay_1")]


def test_charges_at_the_same_instant_are_ordered_by_id() -> None:
    history = [pay("pay_b", 700, "2026-08-01T10:00:00Z", "in_1"), pay("pay_a", 700, "2026-08-01T10:00:00Z", "in_1")]
    assert duplicates(history) == [("pay_b", "pay_a")]


@pytest.mark.parametrize(
    ("payment", "left"),
    [
        (pay("p", 1000, "2026-01-01T00:00:00Z"), 1000),
        (pay("p", 1000, "2026-01-01T00:00:00Z", refunded=None), 1000),
        (pay("p", 1000, "2026-01-01T00:00:00Z", refunded=400), 600),
        (pay("p", 1000, "2026-01-01T00:00:00Z", refunded=1000), 0),
        (pay("p", 1000, "2026-01-01T00:00:00Z", refunded=1200), 0),
        (pay("p", 1000, "2026-01-01T00:00:00Z", status="failed"), 0),
        ({"amount_cents": 1000, "status": "succeeded"}, 1000),
    ],
)
def test_refundable_cents(payment: dict[str, Any], left: int) -> None:
    assert refundable_cents(payment) == left


def test_latest_refundable_payment_skips_refunded_and_failed_ones() -> None:
    older = pay("pay_1", 1000, "2026-07-01T00:00:00Z")
    refunded = pay("pay_2", 1000, "2026-08-01T00:00:00Z", refunded=1000)
    failed = pay("pay_3", 1000, "2026-09-01T00:00:00Z", status="failed")
    assert latest_refundable_payment([refunded, older, failed]) == older
    assert latest_refundable_payment([refunded, failed]) is None
    assert latest_refundable_payment([]) is None
    tie = pay("pay_0", 1000, "2026-07-01T00:00:00Z")
    assert latest_refundable_payment([tie, older]) == older  # same time: the higher id is the later one


def test_latest_failed_payment_ties_and_empty() -> None:
    assert latest_failed_payment([]) is None
    failed = pay("pay_2", 1000, "2026-09-01T00:00:00Z", status="failed")
    ok_same_time = pay("pay_1", 1000, "2026-09-01T00:00:00Z")
    assert latest_failed_payment([ok_same_time, failed]) == failed
    assert latest_failed_payment([failed, pay("pay_3", 1000, "2026-09-01T00:00:00Z")]) is None


@pytest.mark.parametrize(
    ("cents", "currency", "text"),
    [
        (0, "usd", "$0.00"),
        (5, "usd", "$0.05"),
        (5000, "usd", "$50.00"),
        (5001, "USD", "$50.01"),
        (120000, "usd", "$1,200.00"),
        (990, "eur", "9.90 EUR"),
        (123456789, "gbp", "1,234,567.89 GBP"),
    ],
)
def test_format_money(cents: int, currency: str, text: str) -> None:
    assert format_money(cents, currency) == text
    if currency == "usd":
        assert format_money(cents) == text


def test_latest_refundable_payment_goes_by_time_before_id() -> None:
    newer = pay("pay_1", 1000, "2026-09-01T00:00:00Z")
    older = pay("pay_9", 1000, "2026-07-01T00:00:00Z")
    assert latest_refundable_payment([older, newer]) == newer


def test_one_cent_left_is_still_refundable() -> None:
    almost = pay("pay_1", 1000, "2026-09-01T00:00:00Z", refunded=999)
    assert latest_refundable_payment([almost]) == almost


def test_the_later_charge_is_the_duplicate_whatever_the_ids() -> None:
    history = [
        pay("pay_9", 1900, "2026-08-01T10:00:00Z", "in_1"),
        pay("pay_1", 1900, "2026-08-01T10:03:00Z", "in_1"),  # charged later, with the lower id
    ]
    assert duplicates(history) == [("pay_1", "pay_9")]
