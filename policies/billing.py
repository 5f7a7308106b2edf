"""Pure readings of a customer's billing history: duplicate charges, failed payments, refundable amounts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from triage.policies.bundle import BillingRules


@dataclass(frozen=True)
class DuplicateCharge:
    """A successful payment that repeats an earlier one; the later payment is the one to refund."""

    duplicate_id: str
    original_id: str
    amount_cents: int
    invoice_id: str | None
    paid_on: str


def refundable_cents(payment: Mapping[str, Any]) -> int:
    """What is left to refund on a payment (0 for failed or fully refunded ones)."""
    if payment["status"] == "failed":
        return 0
    return max(0, int(payment["amount_cents"]) - int(payment.get("refunded_cents") or 0))


def find_duplicate_charges(
    payments: Sequence[Mapping[str, Any]],
    rules: BillingRules,
    *,
    already_requested: frozenset[str] = frozenset(),
    settled: bool = False,
) -> list[DuplicateCharge]:
    """Find successful charges that repeat an earlier charge of the same amount, newest first.

    Two charges of the same amount and currency are duplicates when they share an invoice, or both have no invoice
    and fall within `rules.duplicate_window_hours` of each other. A duplicate already refunded or with an open
    refund request (`already_requested`) is not reported again; with `settled=True` only those are reported.
    """
    charged = sorted(
        (p for p in payments if p["status"] != "failed"), key=lambda p: (str(p["created_at"]), str(p["id"]))
    )
    duplicates: list[DuplicateCharge] = []
    for index, later in enumerate(charged):
        for earlier in charged[:index]:
            if (earlier["amount_cents"], earlier.get("currency")) != (later["amount_cents"], later.get("currency")):
                continue
            invoice = later.get("invoice_id")
            same_invoice = invoice is not None and invoice == earlier.get("invoice_id")
            close = (
                invoice is None
                and earlier.get("invoice_id") is None
                and _hours_between(earlier, later) <= rules.duplicate_window_hours
            )
            if not (same_invoice or close):
                continue
            handled = refundable_cents(later) < int(later["amount_cents"]) or later["id"] in already_requested
            if handled != settled:
                break
            duplicates.append(
                DuplicateCharge(
                    duplicate_id=str(later["id"]),
                    original_id=str(earlier["id"]),
                    amount_cents=int(later["amount_cents"]),
                    invoice_id=later.get("invoice_id"),
                    paid_on=str(later["created_at"])[:10],
                )
            )
            break
    return sorted(duplicates, key=lambda d: d.paid_on, reverse=True)


def latest_failed_payment(payments: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most recent failed payment, if the customer's latest charge attempt failed."""
    ordered = sorted(payments, key=lambda p: (str(p["created_at"]), str(p["id"])), reverse=True)
    if ordered and ordered[0]["status"] == "failed":
        return ordered[0]
    return None


def latest_refundable_payment(payments: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most recent payment that still has money to refund."""
    ordered = sorted(payments, key=lambda p: (str(p["created_at"]), str(p["id"])), reverse=True)
    return next((p for p in ordered if refundable_cents(p) > 0), None)


def format_money(cents: int, currency: str = "usd") -> str:
    """$1,200.00 style amounts (other currencies as '1,200.00 EUR')."""
    amount = f"{cents / 100:,.2f}"
    return f"${amount}" if currency.lower() == "usd" else f"{amount} {currency.upper()}"


def _hours_between(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    start = datetime.fromisoformat(str(a["created_at"]).replace("Z", "+00:00"))
    end = datetime.fromisoformat(str(b["created_at"]).replace("Z", "+00:00"))
    return abs((end - start).total_seconds()) / 3600
