"""Every node against every tool: a granted call goes through, any other is refused before the tool runs and is
recorded. Deny by default: nodes the manifest does not name get nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rows
from triage.errors import ScopeDeniedError
from triage.gateway import ToolGateway
from triage.helpdesk import Helpdesk
from triage.policies import load_policy_bundle
from triage.tools import ALL_TOOLS, tool_scope

PERMISSIONS = load_policy_bundle().permissions
NODES = [*PERMISSIONS.grants, "unknown_node"]
VALID_ARGS: dict[str, dict[str, Any]] = {
    "get_customer": {"customer_id": "cus_0001"},
    "list_invoices": {"customer_id": "cus_0001"},
    "list_payments": {"customer_id": "cus_0001"},
    "list_refunds": {"customer_id": "cus_0001"},
    "billing_overview": {"customer_id": "cus_0001"},
    "request_refund": {"customer_id": "cus_small_dup", "payment_id": "PAYMENT", "amount_cents": 100, "reason": "test"},
    "search_kb": {"query": "reset password"},
    "create_ticket": {"queue": "human", "priority": "low", "subject": "s", "summary": "s"},
    "find_tickets": {"customer_id": "cus_0001"},
    "service_status": {"component": "sync"},
    "send_message": {"to_address": "a@example.com", "subject": "s", "body": "b", "template": "t"},
    "create_account_request": {"customer_id": "cus_0001", "kind": "data_export"},
    "list_plans": {},
    "issue_refund": {"customer_id": "cus_small_dup", "payment_id": "PAYMENT", "amount_cents": 100},
    "complete_account_request": {"customer_id": "cus_0001", "request_id": "REQUEST"},
    "decline_request": {"customer_id": "cus_0001", "request_id": "REQUEST"},
    "withdraw_request": {"customer_id": "cus_0001", "receipt_id": "REQUEST"},
    # The steps of account changes, each followed by its compensation of the receipt just returned (LAST).
    "change_subscription": {"customer_id": "cus_plan_team", "subscription_id": "SUB", "to_plan": "business"},
    "revert_subscription_change": {"customer_id": "cus_plan_team", "receipt_id": "LAST"},
    "post_account_credit": {"customer_id": "cus_0001", "amount_cents": -100, "reason": "test"},
    "void_account_credit": {"customer_id": "cus_0001", "receipt_id": "LAST"},
    "adjust_seats": {"customer_id": "cus_plan_team", "subscription_id": "SUB", "seats": 5},
    "revert_seat_change": {"customer_id": "cus_plan_team", "receipt_id": "LAST"},
    "refund_unused_period": {"customer_id": "cus_small_dup", "payment_id": "PAYMENT", "amount_cents": 100},
    "cancel_period_refund": {"customer_id": "cus_small_dup", "receipt_id": "LAST"},
    "schedule_data_jobs": {"customer_id": "cus_0001"},
    "cancel_data_jobs": {"customer_id": "cus_0001", "receipt_id": "LAST"},
    "confirm_account_change": {"customer_id": "cus_0001", "request_id": "REQUEST"},
    "find_engineering_tickets": {"keys": ["ENG-1"]},
    "close_ticket": {"ticket_id": "TICKET"},
    "find_related_tickets": {"customer_id": "cus_0001", "keys": ["ENG-1"]},
    "note_ticket": {"ticket_id": "TICKET", "note": "n"},
}


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[ToolGateway]:
    helpdesk = await Helpdesk.open(tmp_path / "helpdesk.sqlite")
    yield ToolGateway(helpdesk=helpdesk, permissions=PERMISSIONS)
    await helpdesk.close()


def test_every_tool_has_sample_arguments() -> None:
    assert set(VALID_ARGS) == set(ALL_TOOLS)


def test_expected_grants() -> None:
    assert PERMISSIONS.grants["classify"] == frozenset()
    assert PERMISSIONS.grants["escalation"] == frozenset({"tickets:write"})
    # Refunds are written only by effects run after approval: the executor's, and an approved closure's.
    refunders = {node for node, scopes in PERMISSIONS.grants.items() if "refunds:write" in scopes}
    assert refunders == {"execute", "account_change"}
    assert "refunds:request" in PERMISSIONS.grants["billing"]


@pytest.mark.parametrize("node", NODES)
async def test_node_grant_matrix(gateway: ToolGateway, tmp_path: Path, node: str) -> None:
    db = tmp_path / "helpdesk.sqlite"
    payment = rows(db, "SELECT id FROM payments WHERE customer_id = 'cus_small_dup' AND status = 'succeeded'")[0]
    request = await gateway.call(
        "account", "create_account_request", {"customer_id": "cus_0001", "kind": "data_export"}, thread_id="setup"
    )
    subscription = rows(db, "SELECT id FROM subscriptions WHERE customer_id = 'cus_plan_team'")[0]
    ticket = await gateway.call(
        "technical",
        "create_ticket",
        {"queue": "engineering", "priority": "low", "subject": "s", "summary": "s"},
        thread_id="setup",
    )
    refused = []
    placeholders = {
        "PAYMENT": payment["id"],
        "REQUEST": request["id"],
        "SUB": subscription["id"],
        "TICKET": ticket["id"],
        "LAST": "",
    }
    for tool, args in VALID_ARGS.items():
        args = {k: placeholders.get(v, v) if isinstance(v, str) else v for k, v in args.items()}
        if PERMISSIONS.allows(node, tool_scope(ALL_TOOLS[tool])):
            made = await gateway.call(node, tool, args, thread_id=f"thr_{node}")
            placeholders["LAST"] = str(made.get("id", "")) if isinstance(made, dict) else ""
        else:
            with pytest.raises(ScopeDeniedError):
                await gateway.call(node, tool, args, thread_id=f"thr_{node}")
            refused.append(tool)
    recorded = rows(db, "SELECT tool FROM policy_violations WHERE node = ? ORDER BY id", (node,))
    assert [r["tool"] for r in recorded] == refused
    if node == "unknown_node":
        assert refused == list(VALID_ARGS)
