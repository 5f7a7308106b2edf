"""A transient tool failure is retried by the node's RetryPolicy, the run still completes, and the retry is
counted per node."""

from __future__ import annotations

from typing import Any

import pytest

from triage import Ticket, TriageApp
from triage.errors import TransientToolError
from triage.gateway import ToolGateway
from triage.metering import Meter, attempt_key
from triage.policies.budgets import Budget


def test_attempt_key_names_nodes_as_the_eval_does() -> None:
    assert attempt_key("validate:1f0e", "validate") == "validate"
    assert attempt_key("billing:1f0e|lookup:2a3b", "lookup", specialist="billing") == "billing:lookup"
    assert attempt_key("ask:1f0e|lookup:2a3b", "lookup", specialist="billing") == "ask:billing:lookup"
    assert attempt_key("ask:1f0e|lookup:2a3b", "lookup") == "ask:lookup"


def test_a_meter_counts_retries_per_node_across_tasks() -> None:
    """Starts beyond the first of one task are retries; two tasks of the same node (two asks) are not."""
    meter = Meter(Budget(max_steps=1, max_wall_seconds=1.0, max_model_tokens=0, max_model_cost_usd=0.0))
    for key, namespace in [("a", "n1"), ("a", "n1"), ("a", "n2"), ("b", "n3"), ("c", "n4"), ("c", "n4"), ("c", "n4")]:
        meter.attempt(key, namespace)
    assert meter.retries() == {"a": 1, "c": 2}


@pytest.fixture
def invoices_fail_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first `billing_overview` call through the gateway fails as a locked database would; the rest go through."""
    original = ToolGateway.call
    failures = {"billing_overview": 1}

    async def flaky(self: ToolGateway, caller: str, tool_name: str, args: Any, **kwargs: Any) -> Any:
        if failures.get(tool_name):
            failures[tool_name] -= 1
            raise TransientToolError(tool_name, "database is locked")
        return await original(self, caller, tool_name, args, **kwargs)

    monkeypatch.setattr(ToolGateway, "call", flaky)


def test_transient_failure_is_retried_and_counted(app: TriageApp, invoices_fail_once: None) -> None:
    result = app.run(Ticket(customer_id="cus_small_dup", subject="Charged twice", body="I was billed twice."))
    assert (result.route, result.status) == ("billing", "completed")
    assert result.retries == {"billing:lookup": 1}


def test_a_retry_in_the_branch_of_one_ask_is_keyed_by_its_specialist(app: TriageApp, invoices_fail_once: None) -> None:
    """Each ask runs its specialist in a branch of the `ask` node; a retry there is counted under that specialist,
    as the eval's per-node figures name its steps (`ask:billing:lookup`), and only in that branch."""
    body = (
        "The docking hub order was charged twice, please refund the duplicate. "
        "Also change my email to mid.new@example.org."
    )
    paused = app.run({"customer_id": "cus_mid_dup", "subject": "Two things", "body": body})
    assert [a["route"] for a in paused.asks] == ["billing", "account"]
    assert paused.retries == {"ask:billing:lookup": 1}
    resumed = app.resume(paused.thread_id, {"approver": "alice", "decision": "approve", "reason": "ok"})
    assert resumed.status == "completed"
    assert resumed.retries == {}, "a resume is a new invocation: nothing in it was retried"
