"""Conversations: a follow-up is the next turn of the same thread, with what the earlier turns learned."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FailCheckpointWrites, rows
from tests.integration.test_account_change import PLAN_CHANGE, open_app, run_change
from tests.integration.test_cli import triage
from triage import TriageApp
from triage.errors import UnknownConversationError
from triage.settings import Settings
from triage.web.views import ApprovalRow


def _checkpoints(app: TriageApp, thread_id: str) -> int:
    return len(rows(app.settings.checkpoints_path, "SELECT 1 FROM checkpoints WHERE thread_id = ?", (thread_id,)))


def test_a_follow_up_continues_the_thread_with_what_the_first_turn_learned(app: TriageApp) -> None:
    first = app.run(
        {"customer_id": "cus_new", "subject": "Change my email", "body": "I want to change the email on my account."}
    )
    assert (first.status, first.route, first.intent) == ("completed", "account", "email_change")
    assert first.reply is not None and first.reply.template == "account.email_change_needs_address"
    assert (first.conversation_id, first.turn, first.conversation) == (first.thread_id, 1, [])

    # The customer answers without naming their account again: the conversation knows it.
    second = app.run(
        {"subject": "Re: Change my email", "body": "Use new.me@example.org", "conversation_id": first.conversation_id}
    )
    assert (second.thread_id, second.conversation_id, second.turn) == (first.thread_id, first.thread_id, 2)
    assert (second.status, second.route, second.intent) == ("completed", "account", "email_change")
    assert second.reply is not None and second.reply.template == "account.email_change"
    filed = [a for a in second.actions if a.kind == "account_request"]
    assert [a.details["new_email"] for a in filed] == ["new.me@example.org"]
    assert "message" in [a.kind for a in second.actions]
    # The first turn's effects are not repeated in the second's result; its record is the conversation so far.
    assert [turn["turn"] for turn in second.conversation] == [1]
    assert second.conversation[0]["reply_template"] == "account.email_change_needs_address"
    assert second.conversation[0]["route"] == "account"
    requests = rows(app.settings.helpdesk_path, "SELECT customer_id FROM account_requests WHERE kind = 'email_change'")
    assert requests == [{"customer_id": "cus_new"}]
    # One thread holds both turns.
    assert [t.thread_id for t in app.threads()] == [first.thread_id]


def test_a_follow_up_during_a_pending_approval_is_attached_for_the_approver(app: TriageApp) -> None:
    first = app.run(
        {"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "I was charged twice, refund the extra one."}
    )
    assert first.status == "awaiting_approval"
    pending = first.pending_approval
    assert pending is not None
    before = _checkpoints(app, first.thread_id)
    (indexed,) = app.pending_approvals()

    attached = app.run({"body": "Any news on my refund? It is urgent.", "conversation_id": first.conversation_id})

    # The pending decision is untouched: same approval, same version, no new checkpoint, no new effect.
    assert attached.status == "awaiting_approval"
    assert attached.pending_approval is not None
    assert attached.pending_approval["approval_id"] == pending["approval_id"]
    assert [f.message for f in attached.follow_ups] == ["Any news on my refund? It is urgent."]
    assert _checkpoints(app, first.thread_id) == before
    (still,) = app.pending_approvals()
    assert (still.approval_id, still.version) == (indexed.approval_id, indexed.version)
    assert [f.message for f in still.follow_ups] == ["Any news on my refund? It is urgent."]
    # The approver sees it in the inbox row and on the thread.
    assert [f["message"] for f in ApprovalRow.of(still).follow_ups] == ["Any news on my refund? It is urgent."]
    assert [f.message for f in app.thread(first.thread_id).result.follow_ups] == [
        "Any news on my refund? It is urgent."
    ]

    done = app.resume(first.thread_id, {"approver": "alice", "decision": "approve"})
    assert done.status == "completed"
    assert [a.kind for a in done.actions].count("refund") == 1

    # The next turn reads the attached message as part of the conversation, and no refund is issued again.
    third = app.run({"body": "Thanks. When will I see the money?", "conversation_id": first.conversation_id})
    assert third.turn == 3
    assert [(t["turn"], t["status"]) for t in third.conversation] == [(1, "completed"), (2, "attached")]
    assert third.conversation[1]["message"] == "Any news on my refund? It is urgent."
    assert "refund" not in [a.kind for a in third.actions]
    refunds = rows(app.settings.helpdesk_path, "SELECT id FROM refunds WHERE thread_id = ?", (first.thread_id,))
    assert len(refunds) == 1
    assert app.pending_approvals() == []


def test_still_not_fixed_after_a_kb_answer_reopens_it_for_a_person(app: TriageApp) -> None:
    first = app.run(
        {
            "customer_id": "cus_new",
            "subject": "Cannot connect my calendar",
            "body": "The calendar sync keeps failing with an error when I connect Google Calendar. How do I fix it?",
        }
    )
    assert first.reply is not None and first.reply.template == "technical.kb_answer"
    article = first.findings["answered_with"]

    again = app.run({"body": "I followed the steps, it is still not fixed.", "conversation_id": first.thread_id})

    assert (again.status, again.route) == ("escalated", "escalation")
    assert again.route_reason is not None and "reopened" in again.route_reason and article in again.route_reason
    assert again.reply is not None and again.reply.template == "escalation.handed_off"
    (ticket,) = [a for a in again.actions if a.kind == "ticket"]
    assert ticket.details["queue"] == "human"
    (summary,) = rows(app.settings.helpdesk_path, "SELECT summary FROM tickets WHERE id = ?", (ticket.receipt_id,))
    assert "Conversation so far:" in summary["summary"]
    assert "Turn 1 (technical/" in summary["summary"] and article in summary["summary"]
    assert "calendar sync keeps failing" in summary["summary"]


def test_an_unhelpful_follow_up_without_a_kb_answer_is_triaged_as_usual(app: TriageApp) -> None:
    first = app.run({"customer_id": "cus_locked", "subject": "Locked out", "body": "My account is locked."})
    assert first.reply is not None and not first.reply.template.endswith("kb_answer")
    again = app.run({"body": "It still doesn't work, I am locked out.", "conversation_id": first.thread_id})
    assert again.route_reason is None or "reopened" not in again.route_reason


def test_follow_ups_are_refused_with_a_reason(app: TriageApp) -> None:
    with pytest.raises(UnknownConversationError, match="no conversation 'thr_nope'"):
        app.run({"body": "hello again", "conversation_id": "thr_nope"})
    first = app.run({"customer_id": "cus_new", "body": "When are you open?"})
    with pytest.raises(UnknownConversationError, match="another customer"):
        app.run({"customer_id": "cus_locked", "body": "and me?", "conversation_id": first.thread_id})


def test_cli_continues_a_conversation_and_refuses_an_unknown_one(settings: Settings) -> None:
    ran = triage(settings, "run", "--customer-id", "cus_new", "--body", "I want to change my email address.", "--json")
    assert ran.returncode == 0, ran.stderr
    conversation_id = json.loads(ran.stdout)["conversation_id"]
    for _ in range(2):  # sent twice with its message id (a mail filter run again): one turn
        follow: subprocess.CompletedProcess[str] = triage(
            settings,
            "run",
            "--conversation-id",
            conversation_id,
            "--body",
            "It should be me2@example.org",
            "--message-id",
            "<CAF+2@mail.example>",
            "--json",
        )
        assert follow.returncode == 0, follow.stderr
        result = json.loads(follow.stdout)
        assert (result["conversation_id"], result["turn"], result["intent"]) == (conversation_id, 2, "email_change")
    bad = triage(settings, "run", "--conversation-id", conversation_id, "--body", "x", "--message-id", "has space")
    assert bad.returncode == 2 and "message_id: must be 1-256 printable ASCII" in bad.stderr, bad.stderr

    unknown = triage(settings, "run", "--conversation-id", "thr_missing", "--body", "hello?")
    assert unknown.returncode == 2
    assert "no conversation 'thr_missing'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def _our_reply(app: TriageApp, thread_id: str) -> str:
    (sent,) = rows(app.settings.helpdesk_path, "SELECT id FROM outbox WHERE thread_id = ?", (thread_id,))
    return str(sent["id"])


def test_an_email_answering_our_reply_continues_its_conversation(app: TriageApp, settings: Settings) -> None:
    first = app.run(
        {"customer_id": "cus_new", "subject": "Change my email", "body": "I want to change the email on my account."}
    )
    reply_id = _our_reply(app, first.thread_id)
    header = f"<{reply_id}@support.example>"
    assert app.conversation_replied_to(header) == first.conversation_id
    assert app.conversation_replied_to(None, f"<CAF+1@mail.example> {header}") == first.conversation_id
    assert app.conversation_replied_to("<msg_unknown@support.example>") is None
    app.close()

    # The mail gateway passes the headers to the CLI: the reply runs as the conversation's next turn.
    follow = triage(settings, "run", "--in-reply-to", header, "--body", "Please use reply.me@example.org", "--json")
    assert follow.returncode == 0, follow.stderr
    result = json.loads(follow.stdout)
    assert (result["conversation_id"], result["turn"], result["intent"]) == (first.conversation_id, 2, "email_change")
    clash = triage(
        settings,
        "run",
        "--in-reply-to",
        header,
        "--conversation-id",
        "thr_other",
        "--file",
        "-",
        stdin='{"body": "hi"}',
    )
    assert clash.returncode == 2
    assert f"the email answers conversation {first.conversation_id}" in clash.stderr
    unknown = triage(
        settings, "run", "--references", "<CAF+2@mail.example>", "--body", "Hello, a new question", "--json"
    )
    assert unknown.returncode == 0, unknown.stderr
    assert json.loads(unknown.stdout)["turn"] == 1, "an email answering none of our replies starts a conversation"


def test_each_turn_gets_its_reply_and_its_queue_ticket_even_when_it_says_the_same(
    app: TriageApp, settings: Settings
) -> None:
    """A customer who asks the same thing again gets the same answer again, sent; one who asks for a person again
    gets another queue ticket. The effects are keyed per turn, not per conversation."""
    from triage.policies.conversation import MAX_TURNS

    hours = {"customer_id": "cus_0001", "subject": "Hours", "body": "What are your opening hours?"}
    first = app.run(hours)
    # Past MAX_TURNS a conversation keeps the records of its last turns only: each turn still gets its reply, and
    # its own number.
    count = MAX_TURNS + 3
    turns = [first, *(app.run({**hours, "conversation_id": first.conversation_id}) for _ in range(count - 1))]
    assert [turn.turn for turn in turns] == list(range(1, count + 1))
    messages = [[(a.receipt_id, a.details["created"]) for a in turn.actions if a.kind == "message"] for turn in turns]
    assert all(len(m) == 1 and m[0][1] for m in messages), messages
    assert len({m[0][0] for m in messages}) == count
    query = "SELECT COUNT(*) AS n FROM outbox WHERE thread_id = ?"
    assert rows(settings.helpdesk_path, query, (first.thread_id,)) == [{"n": count}]

    lawyer = {"customer_id": "cus_locked", "subject": "Lawyer", "body": "I will contact my lawyer about this account."}
    handed = app.run(lawyer)
    again = [handed, *(app.run({**lawyer, "conversation_id": handed.conversation_id}) for _ in range(2))]
    assert [turn.status for turn in again] == ["escalated"] * 3
    query = "SELECT COUNT(*) AS n FROM tickets WHERE thread_id = ? AND queue = 'human'"
    assert rows(settings.helpdesk_path, query, (handed.thread_id,)) == [{"n": 3}]

    suspended = {"customer_id": "cus_suspended", "subject": "Suspended", "body": "Why is my account suspended?"}
    asked = app.run(suspended)
    again = [asked, *(app.run({**suspended, "conversation_id": asked.conversation_id}) for _ in range(2))]
    query = "SELECT COUNT(*) AS n FROM tickets WHERE thread_id = ? AND queue = 'account'"
    assert rows(settings.helpdesk_path, query, (asked.thread_id,)) == [{"n": 3}], [t.actions for t in again]


def test_a_later_turn_rejected_again_has_its_own_line_in_the_audit_trail(app: TriageApp) -> None:
    """The same refund asked for in two turns, rejected in each (answered through the graph, as Studio does): two
    `rejected` lines, one a turn."""
    from langgraph.types import Command

    from triage.context import Context

    duplicate = {"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "You charged me twice for my order."}
    reject = {"approver": "alice", "decision": "reject", "reason": "not a duplicate"}
    engine = app._portal.call(app._get_engine())

    def answer(thread_id: str) -> None:
        config: Any = {"configurable": {"thread_id": thread_id}}
        command = Command(resume=reject)
        app._portal.call(engine.graph.ainvoke(command, config, context=Context(services=engine.services)))

    first = app.run(duplicate)
    answer(first.thread_id)
    second = app.run({**duplicate, "conversation_id": first.conversation_id})
    assert second.status == "awaiting_approval", second.status_reason
    answer(first.thread_id)
    trail = [(line["event"], line["actor"]) for line in app.thread(first.thread_id).audit]
    assert trail.count(("rejected", "alice")) == 2, trail


def test_a_later_turn_that_asks_for_a_decided_refund_again_gets_an_approval_of_its_own(
    app: TriageApp, settings: Settings
) -> None:
    """Turn 1's refund is rejected; turn 2 asks again. Its approval is a new one, not turn 1's decided one: recover
    leaves it waiting (it used to apply turn 1's rejection), and approving it refunds once."""
    duplicate = {"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "You charged me twice for my order."}
    first = app.run(duplicate)
    assert first.pending_approval is not None
    app.resume(first.thread_id, {"approver": "alice", "decision": "reject", "reason": "not a duplicate"})
    second = app.run({**duplicate, "conversation_id": first.conversation_id})
    assert second.status == "awaiting_approval" and second.pending_approval is not None, second.status_reason
    assert second.pending_approval["approval_id"] != first.pending_approval["approval_id"]
    assert app.recover(first.thread_id).status == "awaiting_approval", "nobody decided turn 2's approval yet"
    done = app.resume(first.thread_id, {"approver": "alice", "decision": "approve", "reason": "checked again"})
    assert done.status == "completed", done.status_reason
    query = "SELECT amount_cents FROM refunds WHERE thread_id = ?"
    assert rows(settings.helpdesk_path, query, (first.thread_id,)) == [{"amount_cents": 24000}]
    trail = [(line["event"], line["actor"]) for line in app.thread(first.thread_id).audit]
    assert trail.count(("rejected", "alice")) == 1 and trail.count(("approved", "alice")) == 1, trail


def test_a_later_turn_that_asks_for_a_rejected_refund_again_files_a_request_of_its_own(
    app: TriageApp, settings: Settings
) -> None:
    """Turn 1's refund request is rejected; turn 2 files a new, open one (it used to take turn 1's back, still
    `rejected` while turn 2 waited), so another thread's request for the same payment is told it is already asked."""
    duplicate = {"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "You charged me twice for my order."}
    first = app.run(duplicate)
    assert first.pending_approval is not None
    app.resume(first.thread_id, {"approver": "alice", "decision": "reject", "reason": "not a duplicate"})
    second = app.run({**duplicate, "conversation_id": first.conversation_id})
    assert second.status == "awaiting_approval", second.status_reason
    query = "SELECT id, status FROM refund_requests WHERE thread_id = ? ORDER BY created_at"
    requests = rows(settings.helpdesk_path, query, (first.thread_id,))
    assert [r["status"] for r in requests] == ["rejected", "requested"], requests
    other = app.run(duplicate)  # a new thread while turn 2 waits
    assert other.pending_approval is None, "the payment already has an open request"
    assert len(rows(settings.helpdesk_path, "SELECT 1 FROM refund_requests WHERE status = 'requested'")) == 1
    done = app.resume(first.thread_id, {"approver": "alice", "decision": "approve", "reason": "checked again"})
    assert done.status == "completed", done.status_reason
    assert [r["status"] for r in rows(settings.helpdesk_path, query, (first.thread_id,))] == ["rejected", "executed"]


def test_a_later_turn_that_asks_again_for_a_rejected_account_deletion_files_a_request_of_its_own(
    app: TriageApp, settings: Settings
) -> None:
    """Turn 1's deletion is rejected (its request withdrawn); turn 2 asks again: a new pending request, and approved
    twice, it completes (it used to carry turn 1's withdrawn request, which cannot be carried out)."""
    ticket = {"customer_id": "cus_0002", "subject": "Delete my account", "body": "Please delete my account and data."}
    first = app.run(ticket)
    assert first.pending_approval is not None and first.pending_approval["action"] == "account_deletion"
    app.resume(first.thread_id, {"approver": "bob", "decision": "reject", "reason": "they have an open invoice"})
    second = app.run({**ticket, "conversation_id": first.conversation_id})
    assert second.pending_approval is not None, second.status_reason
    query = "SELECT status FROM account_requests WHERE thread_id = ? ORDER BY created_at"
    assert [r["status"] for r in rows(settings.helpdesk_path, query, (first.thread_id,))] == ["rejected", "pending"]
    app.resume(first.thread_id, {"approver": "bob", "decision": "approve"})
    done = app.resume(first.thread_id, {"approver": "sam", "decision": "approve"})
    assert done.status == "completed", done.status_reason
    assert done.reply is not None and done.reply.template == "account.deleted", done.reply
    assert [r["status"] for r in rows(settings.helpdesk_path, query, (first.thread_id,))] == ["rejected", "completed"]


HOURS = {"subject": "Hours", "body": "What are your opening hours?"}


def _state(app: TriageApp, thread_id: str) -> dict[str, Any]:
    engine = app._portal.call(app._get_engine())
    snapshot = app._portal.call(engine.graph.aget_state({"configurable": {"thread_id": thread_id}}))
    return dict(snapshot.values)


# -- Every turn leaves its record, whatever ended it: a rolled-back change, a failure ----------------------------------


def test_a_turn_whose_change_rolled_back_is_recorded_in_the_conversation(tmp_path: Path, model_cache: Path) -> None:
    """Turn 1's plan change rolls back (the saga's hand_off sets status `escalated` before `finish`). Its record is
    kept all the same: `finish` used to skip it for a status set earlier, so turn 2 was numbered 1 again and turn 1
    was missing from the conversation and from the customer's memory."""
    app = open_app(tmp_path, model_cache, faults="fail=adjust_seats")
    try:
        first = run_change(app, PLAN_CHANGE)
        assert first.status == "escalated", first.status_reason
        memory = app.customer_memory("cus_plan_team")
    finally:
        app.close()
    app = open_app(tmp_path, model_cache)
    try:
        second = app.run({**HOURS, "customer_id": "cus_plan_team", "conversation_id": first.conversation_id})
    finally:
        app.close()
    assert second.status == "completed", second.status_reason
    assert (second.turn, [t["turn"] for t in second.conversation]) == (2, [1]), (second.turn, second.conversation)
    assert memory is not None, "turn 1 left nothing in the customer's memory"


def test_a_turn_that_rolled_back_then_failed_is_recorded(tmp_path: Path, model_cache: Path) -> None:
    """The saga's rollback sets the turn's status (escalated) before its reply fails: a status set in the turn, not
    one left by the last, so the failure still records the turn."""
    app = open_app(tmp_path, model_cache, faults="fail=adjust_seats,fail=send_message")
    try:
        first = run_change(app, PLAN_CHANGE)
    finally:
        app.close()
    assert first.status == "failed", first.status_reason
    app = open_app(tmp_path, model_cache)
    try:
        second = app.run({**HOURS, "customer_id": "cus_plan_team", "conversation_id": first.conversation_id})
    finally:
        app.close()
    assert second.status == "completed", second.status_reason
    assert [(t["turn"], t["status"]) for t in second.conversation] == [(1, "failed")], second.conversation


# -- Turn numbers go on past MAX_TURNS: attached messages are folded in once -------------------------------------------


def test_a_message_attached_past_max_turns_is_folded_in_once(app: TriageApp) -> None:
    from triage.policies.conversation import MAX_TURNS

    customer = {"customer_id": "cus_mid_dup"}
    first = app.run({**HOURS, **customer})
    cid = first.conversation_id
    for _ in range(MAX_TURNS - 1):
        app.run({**HOURS, **customer, "conversation_id": cid})
    paused = app.run(
        {
            **customer,
            "subject": "Charged twice",
            "body": "I was charged twice for my order this month, please refund the extra duplicate charge.",
            "conversation_id": cid,
        }
    )
    assert paused.status == "awaiting_approval", (paused.status, paused.status_reason)
    attached = app.run({**customer, "body": "Any news on my refund? It is urgent.", "conversation_id": cid})
    (follow_up,) = attached.follow_ups
    app.resume(cid, {"approver": "alice", "decision": "approve"})
    for _ in range(3):
        last = app.run({**HOURS, **customer, "conversation_id": cid})
        assert last.status == "completed", last.status_reason
    folded = [t for t in _state(app, cid)["conversation"] if t.get("follow_up_id") == follow_up.follow_up_id]
    assert len(folded) == 1, [(t["turn"], t["message"]) for t in _state(app, cid)["conversation"]]


# -- Past MAX_TURNS the result lists the turn before, and memory keeps each turn ---------------------------------------


def _a_threat_past_max_turns(app: TriageApp, customer: dict[str, str]) -> tuple[str, Any]:
    """A conversation of `MAX_TURNS` + 1 questions, then a threat (escalated): its id and the threat's result."""
    from triage.policies.conversation import MAX_TURNS

    cid = app.run({**HOURS, **customer}).conversation_id
    for _ in range(MAX_TURNS):
        app.run({**HOURS, **customer, "conversation_id": cid})
    lawyer = app.run(
        {**customer, "subject": "Lawyer", "body": "I will contact my lawyer about this.", "conversation_id": cid}
    )
    assert lawyer.status == "escalated", lawyer.status_reason
    return cid, lawyer


def test_past_max_turns_the_result_lists_the_turn_before(app: TriageApp) -> None:
    customer = {"customer_id": "cus_0001"}
    cid, _ = _a_threat_past_max_turns(app, customer)
    after = app.run({**HOURS, **customer, "conversation_id": cid})
    # The turn just before is part of "the conversation so far" the result reports.
    assert after.conversation and after.conversation[-1]["route"] == "escalation", [
        (t["turn"], t["route"]) for t in after.conversation[-3:]
    ]


def test_past_max_turns_the_customer_memory_keeps_each_latest_turn(app: TriageApp) -> None:
    customer = {"customer_id": "cus_0001"}
    cid, lawyer = _a_threat_past_max_turns(app, customer)
    app.run({**customer, "subject": "Invoice", "body": "Please send me my latest invoice.", "conversation_id": cid})
    memory = app.customer_memory("cus_0001")
    assert memory is not None
    # The lawyer turn and the invoice turn were both numbered 21: the second replaced the first in `recent`.
    intents = [o["intent"] for o in memory["recent"]]
    assert lawyer.intent in intents[-2:], [(o["turn"], o["status"], o["intent"]) for o in memory["recent"]][-4:]


# -- A failed turn withdraws its own refund requests, not an earlier turn's --------------------------------------------


def test_a_failed_later_turn_leaves_an_earlier_turns_open_refund_request_alone(
    tmp_path: Path, model_cache: Path
) -> None:
    """Turn 1's refund approval expires (sweep): the run escalates and the request stays open for a person. Turn 2
    fails (its reply cannot be sent). The app withdraws the failed turn's open refund requests; it used to withdraw
    every open request of the thread, turn 1's too, which turn 2 never filed."""
    from triage.policies.approvals import SWEEP_ACTOR
    from triage.schemas import Decision

    duplicate = {"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "You charged me twice for my order."}
    app = open_app(tmp_path, model_cache)
    try:
        first = app.run(duplicate)
        assert first.pending_approval is not None
        timeout = Decision(approver=SWEEP_ACTOR, decision="timeout", reason="approval expired")
        expired = app._portal.call(app._aresume(first.thread_id, timeout, sweep=True))
        assert expired.status == "escalated", expired.status_reason
    finally:
        app.close()
    query = "SELECT id, status FROM refund_requests WHERE thread_id = ?"
    [request] = rows(tmp_path / "home" / "helpdesk.sqlite", query, (first.thread_id,))
    assert request["status"] == "requested"
    app = open_app(tmp_path, model_cache, faults="fail=send_message")
    try:
        second = app.run({**HOURS, "customer_id": "cus_mid_dup", "conversation_id": first.conversation_id})
    finally:
        app.close()
    assert second.status == "failed", second.status_reason
    after = rows(tmp_path / "home" / "helpdesk.sqlite", query, (first.thread_id,))
    assert after == [request], "turn 2 failed, but turn 1's open request was withdrawn"


def test_a_failed_turn_past_max_turns_leaves_an_earlier_turns_open_refund_request_alone(
    tmp_path: Path, model_cache: Path
) -> None:
    """Once turn 1's record has left the conversation (`MAX_TURNS`), its open request is still not the failed
    turn's to withdraw: only the failed turn's own requests are then."""
    from triage.policies.approvals import SWEEP_ACTOR
    from triage.policies.conversation import MAX_TURNS
    from triage.schemas import Decision

    duplicate = {"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "You charged me twice for my order."}
    app = open_app(tmp_path, model_cache)
    try:
        first = app.run(duplicate)
        assert first.pending_approval is not None
        timeout = Decision(approver=SWEEP_ACTOR, decision="timeout", reason="approval expired")
        expired = app._portal.call(app._aresume(first.thread_id, timeout, sweep=True))
        assert expired.status == "escalated", expired.status_reason
        for _ in range(MAX_TURNS):
            done = app.run({**HOURS, "customer_id": "cus_mid_dup", "conversation_id": first.conversation_id})
            assert done.status == "completed", done.status_reason
    finally:
        app.close()
    query = "SELECT id, status FROM refund_requests WHERE thread_id = ?"
    [request] = rows(tmp_path / "home" / "helpdesk.sqlite", query, (first.thread_id,))
    assert request["status"] == "requested"
    app = open_app(tmp_path, model_cache, faults="fail=send_message")
    try:
        failed = app.run({**HOURS, "customer_id": "cus_mid_dup", "conversation_id": first.conversation_id})
    finally:
        app.close()
    assert failed.status == "failed", failed.status_reason
    assert rows(tmp_path / "home" / "helpdesk.sqlite", query, (first.thread_id,)) == [request]


# -- A turn reports its own usage --------------------------------------------------------------------------------------


def test_a_later_turn_awaiting_approval_does_not_report_the_last_turns_usage(app: TriageApp) -> None:
    customer = {"customer_id": "cus_mid_dup"}
    first = app.run({**HOURS, **customer})
    assert first.status == "completed" and first.usage
    second = app.run(
        {
            **customer,
            "subject": "Charged twice",
            "body": "I was charged twice for my order this month, please refund the extra duplicate charge.",
            "conversation_id": first.conversation_id,
        }
    )
    assert second.status == "awaiting_approval", second.status_reason
    assert second.usage != first.usage, f"turn 2 reports turn 1's usage: {second.usage}"


# -- A change the saga carried out closes its request in the customer's memory -----------------------------------------


def test_a_completed_plan_change_is_not_remembered_as_an_open_request(tmp_path: Path, model_cache: Path) -> None:
    app = open_app(tmp_path, model_cache)
    try:
        done = run_change(app, PLAN_CHANGE)
        assert done.status == "completed", done.status_reason
        [request] = [a.receipt_id for a in done.actions if a.kind == "account_request"]
        [row] = rows(app.settings.helpdesk_path, "SELECT status FROM account_requests WHERE id = ?", (request,))
        assert row["status"] == "completed"
        memory = app.customer_memory("cus_plan_team")
    finally:
        app.close()
    assert memory is not None
    assert request not in [r["id"] for r in memory["open_requests"]], memory["summary"]


def test_a_failed_turn_is_recorded_with_what_it_filed(tmp_path: Path, model_cache: Path) -> None:
    """In the conversation, and in the customer's memory (as `finish` remembers a turn that ends): the customer's
    next conversation sees that it failed and the account request it left open (a person still acts on it)."""
    app = open_app(tmp_path, model_cache)
    try:
        first = app.run({**HOURS, "customer_id": "cus_new"})
    finally:
        app.close()
    app = open_app(tmp_path, model_cache, faults="fail=send_message")
    try:
        change = "Please change the email on my account to new.me@example.org"
        second = app.run(
            {"customer_id": "cus_new", "subject": "Email", "body": change, "conversation_id": first.thread_id}
        )
        memory = app.customer_memory("cus_new")
    finally:
        app.close()
    assert second.status == "failed", second.status_reason
    [filed] = rows(
        tmp_path / "home" / "helpdesk.sqlite", "SELECT id FROM account_requests WHERE thread_id = ?", (first.thread_id,)
    )
    assert memory is not None
    assert [(o["turn"], o["status"]) for o in memory["recent"]] == [(1, "completed"), (2, "failed")], memory["recent"]
    assert [r["id"] for r in memory["open_requests"]] == [filed["id"]], memory["open_requests"]
    app = open_app(tmp_path, model_cache)
    try:
        third = app.run({**HOURS, "customer_id": "cus_new", "conversation_id": first.thread_id})
    finally:
        app.close()
    assert third.turn == 3, [(t["turn"], t["status"], t["requests"]) for t in third.conversation]
    assert filed["id"] in [r for t in third.conversation for r in t["requests"]]


def test_a_failed_turns_withdrawn_refund_request_is_not_remembered_as_open(tmp_path: Path, model_cache: Path) -> None:
    """The refund is approved but cannot be issued: the run fails and its request is withdrawn, so the memory lists
    the failed turn and no open request."""
    app = open_app(tmp_path, model_cache, faults="fail=issue_refund")
    try:
        paused = app.run({"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": DUPLICATE_BODY})
        assert paused.status == "awaiting_approval", paused.status_reason
        failed = app.resume(paused.thread_id, {"approver": "alice", "decision": "approve"})
        assert failed.status == "failed", failed.status_reason
        memory = app.customer_memory("cus_mid_dup")
    finally:
        app.close()
    query = "SELECT status FROM refund_requests WHERE thread_id = ?"
    assert [r["status"] for r in rows(tmp_path / "home" / "helpdesk.sqlite", query, (paused.thread_id,))] == [
        "rejected"
    ]
    assert memory is not None
    assert [(o["thread_id"], o["status"]) for o in memory["recent"]] == [(paused.thread_id, "failed")], memory
    assert memory["open_requests"] == [], memory["open_requests"]


# -- An earlier turn's threat does not escalate the short follow-ups after it ------------------------------------------


def test_a_short_follow_up_is_not_escalated_for_an_earlier_turns_legal_threat(app: TriageApp) -> None:
    """An earlier turn's threat was handed to a person in its turn. A short follow-up read with the conversation
    takes the history's topic, not its threat: no `legal_threat` of its own, and not routed to a person for it (it
    used to be, every short message after the threat). Unsure on its own, it may still go to a person as unsure."""
    customer = {"customer_id": "cus_0001"}
    first = app.run({**customer, "subject": "Lawyer", "body": "I will contact my lawyer about this."})
    assert first.status == "escalated"
    hours = app.run(
        {**customer, "subject": "", "body": "What are your opening hours?", "conversation_id": first.thread_id}
    )
    assert hours.status == "completed", hours.status_reason
    for short in ("And on weekends?", "ok", "Thanks, what about public holidays?"):
        later = app.run({**customer, "subject": "", "body": short, "conversation_id": first.thread_id})
        assert "legal_threat" not in later.signals, (short, later.signals)
        assert later.route_reason is not None and not later.route_reason.startswith("escalation signal"), short
        assert not later.route_reason.startswith("classified as escalation"), (short, later.route_reason)


_EMAIL_CHANGE = {
    "customer_id": "cus_new",
    "subject": "Change my email",
    "body": "I want to change the email on my account.",
}
DUPLICATE_BODY = "I was charged twice, refund the extra one."


def test_a_follow_up_sent_again_with_its_message_id_is_taken_in_once(app: TriageApp) -> None:
    """A webhook retried with another key, a restarted server's sweep: the same message (its `message_id`) is one
    turn, whether it is the conversation's first message, a later turn, or attached while a refund awaits a
    decision; a message without an id is run each time it is sent."""
    first = app.run({**_EMAIL_CHANGE, "message_id": "<m1@mail.example>"})
    conversation = first.conversation_id
    again = app.run({"body": _EMAIL_CHANGE["body"], "conversation_id": conversation, "message_id": "<m1@mail.example>"})
    assert (again.turn, again.status) == (1, "completed"), "the first message is not run as a follow-up"
    follow_up = {"body": "Use new.me@example.org", "conversation_id": conversation, "message_id": "<m2@mail.example>"}
    second = app.run(follow_up)
    assert second.turn == 2 and second.conversation[0]["message_id"] == "<m1@mail.example>"
    for _ in range(2):
        repeated = app.run(follow_up)
        assert (repeated.turn, repeated.status, repeated.reply) == (2, "completed", second.reply)
    third = app.run({**follow_up, "message_id": "<m3@mail.example>"})
    assert third.turn == 3 and third.conversation[-1]["message_id"] == "<m2@mail.example>"
    assert app.run({**follow_up, "message_id": "<m2@mail.example>"}).turn == 3, "an ended turn's message too"
    assert app.run({k: v for k, v in follow_up.items() if k != "message_id"}).turn == 4
    sent = rows(app.settings.helpdesk_path, "SELECT id FROM outbox WHERE thread_id = ?", (conversation,))
    assert len(sent) == 4, "one reply a turn"

    paused = app.run({"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": DUPLICATE_BODY})
    attach = {"body": "Any news on this?", "conversation_id": paused.thread_id, "message_id": "evt-77"}
    for _ in range(2):
        attached = app.run(attach)
        assert attached.status == "awaiting_approval" and len(attached.follow_ups) == 1, attached.follow_ups
    done = app.resume(paused.thread_id, {"approver": "alice", "decision": "approve"})
    assert app.run(attach).turn == done.turn, "attached, not yet folded into a turn: known"
    later = app.run({"body": "Thanks, that was all.", "conversation_id": paused.thread_id})
    assert [t["status"] for t in later.conversation][-1] == "attached", later.conversation
    assert app.run(attach).turn == later.turn, "folded into a turn: known"


def test_a_follow_up_whose_input_was_saved_before_its_store_failed_is_known_by_its_message_id(
    app: TriageApp,
) -> None:
    """Sent again after the store failed mid-way, it is neither refused as busy at every try (and then given up by
    the intake as "not run") nor run a second time: it is the thread's unfinished turn, which `recover` ends."""

    from triage.errors import StoreUnavailableError

    saver = app._portal.call(app._get_engine()).services.saver
    # From the second write on: the input saved, nothing after. From the third: its first step's writes saved too.
    # The third alone: the store back at once (review: the failure was then written over the unread input, and the
    # message was lost for good).
    for first_failing, last_failing in ((2, 999), (3, 999), (3, 3)):
        first = app.run(_EMAIL_CHANGE)
        follow_up = {"body": "Use new.me@example.org", "conversation_id": first.conversation_id, "message_id": "e9"}
        saver.faults = FailCheckpointWrites(first_failing, last_failing)
        with pytest.raises(StoreUnavailableError):
            app.run(follow_up)
        saver.faults = None
        again = app.run(follow_up)
        assert again.status == "failed" and "triage recover" in (again.status_reason or ""), again.status_reason
        done = app.recover(first.conversation_id)
        assert (done.turn, done.status) == (2, "completed"), done.status_reason
        assert app.run(follow_up).turn == 2, "taken in once"
        sent = rows(app.settings.helpdesk_path, "SELECT id FROM outbox WHERE thread_id = ?", (first.conversation_id,))
        assert len(sent) == 2


def test_a_message_sent_again_after_its_turn_record_was_dropped_is_not_run_again(app: TriageApp) -> None:
    """The conversation keeps the last `MAX_TURNS` turn records; a message whose turn is older than those (a
    webhook retried days later, say) is still known by its `message_id`, from the thread's saved inputs."""
    a_message_past_max_turns_is_run_once(app)


def a_message_past_max_turns_is_run_once(app: TriageApp) -> None:
    """Run `MAX_TURNS` + 2 turns with message ids, send the first two again, then a new one (also on PostgreSQL)."""
    from triage.policies.conversation import MAX_TURNS

    customer = {"customer_id": "cus_0001"}
    cid = app.run({**HOURS, **customer, "message_id": "<t1@mail.example>"}).conversation_id
    for turn in range(2, MAX_TURNS + 3):
        app.run({**HOURS, **customer, "conversation_id": cid, "message_id": f"<t{turn}@mail.example>"})
    kept = [t.get("message_id") for t in _state(app, cid)["conversation"]]
    assert len(kept) == MAX_TURNS and "<t1@mail.example>" not in kept and "<t2@mail.example>" not in kept, kept
    last = MAX_TURNS + 2
    for dropped in ("<t1@mail.example>", "<t2@mail.example>"):
        again = app.run({**HOURS, **customer, "conversation_id": cid, "message_id": dropped})
        assert (again.turn, again.status) == (last, "completed"), (dropped, again.turn, again.status)
    sent = rows(app.settings.helpdesk_path, "SELECT id FROM outbox WHERE thread_id = ?", (cid,))
    assert len(sent) == last, "one reply a turn, none for a message sent again"
    new = app.run({**HOURS, **customer, "conversation_id": cid, "message_id": "<new@mail.example>"})
    assert new.turn == last + 1, "a message never sent before is a turn of its own"
