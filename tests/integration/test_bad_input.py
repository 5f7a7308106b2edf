"""Bad input is refused with a typed, actionable error and writes nothing: no thread, no helpdesk row."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import rows
from triage import InvalidTicketError, TriageApp, UnknownCustomerError
from triage.schemas import MAX_BODY_CHARS
from triage.settings import Settings

WRITTEN = ("tickets", "outbox", "refund_requests", "account_requests")


def _counts(settings: Settings) -> dict[str, int]:
    return {t: rows(settings.helpdesk_path, f"SELECT COUNT(*) AS n FROM {t}")[0]["n"] for t in WRITTEN}


@pytest.mark.parametrize(
    ("ticket", "error", "message"),
    [
        (
            {"customer_id": "cus_0001", "subject": "x", "body": "   "},
            InvalidTicketError,
            "body: must contain text",
        ),
        ({"subject": "x"}, InvalidTicketError, "body: Field required"),
        ({"body": "x" * (MAX_BODY_CHARS + 1)}, InvalidTicketError, f"{MAX_BODY_CHARS} characters at most"),
        ({"customer_id": 42, "body": "hello"}, InvalidTicketError, "customer_id"),
        ({"body": "hello", "cusotmer_id": "cus_0001"}, InvalidTicketError, "cusotmer_id: unknown field"),
        ('{"body": "hello",', InvalidTicketError, "not valid JSON"),
        (
            {"customer_id": "cus_nobody", "body": "hello"},
            UnknownCustomerError,
            "unknown customer_id 'cus_nobody'",
        ),
    ],
)
def test_bad_ticket_is_refused_and_writes_nothing(
    app: TriageApp, settings: Settings, ticket: Any, error: type[Exception], message: str
) -> None:
    app.warm_up()
    before = _counts(settings)
    with pytest.raises(error) as caught:
        app.run(ticket)
    assert message in str(caught.value)
    assert "A ticket has" in str(caught.value) or isinstance(caught.value, UnknownCustomerError)
    assert app.threads() == []
    assert _counts(settings) == before


def test_valid_json_string_is_accepted(app: TriageApp) -> None:
    result = app.run(json.dumps({"subject": "hours", "body": "What are your opening hours?"}))  # type: ignore[arg-type]
    assert result.status == "completed"
