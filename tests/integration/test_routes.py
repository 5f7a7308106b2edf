"""Every route end to end on the embedded default: the route, the rows written, the reply."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import rows
from triage import Ticket, TriageApp
from triage.models.tier import LocalModelTier, UsageSink
from triage.settings import Settings
from triage.state import Classification


def _outbox(settings: Settings, thread_id: str) -> list[dict[str, object]]:
    return rows(settings.helpdesk_path, "SELECT * FROM outbox WHERE thread_id = ?", (thread_id,))


def test_small_duplicate_charge_is_refunded_without_approval(app: TriageApp, settings: Settings) -> None:
    result = app.run(
        Ticket(
            customer_id="cus_small_dup", subject="Charged twice", body="I was charged twice for my plan, refund one."
        )
    )
    assert (result.status, result.route, result.intent) == ("completed", "billing", "duplicate_charge")
    assert [(a.kind, a.amount_cents) for a in result.actions] == [
        ("refund_request", 1900),
        ("refund", 1900),
        ("message", None),
    ]
    [refund] = rows(settings.helpdesk_path, "SELECT * FROM refunds WHERE thread_id = ?", (result.thread_id,))
    assert refund["amount_cents"] == 1900 and refund["status"] == "succeeded"
    twins = rows(
        settings.helpdesk_path,
        "SELECT id, status FROM payments WHERE invoice_id = (SELECT invoice_id FROM payments WHERE id = ?) "
        "ORDER BY created_at",
        (refund["payment_id"],),
    )
    assert [t["status"] for t in twins] == ["succeeded", "refunded"], "the later of the two charges is refunded"
    assert result.reply is not None and result.reply.template == "billing.duplicate_refunded"
    assert refund["id"] in result.reply.body
    assert len(_outbox(settings, result.thread_id)) == 1


@pytest.mark.parametrize(
    ("customer_id", "amount_cents", "tier"), [("cus_mid_dup", 24000, "single"), ("cus_large_dup", 120000, "dual")]
)
def test_larger_duplicate_charges_wait_for_approval(
    app: TriageApp, settings: Settings, customer_id: str, amount_cents: int, tier: str
) -> None:
    result = app.run(
        Ticket(customer_id=customer_id, subject="Charged twice", body="You charged me twice for the same order.")
    )
    assert (result.status, result.route) == ("awaiting_approval", "billing")
    assert result.pending_approval is not None
    assert (result.pending_approval["tier"], result.pending_approval["args"]["amount_cents"]) == (tier, amount_cents)
    [request] = rows(settings.helpdesk_path, "SELECT * FROM refund_requests WHERE thread_id = ?", (result.thread_id,))
    assert request["status"] == "requested"
    assert rows(settings.helpdesk_path, "SELECT * FROM refunds WHERE thread_id = ?", (result.thread_id,)) == []
    assert _outbox(settings, result.thread_id) == []


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
    ("body", "kind", "status"),
    [
        ("Please delete my account and all of my data permanently.", "account_deletion", "awaiting_approval"),
        (
            "I would like a copy of all the personal data you hold about me (GDPR request).",
            "data_export",
            "awaiting_approval",
        ),
        ("I forgot my password, can you send me a reset link?", "password_reset", "completed"),
    ],
)
def test_account_requests_are_filed(app: TriageApp, settings: Settings, body: str, kind: str, status: str) -> None:
    result = app.run(Ticket(customer_id="cus_0002", subject="", body=body))
    assert (result.route, result.status) == ("account", status)
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


class BarrierTier(LocalModelTier):
    """The local tier, holding every classification at a barrier until `parties` runs have reached it."""

    def __init__(self, cache_dir: Path, parties: int) -> None:
        super().__init__(cache_dir)
        self.barrier = asyncio.Barrier(parties)
        self.spans: list[tuple[float, float]] = []

    async def classify(self, text: str, *, usage: UsageSink | None = None) -> Classification:
        started = time.monotonic()
        # Runs taken one after another would never fill the barrier: the wait times out and the run fails.
        await asyncio.wait_for(self.barrier.wait(), timeout=30)
        result = await super().classify(text, usage=usage)
        self.spans.append((started, time.monotonic()))
        return result


async def test_async_api_runs_concurrently(settings: Settings) -> None:
    tickets = [
        Ticket(customer_id="cus_small_dup", subject="Charged twice", body="You charged me twice for my plan."),
        Ticket(subject="Opening hours", body="When is your support team available?"),
        Ticket(customer_id="cus_locked", subject="Locked", body="My account is locked after too many attempts."),
    ]
    tier = BarrierTier(settings.cache_dir, parties=len(tickets))
    app = TriageApp(settings, models=tier)
    try:
        results = await asyncio.gather(*(app.arun(t) for t in tickets))
    finally:
        await app.aclose()
    assert [r.status for r in results] == ["completed"] * 3, [r.status_reason for r in results]
    assert [r.route for r in results] == ["billing", "general", "account"]
    assert len({r.thread_id for r in results}) == 3
    assert len(tier.spans) == 3
    assert max(start for start, _ in tier.spans) < min(end for _, end in tier.spans), "the runs overlapped"


def test_off_topic_is_recognised_but_handed_on(app: TriageApp) -> None:
    """The local tier knows small talk when it sees it, and leaves the answer to someone who can give one."""
    result = app.run(Ticket(subject="", body="What's the weather in Paris tomorrow?"))
    assert result.intent == "other" and result.confidence is not None and result.confidence < 0.5
    assert result.route == "escalation" and result.route_reason is not None and "unsure" in result.route_reason
    assert any("off-topic" in line for line in result.evidence)
    assert result.reply is not None and result.reply.template == "escalation.handed_off"


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


@pytest.mark.parametrize("subject", ["", "When are you open?"])
def test_a_short_question_gets_the_faq_answer(app: TriageApp, subject: str) -> None:
    result = app.run(Ticket(customer_id="cus_new", subject=subject, body="When are you open?"))
    assert result.route == "general" and result.intent == "contact_info"
    assert result.findings["answered_with"] == "opening-hours-and-contact"
    slugs = [a if isinstance(a, str) else a["slug"] for a in result.findings["articles"]]
    assert len(slugs) == len(set(slugs)), "each article is listed once"
    assert result.usage["model_calls"] == int(result.usage["model_calls"])
    assert isinstance(result.model_dump(mode="json")["usage"]["model_calls"], int)


def test_a_duplicate_already_refunded_is_named_not_denied(app: TriageApp) -> None:
    ticket = Ticket(customer_id="cus_small_dup", subject="Charged twice", body="I was billed $19 twice, refund one.")
    first = app.run(ticket)
    [refund] = [a for a in first.actions if a.kind == "refund"]
    again = app.run(ticket)
    assert [a.kind for a in again.actions] == ["message"], "nothing is refunded twice"
    assert again.reply is not None and again.reply.template == "billing.duplicate_already_handled"
    assert "found no duplicate" not in again.reply.body
    assert refund.details.get("payment_id", "pay_") in again.reply.body and "complete" in again.reply.body
