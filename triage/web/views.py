"""Reading what the app API returns, whatever its shape: plain dicts today, pydantic models tomorrow."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from triage.policies.billing import format_money


def field(item: Any, name: str, default: Any = None) -> Any:
    """`item[name]` for a mapping, `item.name` for an object (a pydantic model), else `default`."""
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


@dataclass(frozen=True)
class ApprovalRow:
    """One pending approval as the inbox shows it."""

    approval_id: str
    thread_id: str
    action: str
    args: dict[str, Any]
    tier: str
    approvals_required: int
    approvals_received: list[str]
    description: str
    evidence: dict[str, Any]
    requested_at: str
    expires_at: str
    overdue: bool
    follow_ups: list[dict[str, str]] = dataclass_field(default_factory=list)
    """Messages the customer sent on this conversation while it waited (at, message)."""

    @classmethod
    def of(cls, pending: Any, *, now: datetime | None = None) -> ApprovalRow:
        """Read a pending approval (a dict from today's API, or a `PendingApproval` model)."""
        expires_at = str(field(pending, "expires_at", ""))
        overdue = field(pending, "overdue")
        if overdue is None:
            overdue = bool(expires_at) and datetime.fromisoformat(expires_at) <= (now or datetime.now(UTC))
        return cls(
            approval_id=str(field(pending, "approval_id")),
            thread_id=str(field(pending, "thread_id")),
            action=str(field(pending, "action")),
            args=dict(field(pending, "args") or {}),
            tier=str(field(pending, "tier")),
            approvals_required=int(field(pending, "approvals_required", 1)),
            approvals_received=list(field(pending, "approvals_received") or []),
            description=str(field(pending, "description", "")),
            evidence=dict(field(pending, "evidence") or {}),
            requested_at=str(field(pending, "requested_at", "")),
            expires_at=expires_at,
            overdue=bool(overdue),
            follow_ups=[
                {"at": str(field(f, "at", "")), "message": str(field(f, "message", ""))}
                for f in field(pending, "follow_ups") or []
            ],
        )

    @property
    def customer_id(self) -> str | None:
        """The customer the action is for."""
        found = self.args.get("customer_id") or self.evidence.get("customer_id")
        return str(found) if found else None

    @property
    def amount_cents(self) -> int | None:
        """The refund amount, for refunds."""
        amount = self.args.get("amount_cents")
        return int(amount) if isinstance(amount, int) else None

    @property
    def amount(self) -> str:
        """The refund amount as money, or ''."""
        return format_money(self.amount_cents) if self.amount_cents is not None else ""

    @property
    def amount_units(self) -> str:
        """The refund amount in the currency's units (dollars), as an edit field shows it."""
        return f"{self.amount_cents / 100:.2f}" if self.amount_cents is not None else ""

    @property
    def still_needed(self) -> int:
        """Approvals still needed."""
        return max(self.approvals_required - len(self.approvals_received), 0)


def money(cents: Any) -> str:
    """Cents as money, '' for anything that is not a whole number."""
    return format_money(cents) if isinstance(cents, int) and not isinstance(cents, bool) else ""


def cents_from_units(text: str) -> int:
    """A positive amount in the currency's units ('120', '120.50') as whole cents.

    Raises:
        ValueError: not a positive amount with at most two decimals.
    """
    cleaned = text.strip().replace(",", "").removeprefix("$")
    if not re.fullmatch(r"\d{1,9}(\.\d{1,2})?", cleaned):
        raise ValueError(f"{text!r} is not an amount in dollars with at most two decimals, e.g. 120.50")
    cents = int(Decimal(cleaned) * 100)
    if cents <= 0:
        raise ValueError(f"{text!r} is not a positive amount, e.g. 120.50")
    return cents
