"""The draft verifier on its own: facts kept, nothing promised, nothing leaked."""

from __future__ import annotations

import pytest

from triage.models.verifier import Verdict, verify_draft, verify_summary

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


# -- release summaries ---------------------------------------------------------------------------------------------

RELEASE_NOTES = "Version 2.4.1 fixes the gantt chart in quarter view. CSV exports keep all 3 header rows."


@pytest.mark.parametrize(
    "summary",
    [
        "The gantt chart works in quarter view again.",
        "Version 2.4.1 fixes the gantt chart; CSV exports keep all 3 header rows.",
        "v2.4.1 fixes the gantt chart.",
    ],
)
def test_a_summary_may_leave_facts_out(summary: str) -> None:
    assert verify_summary(RELEASE_NOTES, summary) == Verdict(True)


@pytest.mark.parametrize(
    ("summary", "finding"),
    [
        ("Version 2.5 fixes the gantt chart.", "version '2.5' that the notes do not contain"),
        ("The gantt chart is fixed; 4 header rows are kept.", "number '4' that the notes do not contain"),
        ("The gantt chart is fixed and we will refund you.", "commitment 'we will' that the notes do not make"),
        ("Fixed within a day, see https://example.com/x.", "link 'https://example.com/x'"),
        ("The gantt chart is fixed. [internal note: check]", "leaked placeholder or note"),
        ("   ", "the summary is empty"),
        ("The gantt chart is fixed. " * 40, "characters long (600 at most)"),
    ],
)
def test_a_summary_may_not_add_a_version_number_promise_or_note(summary: str, finding: str) -> None:
    verdict = verify_summary(RELEASE_NOTES, summary)
    assert not verdict.ok and any(finding in f for f in verdict.findings), verdict.findings
