"""Crossing a budget (steps, wall time, model tokens, model cost) stops model use and hands the ticket to a person
with the reason; the ticket is never lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rows
from triage import PolicyFileError, Ticket, TriageApp
from triage.models.tier import LocalModelTier, UsageSink
from triage.settings import Settings
from triage.state import Classification, Draft, ReplyData

TICKET = Ticket(customer_id="cus_small_dup", subject="Charged twice", body="I was billed twice for my plan.")


class PricedTier(LocalModelTier):
    """The local tier, billed like a hosted model: 600 tokens and one cent a call."""

    async def classify(self, text: str, *, usage: UsageSink | None = None) -> Classification:
        if usage is not None:
            usage.record(tokens=600, cost_usd=0.01)
        return await super().classify(text)

    async def compose(self, draft: Draft, *, usage: UsageSink | None = None) -> ReplyData:
        if usage is not None:
            usage.record(tokens=600, cost_usd=0.01)
        return await super().compose(draft)


@pytest.fixture
def priced_app(settings: Settings) -> Any:
    app = TriageApp(settings, models=PricedTier(settings.cache_dir))
    yield app
    app.close()


@pytest.mark.parametrize(
    ("budget", "reason"),
    [
        ({"max_steps": 2}, "step budget reached"),
        ({"max_wall_seconds": 0.000001}, "time budget reached"),
        ({"max_model_tokens": 500}, "model token budget reached (600 of 500 tokens)"),
        ({"max_model_cost_usd": 0.005}, "model cost budget reached"),
    ],
)
def test_crossing_a_budget_escalates_with_the_reason(
    priced_app: TriageApp, settings: Settings, budget: dict[str, float], reason: str
) -> None:
    result = priced_app.run(TICKET, budget=budget)
    assert (result.route, result.status) == ("escalation", "escalated")
    assert result.budget_exceeded is not None and reason in result.budget_exceeded
    assert result.status_reason is not None and reason in result.status_reason
    assert result.usage["model_calls"] <= 1, "no model is called once the budget is spent"
    assert result.reply is not None, "the customer still gets a (templated) reply"
    [ticket] = rows(settings.helpdesk_path, "SELECT queue FROM tickets WHERE thread_id = ?", (result.thread_id,))
    assert ticket["queue"] == "human"
    assert rows(settings.helpdesk_path, "SELECT * FROM refund_requests WHERE thread_id = ?", (result.thread_id,)) == []


def test_within_budget_runs_normally_and_records_spend(priced_app: TriageApp) -> None:
    result = priced_app.run(TICKET)
    assert (result.route, result.status, result.budget_exceeded) == ("billing", "completed", None)
    assert result.usage["model_calls"] == 2
    assert result.usage["model_tokens"] == 1200
    assert result.usage["model_cost_usd"] == pytest.approx(0.02)


def test_invalid_budget_override_is_refused(priced_app: TriageApp, tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="max_steps"):
        priced_app.run(TICKET, budget={"max_steps": 0})
    with pytest.raises(PolicyFileError, match="max_colour"):
        priced_app.run(TICKET, budget={"max_colour": 1})
    assert priced_app.threads() == []
