"""The gateway refuses out-of-scope calls before any I/O; effect tools are idempotent and check their inputs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rows
from triage.errors import PermanentToolError, ScopeDeniedError
from triage.gateway import ToolGateway
from triage.helpdesk import Helpdesk
from triage.policies import load_policy_bundle
from triage.tools import base as tools_base
from triage.tools.base import idempotency_key, receipt_id


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


async def test_an_effect_is_keyed_by_the_callers_key_or_by_the_call_and_a_read_by_nothing(
    gateway: ToolGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    derived: list[str] = []

    def counted(thread_id: str, caller: str, tool: str, args: Any) -> str:
        derived.append(tool)
        return idempotency_key(thread_id, caller, tool, args)

    monkeypatch.setattr(tools_base, "idempotency_key", counted)
    # A read has no effect to key: no key is derived for it.
    assert (await gateway.call("validate", "get_customer", {"customer_id": "cus_0001"}, thread_id="thr_k"))["id"]
    assert derived == []
    # An effect is keyed by its call (thread, caller, tool, arguments), or by the key its caller names.
    args = {"queue": "engineering", "priority": "high", "subject": "Keyed", "summary": "keyed"}
    made = await gateway.call("technical", "create_ticket", args, thread_id="thr_k")
    assert made["id"] == receipt_id("TCK", idempotency_key("thr_k", "technical", "create_ticket", args))
    named = await gateway.call("technical", "create_ticket", args, thread_id="thr_k", idempotency_key="approval-1")
    assert named["id"] == receipt_id("TCK", "approval-1") and named["created"]
    assert derived == ["create_ticket"]


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


async def test_a_request_is_withdrawn_by_its_compensation_once_and_only_by_its_own_run(
    gateway: ToolGateway, tmp_path: Path
) -> None:
    """`withdraw_request` undoes `request_refund` and `create_account_request` (as their declarations say): the
    request it made is marked rejected once; another run's request, and another customer's, are left alone."""
    db = tmp_path / "helpdesk.sqlite"
    payment = rows(db, "SELECT id FROM payments WHERE customer_id = 'cus_small_dup' AND status = 'succeeded'")[0]
    asked = {"customer_id": "cus_small_dup", "payment_id": payment["id"], "amount_cents": 100, "reason": "twice"}
    mine = await gateway.call("billing", "request_refund", asked, thread_id="thr_mine")
    account = await gateway.call(
        "account", "create_account_request", {"customer_id": "cus_0001", "kind": "data_export"}, thread_id="thr_mine"
    )

    def withdraw(customer: str, receipt: str, thread: str = "thr_mine") -> Any:
        args = {"customer_id": customer, "receipt_id": receipt}
        return gateway.call("account_change", "withdraw_request", args, thread_id=thread)

    with pytest.raises(PermanentToolError, match=f"no request {mine['id']} for cus_0001"):
        await withdraw("cus_0001", mine["id"])
    assert (await withdraw("cus_small_dup", mine["id"], "thr_other"))["made_by_another_run"] is True
    assert rows(db, "SELECT status FROM refund_requests") == [{"status": "requested"}]
    assert (await withdraw("cus_small_dup", mine["id"]))["created"] is True
    assert (await withdraw("cus_small_dup", mine["id"]))["created"] is False  # a repeat changes nothing
    assert (await withdraw("cus_0001", account["id"]))["created"] is True
    assert rows(db, "SELECT status FROM refund_requests") == [{"status": "rejected"}]
    assert rows(db, "SELECT status FROM account_requests WHERE id = ?", (account["id"],)) == [{"status": "rejected"}]
    # Withdrawn, the payment takes a new request again (at most one open request per payment).
    again = await gateway.call("billing", "request_refund", asked, thread_id="thr_next")
    assert again["created"] is True and "already_requested" not in again


async def test_an_unused_period_is_refunded_from_a_payment_that_has_enough_left_when_the_refund_is_made(
    gateway: ToolGateway, tmp_path: Path
) -> None:
    db = tmp_path / "helpdesk.sqlite"
    newest = rows(
        db, "SELECT id, amount_cents FROM payments WHERE customer_id = 'cus_mid_dup' ORDER BY created_at DESC"
    )
    assert [(p["id"], p["amount_cents"]) for p in newest[:2]] == [("pay_0012", 24000), ("pay_0011", 24000)]
    monthly = newest[2]["id"]

    async def refund_period(planned: str, amount_cents: int, key: str) -> dict[str, Any]:
        args = {"customer_id": "cus_mid_dup", "payment_id": planned, "amount_cents": amount_cents}
        receipt: dict[str, Any] = await gateway.call(
            "account_change", "refund_unused_period", args, thread_id="thr_close", idempotency_key=key
        )
        return receipt

    # Planned from the duplicate, which is then refunded in full: the period comes from the next payment instead.
    duplicate = {"customer_id": "cus_mid_dup", "payment_id": "pay_0012", "amount_cents": 24000}
    await gateway.call("execute", "issue_refund", duplicate, thread_id="thr_close", idempotency_key="dup")
    first = await refund_period("pay_0012", 980, "period-1")
    assert (first["payment_id"], first["created"]) == ("pay_0011", True)
    again = await refund_period("pay_0012", 980, "period-1")  # a retry returns the refund made, not a new choice
    assert (again["id"], again["payment_id"], again["created"]) == (first["id"], "pay_0011", False)
    # The pending period refund and another thread's open request are counted: pay_0011 has 23020 left, all asked for.
    request = {"customer_id": "cus_mid_dup", "payment_id": "pay_0011", "amount_cents": 23020, "reason": "returned"}
    await gateway.call("billing", "request_refund", request, thread_id="thr_other")
    second = await refund_period("pay_0011", 1, "period-2")
    assert second["payment_id"] == monthly
    with pytest.raises(PermanentToolError, match=r"no payment of cus_mid_dup has 24001 cents left to refund"):
        await refund_period("pay_0011", 24001, "period-3")
    refunded = rows(db, "SELECT payment_id, amount_cents FROM period_refunds ORDER BY created_at, id")
    assert sorted((r["payment_id"], r["amount_cents"]) for r in refunded) == sorted([("pay_0011", 980), (monthly, 1)])


async def test_a_refund_cannot_take_what_an_unused_period_refund_already_took(gateway: ToolGateway) -> None:
    period = {"customer_id": "cus_mid_dup", "payment_id": "pay_0012", "amount_cents": 980}
    held = await gateway.call("account_change", "refund_unused_period", period, thread_id="thr_close")
    assert held["payment_id"] == "pay_0012"
    duplicate = {"customer_id": "cus_mid_dup", "payment_id": "pay_0012", "amount_cents": 24000}
    for node, tool, extra in (
        ("billing", "request_refund", {"reason": "charged twice"}),
        ("execute", "issue_refund", {}),
    ):
        with pytest.raises(PermanentToolError, match="payment pay_0012 has 23020 cents refundable; 24000 was asked"):
            await gateway.call(node, tool, {**duplicate, **extra}, thread_id="thr_dup")
    rest = await gateway.call("execute", "issue_refund", {**duplicate, "amount_cents": 23020}, thread_id="thr_dup")
    assert rest["created"]
    await gateway.call(
        "account_change",
        "cancel_period_refund",
        {"customer_id": "cus_mid_dup", "receipt_id": held["id"]},
        thread_id="thr_close",
    )
    # Canceled, the unused-period refund gives its 980 back to what the payment has left.
    again = await gateway.call("execute", "issue_refund", {**duplicate, "amount_cents": 980}, thread_id="thr_dup")
    assert again["created"]


@pytest.mark.parametrize(
    "customer_id", ["cus_small_dup", "cus_large_dup", "cus_refunded", "cus_partial_refund", "cus_new"]
)
async def test_billing_overview_is_the_three_list_tools_read_at_once(gateway: ToolGateway, customer_id: str) -> None:
    overview = await gateway.call("billing", "billing_overview", {"customer_id": customer_id}, thread_id="thr_o")
    expected = {
        name: await gateway.call("billing", f"list_{name}", {"customer_id": customer_id, "limit": limit}, thread_id="t")
        for name, limit in (("invoices", 12), ("payments", 24), ("refunds", 12))
    }
    assert overview == expected
    assert overview["payments"] or customer_id == "cus_new"


async def test_billing_overview_reads_one_view_in_one_hop(
    gateway: ToolGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer's refund committed between the overview's queries is in none of them; one hop reads all."""
    import sqlite3

    import aiosqlite.core

    import triage.tools.base as base

    other = sqlite3.connect(tmp_path / "helpdesk.sqlite", isolation_level=None, check_same_thread=False)
    [payment] = rows(
        tmp_path / "helpdesk.sqlite", "SELECT id FROM payments WHERE customer_id = 'cus_small_dup' LIMIT 1"
    )
    original_rows, original_execute = base._dict_rows, aiosqlite.core.Connection._execute
    hops = 0

    def rows_then_a_refund(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        found = original_rows(db, sql, params)
        if "FROM invoices" in sql:  # the first query: another connection commits a refund now
            other.execute(
                "INSERT INTO refunds (id, payment_id, customer_id, amount_cents, reason, status, created_at, "
                "idempotency_key) VALUES ('ref_between', ?, 'cus_small_dup', 100, 'r', 'succeeded', "
                "'2099-01-01T00:00:00+00:00', 'between')",
                (payment["id"],),
            )
        return found

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await original_execute(self, fn, *args, **kwargs)

    monkeypatch.setattr(base, "_dict_rows", rows_then_a_refund)
    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    overview = await gateway.call("billing", "billing_overview", {"customer_id": "cus_small_dup"}, thread_id="thr_o")
    monkeypatch.undo()
    other.close()
    assert hops == 1
    assert "ref_between" not in [r["id"] for r in overview["refunds"]]
    assert sum(p["refunded_cents"] for p in overview["payments"]) == 0
    after = await gateway.call("billing", "list_refunds", {"customer_id": "cus_small_dup"}, thread_id="thr_o")
    assert "ref_between" in [r["id"] for r in after]
