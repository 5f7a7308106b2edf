"""Every route end to end on the embedded default: the route, the rows written, the reply."""

from __future__ import annotations

import pytest

from tests.conftest import rows
from triage import Ticket, TriageApp
from triage.settings import Settings


def _outbox(settings: Settings, thread_id: str) -> list[dict[str, object]]:
    return rows(settings.helpdesk_path, "SELECT * FROM outbox WHERE thread_id = ?", (thread_id,))


@pytest.mark.parametrize(
    ("customer_id", "amount_cents"),
    [("cus_small_dup", 1900), ("cus_mid_dup", 24000), ("cus_large_dup", 120000)],
)
def test_duplicate_charge_requests_refund_of_the_duplicate(
    app: TriageApp, settings: Settings, customer_id: str, amount_cents: int
) -> None:
    result = app.run(
        Ticket(
            customer_id=customer_id,
            subject="Charged twice",
            body="Hello, I was charged twice for the same thing last month. Please refund the duplicate payment.",
        )
    )
    assert (result.status, result.route, result.intent) == ("completed", "billing", "duplicate_charge")
    [request] = rows(settings.helpdesk_path, "SELECT * FROM refund_requests WHERE thread_id = ?", (result.thread_id,))
    assert request["customer_id"] == customer_id
    assert request["amount_cents"] == amount_cents
    payment = rows(settings.helpdesk_path, "SELECT * FROM payments WHERE id = ?", (request["payment_id"],))[0]
    twins = rows(
        settings.helpdesk_path,
        "SELECT id FROM payments WHERE invoice_id = ? AND amount_cents = ? AND status = 'succeeded' "
        "ORDER BY created_at",
        (payment["invoice_id"], amount_cents),
    )
    assert [t["id"] for t in twins][-1] == request["payment_id"], "the later of the two charges is refunded"
    kinds = [(a.kind, a.amount_cents) for a in result.actions]
    assert kinds == [("refund_request", amount_cents), ("message", None)]
    assert result.proposed_actions[0]["args"]["payment_id"] == request["payment_id"]
    assert f"{amount_cents / 100:,.2f}" in result.reply.body if result.reply else False
    assert len(_outbox(settings, result.thread_id)) == 1


def test_failed_payment_explains_the_decline(app: TriageApp) -> None:
    result = app.run(
        Ticket(customer_id="cus_failed_pay", subject="Payment failed", body="My card payment failed, why?")
    )
    assert (result.route, result.status) == ("billing", "completed")
    assert result.reply is not None and result.reply.template == "billing.failed_payment"


def test_anonymous_billing_question_asks_for_the_account(app: TriageApp, settings: Settings) -> None:
    result = app.run(Ticket(subject="Double charge", body="I think you charged my card twice for my plan this month."))
    assert (result.route, result.status) == ("billing", "completed")
    assert result.reply is not None and result.reply.template == "billing.needs_customer"
    assert result.actions == []
    assert _outbox(settings, result.thread_id) == []


def test_technical_known_issue_answers_with_article_steps(app: TriageApp) -> None:
    result = app.run(
        Ticket(
            customer_id="cus_sync_502",
            subject="Sync stopped working, Error 502",
            body="Since this morning the desktop app says sync paused and the web app shows Error 502.",
        )
    )
    assert (result.route, result.status) == ("technical", "completed")
    assert result.reply is not None and result.reply.template == "technical.kb_answer"
    assert "1." in result.reply.body
    assert [a.kind for a in result.actions] == ["message"]


def test_technical_unknown_issue_opens_engineering_ticket(app: TriageApp, settings: Settings) -> None:
    result = app.run(
        Ticket(
            customer_id="cus_0001",
            subject="Bug: gantt chart renders upside down",
            body="The gantt chart renders upside down when zoomed to quarter view in Firefox. Reproducible every "
            "time, it's a bug in the gantt view.",
        )
    )
    assert (result.route, result.status) == ("technical", "completed")
    [ticket] = rows(settings.helpdesk_path, "SELECT * FROM tickets WHERE thread_id = ?", (result.thread_id,))
    assert ticket["queue"] == "engineering"
    assert ticket["priority"] in ("normal", "high")
    assert result.reply is not None and ticket["id"] in result.reply.body


def test_locked_account_gets_unlock_link(app: TriageApp, settings: Settings) -> None:
    result = app.run(
        Ticket(
            customer_id="cus_locked",
            subject="Locked out",
            body="I forgot my password and now I'm locked out.",
        )
    )
    assert (result.route, result.status) == ("account", "completed")
    [request] = rows(settings.helpdesk_path, "SELECT * FROM account_requests WHERE thread_id = ?", (result.thread_id,))
    assert request["kind"] == "account_unlock"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("Please delete my account and all of my data permanently.", "account_deletion"),
        ("I would like a copy of all the personal data you hold about me (GDPR request).", "data_export"),
        ("I forgot my password, can you send me a reset link?", "password_reset"),
    ],
)
def test_account_requests_are_filed(app: TriageApp, settings: Settings, body: str, kind: str) -> None:
    result = app.run(Ticket(customer_id="cus_0002", subject="", body=body))
    assert (result.route, result.status) == ("account", "completed")
    requests = rows(
        settings.helpdesk_path, "SELECT kind FROM account_requests WHERE thread_id = ?", (result.thread_id,)
    )
    assert requests == [{"kind": kind}]


def test_plan_change_names_the_target_plan(app: TriageApp) -> None:
    result = app.run(
        Ticket(
            customer_id="cus_plan_team",
            subject="Upgrade",
            body="Please upgrade us from Team to the Business plan.",
        )
    )
    assert result.route == "account"
    assert result.reply is not None and "Business" in result.reply.body
    assert [a.details.get("to_plan") for a in result.actions if a.kind == "account_request"] == ["business"]


def test_general_question_answered_from_faq(app: TriageApp) -> None:
    result = app.run(Ticket(subject="Opening hours", body="What are your customer service opening hours?"))
    assert (result.route, result.status) == ("general", "completed")
    assert result.reply is not None and result.reply.template == "general.kb_answer"


def test_angry_legal_threat_is_escalated_with_priority(app: TriageApp, settings: Settings) -> None:
    result = app.run(
        Ticket(
            customer_id="cus_angry",
            subject="THIRD time asking",
            body="This is the THIRD time I write about the double charge. Refund it today or my lawyer will "
            "file a chargeback and I will sue you.",
        )
    )
    assert (result.route, result.status) == ("escalation", "escalated")
    assert "legal_threat" in result.signals
    [ticket] = rows(settings.helpdesk_path, "SELECT * FROM tickets WHERE thread_id = ?", (result.thread_id,))
    assert ticket["queue"] == "human"
    assert ticket["priority"] in ("high", "urgent")
    assert "legal_threat" in ticket["summary"]
    assert rows(settings.helpdesk_path, "SELECT * FROM refund_requests WHERE thread_id = ?", (result.thread_id,)) == []


def test_unclear_ticket_goes_to_a_person(app: TriageApp) -> None:
    result = app.run(Ticket(subject="", body="the thing from last week, still waiting"))
    assert (result.route, result.status) == ("escalation", "escalated")
    assert result.route_reason is not None and "unsure" in result.route_reason


async def test_async_api_runs_concurrently(app: TriageApp) -> None:
    import asyncio

    tickets = [
        Ticket(customer_id="cus_small_dup", subject="Charged twice", body="You charged me twice for my plan."),
        Ticket(subject="Opening hours", body="When is your support team available?"),
        Ticket(customer_id="cus_locked", subject="Locked", body="My account is locked after too many attempts."),
    ]
    results = await asyncio.gather(*(app.arun(t) for t in tickets))
    assert [r.route for r in results] == ["billing", "general", "account"]
    assert len({r.thread_id for r in results}) == 3


def test_off_topic_gets_a_polite_reply_and_no_tool_call(app: TriageApp) -> None:
    result = app.run(Ticket(subject="", body="What's the weather in Paris tomorrow?"))
    assert (result.route, result.status) == ("general", "completed")
    assert result.reply is not None and result.reply.template == "general.off_topic"
    assert result.findings == {} and result.actions == []


def test_vague_account_complaint_files_nothing(app: TriageApp, settings: Settings) -> None:
    result = app.run(Ticket(customer_id="cus_0002", subject="account", body="Something is wrong with my account"))
    assert result.route in ("account", "escalation")
    assert rows(settings.helpdesk_path, "SELECT * FROM account_requests WHERE thread_id = ?", (result.thread_id,)) == []


def test_outage_opens_a_high_priority_engineering_ticket(app: TriageApp, settings: Settings) -> None:
    result = app.run(
        Ticket(
            customer_id="cus_0001",
            subject="Everything is down",
            body="Northwind is down for our whole team, nobody can log in or load any page. Production is down!",
        )
    )
    assert (result.route, result.intent) == ("technical", "outage")
    [ticket] = rows(
        settings.helpdesk_path, "SELECT queue, priority FROM tickets WHERE thread_id = ?", (result.thread_id,)
    )
    assert ticket["queue"] == "engineering" and ticket["priority"] in ("high", "urgent")
    assert result.reply is not None and result.reply.template == "technical.outage_ticket"


def test_profile_update_is_recorded_as_such(app: TriageApp) -> None:
    result = app.run(
        Ticket(
            customer_id="cus_0003", subject="Newsletter", body="Please unsubscribe me from the marketing newsletter."
        )
    )
    assert result.route == "account"
    assert [a.details["request"] for a in result.actions if a.kind == "account_request"] == ["profile_update"]
