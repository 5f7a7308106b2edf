"""The gateway refuses out-of-scope calls before any I/O; effect tools are idempotent and check their inputs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import rows
from triage.errors import PermanentToolError, ScopeDeniedError
from triage.gateway import ToolGateway
from triage.helpdesk import Helpdesk
from triage.policies import load_policy_bundle


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[ToolGateway]:
    helpdesk = await Helpdesk.open(tmp_path / "helpdesk.sqlite")
    yield ToolGateway(helpdesk=helpdesk, permissions=load_policy_bundle().permissions)
    await helpdesk.close()


@pytest.mark.parametrize(
    ("caller", "tool", "args"),
    [
        ("classify", "get_customer", {"customer_id": "cus_0001"}),
        ("escalation", "list_payments", {"customer_id": "cus_0001"}),
        ("billing", "create_ticket", {"queue": "human", "priority": "low", "subject": "s", "summary": "s"}),
        (
            "general",
            "request_refund",
            {
                "customer_id": "cus_small_dup",
                "payment_id": "pay_0001",
                "amount_cents": 100,
                "reason": "because",
            },
        ),
        ("unknown_node", "search_kb", {"query": "password"}),
    ],
)
async def test_out_of_scope_call_is_refused_and_recorded(
    gateway: ToolGateway, tmp_path: Path, caller: str, tool: str, args: dict[str, object]
) -> None:
    db = tmp_path / "helpdesk.sqlite"
    effects = "SELECT (SELECT COUNT(*) FROM tickets) + (SELECT COUNT(*) FROM refund_requests) AS n"
    before = rows(db, effects)[0]["n"]
    with pytest.raises(ScopeDeniedError) as caught:
        await gateway.call(caller, tool, args, thread_id="thr_v")
    assert caught.value.kind == "policy"
    assert caller in str(caught.value) and "not granted scope" in str(caught.value)
    assert rows(db, effects)[0]["n"] == before
    [violation] = rows(db, "SELECT thread_id, node, tool, scope FROM policy_violations")
    assert violation == {"thread_id": "thr_v", "node": caller, "tool": tool, "scope": caught.value.scope}


async def test_effects_are_idempotent_per_thread(gateway: ToolGateway, tmp_path: Path) -> None:
    args = {"queue": "engineering", "priority": "high", "subject": "Crash", "summary": "App crashes"}
    first = await gateway.call("technical", "create_ticket", args, thread_id="thr_a")
    again = await gateway.call("technical", "create_ticket", args, thread_id="thr_a")
    other = await gateway.call("technical", "create_ticket", args, thread_id="thr_b")
    assert first["id"] == again["id"] and first["created"] and not again["created"]
    assert other["id"] != first["id"]
    assert len(rows(tmp_path / "helpdesk.sqlite", "SELECT id FROM tickets WHERE subject = 'Crash'")) == 2


async def test_request_refund_checks_the_payment(gateway: ToolGateway) -> None:
    [payment] = await gateway.call(
        "billing", "list_payments", {"customer_id": "cus_small_dup", "limit": 1}, thread_id="t"
    )
    with pytest.raises(PermanentToolError, match="does not belong"):
        await gateway.call(
            "billing",
            "request_refund",
            {
                "customer_id": "cus_mid_dup",
                "payment_id": payment["id"],
                "amount_cents": 100,
                "reason": "test",
            },
            thread_id="t",
        )
    with pytest.raises(PermanentToolError, match="refundable"):
        await gateway.call(
            "billing",
            "request_refund",
            {
                "customer_id": "cus_small_dup",
                "payment_id": payment["id"],
                "amount_cents": 10**7,
                "reason": "test",
            },
            thread_id="t",
        )
    with pytest.raises(PermanentToolError, match="invalid arguments"):
        await gateway.call(
            "billing",
            "request_refund",
            {
                "customer_id": "cus_small_dup",
                "payment_id": payment["id"],
                "amount_cents": -5,
                "reason": "test",
            },
            thread_id="t",
        )


async def test_kb_search_ranks_the_obvious_article_first(gateway: ToolGateway) -> None:
    found = await gateway.call(
        "technical", "search_kb", {"query": "I forgot my password and need a reset link"}, thread_id="t"
    )
    assert "password" in found[0]["slug"]
    assert found[0]["matched_terms"] >= 2
    assert await gateway.call("technical", "search_kb", {"query": "the and of"}, thread_id="t") == []


async def test_helpdesk_is_seeded_once(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    first = await Helpdesk.open(path)
    await first.close()
    second = await Helpdesk.open(path)
    await second.close()
    assert rows(path, "SELECT COUNT(*) AS n FROM customers")[0]["n"] >= 50
    assert rows(path, "SELECT COUNT(*) AS n FROM customers WHERE id = 'cus_small_dup'")[0]["n"] == 1
