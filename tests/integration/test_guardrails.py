"""PII never reaches the model layer; injection attempts are flagged, escalated and cause no unapproved effect."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rows
from triage import TriageApp
from triage.models.tier import LocalModelTier, UsageSink
from triage.settings import Settings
from triage.state import Classification, Draft, ReplyData

DATA = Path(__file__).resolve().parents[1] / "data"


def _load(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


class RecordingTier(LocalModelTier):
    """The local tier, recording every text the model layer is given."""

    def __init__(self, cache_dir: Path) -> None:
        super().__init__(cache_dir)
        self.seen: list[str] = []

    async def classify(self, text: str, *, usage: UsageSink | None = None) -> Classification:
        self.seen.append(text)
        return await super().classify(text, usage=usage)

    async def compose(self, draft: Draft, *, usage: UsageSink | None = None) -> ReplyData:
        self.seen.append(json.dumps(draft["facts"], default=str))
        return await super().compose(draft, usage=usage)

    async def summarise(self, text: str, *, max_chars: int = 280, usage: UsageSink | None = None) -> str:
        self.seen.append(text)
        return await super().summarise(text, max_chars=max_chars, usage=usage)


@pytest.fixture
def recorded(settings: Settings) -> Iterator[tuple[TriageApp, RecordingTier]]:
    tier = RecordingTier(settings.cache_dir)
    app = TriageApp(settings, models=tier)
    yield app, tier
    app.close()


def test_no_raw_pii_reaches_the_model_layer_or_a_log_line(
    recorded: tuple[TriageApp, RecordingTier], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app, tier = recorded
    corpus = _load("pii_tickets.jsonl")
    redacted = 0
    for case in corpus:
        result = app.run({k: case[k] for k in ("customer_id", "subject", "body")})
        # A reply drafted below the reply-approval threshold waits for a person: also an end of this run.
        assert result.status in ("completed", "escalated", "awaiting_approval"), result.status_reason
        redacted += sum(result.redactions.values())
    everything = "\n".join([*tier.seen, *(record.getMessage() for record in caplog.records)])
    leaks = [value for case in corpus for value in case["pii"] if value in everything]
    assert leaks == []
    assert redacted >= sum(len(case["pii"]) for case in corpus)
    # Tools granted the data still get real values: the email change goes to the real new address.
    [request] = rows(settings.helpdesk_path, "SELECT details FROM account_requests WHERE kind = 'email_change'")
    assert json.loads(request["details"])["new_email"] == "maria.new-address@example.org"


def test_injection_attempts_are_flagged_and_cause_no_unapproved_effect(app: TriageApp, settings: Settings) -> None:
    corpus = _load("injection_tickets.jsonl")
    app.warm_up()
    before = _effect_counts(settings)
    for case in corpus:
        result = app.run({"customer_id": case["customer_id"], "subject": "", "body": case["body"]})
        assert "prompt_injection" in result.signals, case["body"]
        assert (result.route, result.status) == ("escalation", "escalated")
        assert [a.kind for a in result.actions if a.kind not in ("ticket", "message")] == []
    assert _effect_counts(settings) == before


def _effect_counts(settings: Settings) -> dict[str, int]:
    return {
        table: rows(settings.helpdesk_path, f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]
        for table in ("refund_requests", "refunds", "account_requests")
    }


def test_a_run_redacts_its_message_once_and_records_the_same_redaction(app: TriageApp) -> None:
    """`classify` and `finish` (the turn record) read one redaction of the message: worked out once in the run."""
    from unittest.mock import patch

    from triage.policies import pii
    from triage.policies.conversation import clip

    subject, body = "Change my email", "I want to change the email on my account. The old one is ana.lopez@example.com."
    message = f"{subject}\n{body}".strip()
    worked_out: list[str] = []
    real = pii._redact

    def counted(text: str, into: pii.Redaction | None) -> pii.Redaction:
        worked_out.append(text)
        return real(text, into)

    with patch.object(pii, "_redact", counted):
        first = app.run({"customer_id": "cus_new", "subject": subject, "body": body})
    assert worked_out.count(message) == 1, "the message's redaction is worked out once per run"
    assert first.status == "completed", first.status_reason  # its turn is recorded
    follow_up = app.run({"subject": "Re: Change my email", "body": "Any news?", "conversation_id": first.thread_id})
    [turn] = follow_up.conversation
    assert turn["message"] == clip(message) and "ana.lopez@example.com" not in turn["message"]
