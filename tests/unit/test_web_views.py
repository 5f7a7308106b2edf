"""The inbox reads pending approvals as dicts (today's API) or as pydantic models (an indexed API) alike."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from triage.web.store import hash_password, verify_password
from triage.web.views import ApprovalRow, cents_from_units

PENDING: dict[str, Any] = {
    "approval_id": "apr_1",
    "thread_id": "thr_1",
    "action": "refund",
    "args": {"amount_cents": 24000, "payment_id": "pay_12", "customer_id": "cus_mid_dup"},
    "tier": "dual",
    "approvals_required": 2,
    "approvals_received": ["alice"],
    "description": "Approve: refund $240.00",
    "evidence": {"reason": "duplicate", "customer_id": "cus_mid_dup"},
    "requested_at": "2026-01-01T00:00:00+00:00",
    "expires_at": "2026-01-02T00:00:00+00:00",
    "overdue": True,
}


class PendingModel(BaseModel):
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
    version: int = 3


def test_dicts_and_models_read_the_same() -> None:
    from_dict = ApprovalRow.of(PENDING)
    assert from_dict == ApprovalRow.of(PendingModel(**PENDING))
    assert (from_dict.amount, from_dict.amount_units, from_dict.still_needed) == ("$240.00", "240.00", 1)
    assert from_dict.customer_id == "cus_mid_dup" and from_dict.overdue


def test_overdue_is_computed_when_the_api_does_not_say() -> None:
    row = ApprovalRow.of({k: v for k, v in PENDING.items() if k != "overdue"})
    assert row.overdue  # expired in 2026-01-02, long before the test runs


@pytest.mark.parametrize(("text", "cents"), [("120", 12000), ("120.5", 12050), ("$1,200.00", 120000), ("0.01", 1)])
def test_amounts_in_dollars_become_cents(text: str, cents: int) -> None:
    assert cents_from_units(text) == cents


@pytest.mark.parametrize("text", ["", "abc", "0", "-5", "1.234", "nan", "inf", "1e400"])
def test_bad_amounts_are_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 120\.50"):
        cents_from_units(text)


def test_password_hashes_are_salted_and_verify() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second and first.startswith("scrypt$") and "correct" not in first
    assert verify_password("correct horse", first) and not verify_password("wrong horse", first)
    assert not verify_password("correct horse", "garbage")
