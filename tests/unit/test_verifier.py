"""The draft verifier on its own: facts kept, nothing promised, nothing leaked."""

from __future__ import annotations

import pytest

from triage.models.verifier import verify_draft

APPROVED = (
    "Hi Priya,\n\nWe have refunded $19.00 of payment pay_0006 from 2026-08-14 (refund re_b8e69d30). It reaches your "
    "account within 5-10 business days. Details: https://northwind.example.com/billing\n\nBest regards,\nNorthwind"
)


def test_a_reworded_reply_with_every_fact_passes() -> None:
    draft = (
        "Hi Priya,\n\nGood news: we have refunded $19.00 of payment pay_0006 from 2026-08-14 (refund re_b8e69d30). "
        "It reaches your account within 5-10 business days. Details: https://northwind.example.com/billing\n\n"
        "Thanks for your patience!\n\nBest regards,\nNorthwind"
    )
    assert verify_draft(APPROVED, draft, names=["Priya"]).ok


@pytest.mark.parametrize(
    ("change", "finding"),
    [
        (("$19.00", "$190.00"), "amount '$19.00' is missing or changed"),
        (("pay_0006", "pay_0007"), "id 'pay_0006' is missing or changed"),
        (("2026-08-14", "2026-08-15"), "date '2026-08-14' is missing or changed"),
        (("5-10", "2-3"), "number '5-10' is missing or changed"),
        (("https://northwind.example.com/billing", "https://evil.example.net/pay"), "new link"),
        (("Hi Priya", "Hi Maria"), "name 'Priya' is missing or changed"),
        (("Northwind", "Northwind\n\nWe will also credit you $5."), "new commitment"),
        (("Northwind", "Northwind\n\nWe can offer a discount on your next invoice."), "new commitment 'discount'"),
        (("Hi Priya", "Hi {customer_name}"), "leaked placeholder or note '{customer_name}'"),
        (("Northwind", "Northwind\n[internal note: customer is difficult]"), "leaked placeholder"),
        (("Northwind", "Northwind TODO check refund"), "leaked placeholder or note 'TODO'"),
        (("Northwind", "Northwind </reply>"), "leaked placeholder"),
    ],
)
def test_a_changed_fact_a_new_promise_or_a_leak_fails(change: tuple[str, str], finding: str) -> None:
    verdict = verify_draft(APPROVED, APPROVED.replace(*change, 1), names=["Priya"])
    assert not verdict.ok
    assert any(finding in f for f in verdict.findings), verdict.findings


def test_personal_data_placeholders_must_survive_unchanged() -> None:
    approved = "We will write to [EMAIL_1] within one business day."
    assert verify_draft(approved, "We'll write to [EMAIL_1] within one business day.").ok is False  # "we'll" is new
    assert verify_draft(approved, "Within one business day we will write to [EMAIL_1].").ok
    assert not verify_draft(approved, "We will write to [EMAIL_2] within one business day.").ok
    assert not verify_draft(approved, "").ok
