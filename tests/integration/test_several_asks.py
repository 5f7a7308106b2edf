"""A ticket that asks several things: planned into asks, each handled by its specialist in parallel (LangGraph
`Send`), one approval step and one executor, and one reply that answers every ask in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import policy_copy, rows
from triage import TriageApp
from triage.evals.evaluators import node_key
from triage.settings import Settings


def test_two_asks_two_specialists_in_parallel_one_approval_one_reply(app: TriageApp) -> None:
    body = (
        "The docking hub order was charged twice, please refund the duplicate. "
        "Also change my email to mid.new@example.org."
    )
    paused = app.run({"customer_id": "cus_mid_dup", "subject": "Two things", "body": body})

    assert [(a["index"], a["route"], a["intent"], a["status"]) for a in paused.asks] == [
        (1, "billing", "duplicate_charge", "answered"),
        (2, "account", "email_change", "answered"),
    ]
    assert paused.status == "awaiting_approval"
    assert paused.pending_approval is not None and paused.pending_approval["action"] == "refund"
    assert len(app.pending_approvals()) == 1
    # Each specialist ran on its own branch, under its own name (and so its own grant).
    timeline = app.thread(paused.thread_id).timeline
    branches = {e.namespace.split("|")[0] for e in timeline if e.namespace.startswith("ask:")}
    assert len(branches) == 2
    assert sorted(e.node for e in timeline if e.namespace.startswith("ask:")) == ["act", "act", "lookup", "lookup"]
    # Each branch is labelled with the specialist that ran it, and the eval keys its figures by that specialist.
    steps = sorted((e.branch, e.node) for e in timeline if e.namespace.startswith("ask:"))
    assert steps == [("account", "act"), ("account", "lookup"), ("billing", "act"), ("billing", "lookup")]
    keys = {node_key(e) for e in timeline if e.namespace.startswith("ask:")}
    assert keys == {"ask:account:act", "ask:account:lookup", "ask:billing:act", "ask:billing:lookup"}
    assert {e.branch for e in timeline if not e.namespace.startswith("ask:")} == {None}

    done = app.resume(paused.thread_id, {"approver": "alice", "decision": "approve"})

    assert done.status == "completed"
    kinds = [a.kind for a in done.actions]
    assert sorted(kinds) == ["account_request", "message", "refund", "refund_request"]
    refunds = rows(
        app.settings.helpdesk_path, "SELECT amount_cents FROM refunds WHERE thread_id = ?", (done.thread_id,)
    )
    assert refunds == [{"amount_cents": 24000}]
    sent = rows(app.settings.helpdesk_path, "SELECT body FROM outbox WHERE thread_id = ?", (done.thread_id,))
    assert len(sent) == 1
    reply = done.reply
    assert reply is not None and reply.template == "plan.answers" and reply.body == sent[0]["body"]
    first, second = reply.body.index("\n1. "), reply.body.index("\n2. ")
    assert first < second
    refund = next(a for a in done.actions if a.kind == "refund")
    assert refund.receipt_id in reply.body[first:second]  # the refund is said to be done, in the first answer
    assert "mid.new@example.org" in reply.body[second:]


def test_an_edited_refund_keeps_its_ask_and_leaves_the_other_ask_alone(app: TriageApp) -> None:
    body = (
        "The docking hub order was charged twice, please refund the duplicate. "
        "Also change my email to mid.edit@example.org."
    )
    paused = app.run({"customer_id": "cus_mid_dup", "subject": "Two things", "body": body})
    assert paused.pending_approval is not None and paused.pending_approval["action"] == "refund"
    edit = {"approver": "alice", "decision": "edit", "args": {"amount_cents": 20000}, "reason": "part was a preorder"}
    edited = app.resume(paused.thread_id, edit)  # a single-approval refund: the editor's edit approves it

    assert edited.status == "completed"
    assert sorted(a.kind for a in edited.actions) == ["account_request", "message", "refund", "refund_request"]
    refunds = rows(
        app.settings.helpdesk_path, "SELECT amount_cents FROM refunds WHERE thread_id = ?", (edited.thread_id,)
    )
    assert refunds == [{"amount_cents": 20000}]
    reply = edited.reply
    assert reply is not None and reply.template == "plan.answers"
    first, second = reply.body.index("\n1. "), reply.body.index("\n2. ")
    refund = next(a for a in edited.actions if a.kind == "refund")
    assert refund.receipt_id in reply.body[first:second]  # still said to be done in the refund's own answer
    assert "mid.edit@example.org" in reply.body[second:]


def test_three_asks_one_held_by_policy_is_handed_on_with_the_reason(app: TriageApp) -> None:
    body = (
        "I was charged twice this month, please refund the duplicate. "
        "Also change the email of account cus_mid_dup to boss@example.org. "
        "Also my calendar sync keeps failing with an error when I connect Google Calendar."
    )
    result = app.run({"customer_id": "cus_small_dup", "subject": "Three things", "body": body})

    assert [(a["route"], a["status"]) for a in result.asks] == [
        ("billing", "answered"),
        ("account", "handed_on"),
        ("technical", "answered"),
    ]
    held = result.asks[1]
    assert held["reason"] is not None and "another customer" in held["reason"]
    assert result.pending_approval is not None, result.status
    assert result.pending_approval["action"] == "reply", result.pending_approval
    assert result.route_reason is not None and "handed on: ask 2" in result.route_reason
    # Nothing was filed for the held ask; a person has it, with the reason; the other two were answered.
    changes = rows(
        app.settings.helpdesk_path, "SELECT id FROM account_requests WHERE thread_id = ?", (result.thread_id,)
    )
    assert changes == []
    (queued,) = [a for a in result.actions if a.kind == "ticket"]
    assert queued.details["queue"] == "human"
    (ticket,) = rows(app.settings.helpdesk_path, "SELECT summary FROM tickets WHERE id = ?", (queued.receipt_id,))
    assert "another customer" in str(ticket["summary"])
    # A reply drafted from the whole ticket's unsure reading waits for a person, as any such reply does.
    done = app.resume(result.thread_id, {"approver": "alice", "decision": "approve"})
    assert done.status == "completed"
    assert "refund" in [a.kind for a in done.actions]
    reply = done.reply
    assert reply is not None
    assert [reply.body.index(f"\n{n}. ") for n in (1, 2, 3)] == sorted(reply.body.index(f"\n{n}. ") for n in (1, 2, 3))
    assert queued.receipt_id in reply.body


def test_a_single_ask_keeps_its_path(app: TriageApp) -> None:
    result = app.run({"customer_id": "cus_small_dup", "subject": "Charged twice", "body": "I was billed twice."})
    assert result.asks == []
    timeline = app.thread(result.thread_id).timeline
    coordinator = [e.node for e in timeline if e.namespace == ""]
    assert coordinator[:4] == ["validate", "classify", "route", "billing"]
    assert "ask" not in coordinator and "merge" not in coordinator


THREE_ASKS = (
    "I was charged twice this month, please refund the duplicate. "
    "Also change my email to small.new@example.org. "
    "Also my calendar sync keeps failing with an error when I connect Google Calendar."
)


@pytest.mark.parametrize("max_asks", [2, 3])
def test_the_policy_caps_the_asks_at_the_boundary(settings: Settings, tmp_path: Path, max_asks: int) -> None:
    folder = policy_copy(tmp_path, "support.toml", "max_asks = 3", f"max_asks = {max_asks}")
    with TriageApp(settings.model_copy(update={"policy_dir": folder})) as app:
        result = app.run({"customer_id": "cus_small_dup", "subject": "Three things", "body": THREE_ASKS})
        while result.status == "awaiting_approval":
            result = app.resume(result.thread_id, {"approver": "alice", "decision": "approve"})

    assert [a["route"] for a in result.asks] == ["billing", "account", "technical"]
    statuses = [a["status"] for a in result.asks]
    if max_asks == 3:
        assert statuses == ["answered", "answered", "answered"]
        assert "ticket" not in [a.kind for a in result.actions]
    else:
        assert statuses == ["answered", "answered", "handed_on"]
        assert result.asks[2]["reason"] == "more asks than one ticket may carry (2, the policy's planning.max_asks)"
        (queued,) = [a for a in result.actions if a.kind == "ticket"]
        assert queued.details["queue"] == "human"
    assert result.status == "completed"
    assert "refund" in [a.kind for a in result.actions]


def test_a_closure_asked_first_does_not_hold_back_the_edited_refund_asked_after_it(app: TriageApp) -> None:
    body = (
        "Please close my account and delete everything. "
        "Also, the docking hub order was charged twice, please refund the duplicate."
    )
    result = app.run({"customer_id": "cus_mid_dup", "subject": "Two things", "body": body})
    # The closure has no effect of its own in the executor (its steps run afterwards); the refund after it does.
    assert [(p["kind"], p.get("ask")) for p in result.proposed_actions] == [("account_closure", 1), ("refund", 2)]
    lower = {"decision": "edit", "args": {"amount_cents": 20000}, "reason": "part was a preorder"}
    approvals = [("account_closure", "alice", {}), ("account_closure", "sam", {}), ("refund", "bob", lower)]
    for action, approver, answer in [*approvals, ("reply", "alice", {})]:
        assert result.pending_approval is not None and result.pending_approval["action"] == action
        result = app.resume(result.thread_id, {"approver": approver, "decision": "approve", **answer})

    refunds = rows(
        app.settings.helpdesk_path, "SELECT amount_cents FROM refunds WHERE thread_id = ?", (result.thread_id,)
    )
    assert result.status != "awaiting_approval"
    assert {"amount_cents": 20000} in refunds  # the duplicate charge, as edited
    assert "refund" in [a.kind for a in result.actions]
    # The edit replaced the refund it edited, and only that one: the closure is still there to carry out.
    assert [p["kind"] for p in result.proposed_actions] == ["account_closure", "refund"]


def test_a_closure_after_a_full_duplicate_refund_refunds_its_unused_period_from_a_payment_with_enough_left(
    app: TriageApp,
) -> None:
    # The closure is planned (in its own ask) from the duplicate charge, which the other ask then refunds in full:
    # its unused period has to come from a payment that still has that much left when the step runs.
    body = (
        "I would like my account closed and all of my data removed. "
        "On top of that the two docking hubs were billed twice, so please pay back the extra charge."
    )
    result = app.run({"customer_id": "cus_mid_dup", "subject": "Closing down", "body": body})
    closure = next(p for p in result.proposed_actions if p["kind"] == "account_closure")["args"]
    assert closure["payment_id"] == "pay_0012" and closure["refund_cents"] > 0  # the plan names the duplicate
    asked = []
    for approver in ("alice", "sam", "alice", "alice"):
        if result.pending_approval is None:
            break
        asked.append(result.pending_approval["action"])
        result = app.resume(result.thread_id, {"approver": approver, "decision": "approve"})

    assert result.status == "completed", result.status_reason
    assert asked[:3] == ["account_closure", "account_closure", "refund"]  # then the reply's, when it asks for one
    assert result.saga is not None and result.saga["status"] == "completed"
    path = app.settings.helpdesk_path
    refunds = rows(path, "SELECT payment_id, amount_cents FROM refunds WHERE thread_id = ?", (result.thread_id,))
    assert refunds == [{"payment_id": "pay_0012", "amount_cents": 24000}]  # the duplicate, in full, once
    period = rows(
        path, "SELECT payment_id, amount_cents, status FROM period_refunds WHERE thread_id = ?", (result.thread_id,)
    )
    assert period == [{"payment_id": "pay_0011", "amount_cents": closure["refund_cents"], "status": "settled"}]
    (step,) = [a for a in result.actions if a.kind == "refund_unused"]
    assert step.details["payment_id"] == "pay_0011"  # the run shows where the money came from, not the plan
    assert rows(path, "SELECT status FROM customers WHERE id = 'cus_mid_dup'") == [{"status": "closed"}]
    over = rows(
        path,
        "SELECT p.id FROM payments p WHERE p.customer_id = 'cus_mid_dup' AND p.amount_cents < "
        "(SELECT COALESCE(SUM(amount_cents), 0) FROM refunds WHERE payment_id = p.id AND status != 'failed') + "
        "(SELECT COALESCE(SUM(amount_cents), 0) FROM period_refunds WHERE payment_id = p.id AND status != 'canceled')",
    )
    assert over == []  # no payment gives back more than it took


def test_the_timeline_alone_is_the_thread_views_timeline(app: TriageApp) -> None:
    """`atimeline` (what the eval reads per case) gives exactly the timeline of `athread`, branches included, and
    refuses a thread that does not exist as `athread` does."""
    import asyncio

    from triage.errors import ThreadNotFoundError

    body = "The docking hub order was charged twice, please refund the duplicate. Also change my email to a@b.org."
    paused = app.run({"customer_id": "cus_mid_dup", "subject": "Two things", "body": body})
    timeline = asyncio.run(app.atimeline(paused.thread_id))
    assert timeline == app.thread(paused.thread_id).timeline
    assert {e.branch for e in timeline} >= {"billing", "account"}
    with pytest.raises(ThreadNotFoundError, match="no thread 'thr_missing'"):
        asyncio.run(app.atimeline("thr_missing"))
