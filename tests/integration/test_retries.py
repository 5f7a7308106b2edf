"""A transient tool failure is retried by the node's RetryPolicy, the run still completes, and the retry is
counted per node."""

from __future__ import annotations

from typing import Any

import pytest

from triage import Ticket, TriageApp
from triage.errors import TransientToolError
from triage.gateway import ToolGateway
from triage.telemetry import AttemptCounter, node_key


def test_node_key() -> None:
    assert node_key("validate:1f0e", "validate") == "validate"
    assert node_key("billing:1f0e|lookup:2a3b", "lookup") == "billing:lookup"


def test_transient_failure_is_retried_and_counted(app: TriageApp, monkeypatch: pytest.MonkeyPatch) -> None:
    original = ToolGateway.call
    failures = {"list_invoices": 1}

    async def flaky(self: ToolGateway, caller: str, tool_name: str, args: Any, **kwargs: Any) -> Any:
        if failures.get(tool_name):
            failures[tool_name] -= 1
            raise TransientToolError(tool_name, "database is locked")
        return await original(self, caller, tool_name, args, **kwargs)

    monkeypatch.setattr(ToolGateway, "call", flaky)
    counter = AttemptCounter()
    result = app.run(
        Ticket(customer_id="cus_small_dup", subject="Charged twice", body="I was billed twice."), callbacks=[counter]
    )
    assert (result.route, result.status) == ("billing", "completed")
    retries = counter.retries()
    assert retries["billing:lookup"] == 1
    assert sum(retries.values()) == 1
