"""The pure conversation rules: what a turn leaves for the next, and when a follow-up reopens for a person."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triage.policies.conversation import (
    HISTORY_CHARS,
    answer_worked,
    clip,
    did_not_help,
    history_text,
    prefer_history,
    read_with_history,
    reopen_reason,
    thanked,
    turn_record,
)
from triage.state import Classification, Turn


def _turn(number: int, **changes: Any) -> Turn:
    turn = Turn(
        turn=number,
        message=f"message {number}",
        route="technical",
        intent="login_issue",
        status="completed",
        outcome="resolved",
        reply_template="technical.kb_answer",
        answered_with="reset-your-password",
        requests=[],
    )
    turn.update(changes)  # type: ignore[typeddict-item]
    return turn


@pytest.mark.parametrize(
    "text",
    [
        "Still not fixed.",
        "that didn't help at all",
        "It did not work",
        "I tried that already",
        "Same problem as before",
        "still doesn't work after the steps",
        "I followed the steps and nothing changed, still broken",
    ],
)
def test_says_the_answer_did_not_help(text: str) -> None:
    assert did_not_help(text) is not None


@pytest.mark.parametrize(
    "text", ["Thanks, that fixed it!", "Can I also get an invoice?", "It works now", "Please help me with billing"]
)
def test_other_follow_ups_do_not_say_it_failed(text: str) -> None:
    assert did_not_help(text) is None


def test_reopens_only_after_an_answer_from_the_knowledge_base() -> None:
    reason = reopen_reason("still not fixed", [_turn(1)])
    assert reason is not None and "reset-your-password" in reason and "turn 1" in reason
    handed = _turn(1, reply_template="technical.engineering_ticket", answered_with=None)
    assert reopen_reason("still not fixed", [handed]) is None
    assert reopen_reason("thanks, all good", [_turn(1)]) is None
    assert reopen_reason("still not fixed", []) is None
    # A message attached during an approval is not an answer: the last turn that ran decides.
    attached = _turn(2, status="attached", reply_template=None, answered_with=None)
    assert reopen_reason("that didn't help", [_turn(1), attached]) is not None


def test_a_turn_record_keeps_ids_and_redacts_the_message() -> None:
    values = {
        "ticket": {"subject": "Refund", "body": "Card 4111 1111 1111 1111, mail me at jo@example.com"},
        "classification": {"intent": "refund_request"},
        "route": "billing",
        "status": "awaiting_approval",
        "outcome": "resolved",
        "reply": {"template": "billing.refund_requested"},
        "findings": {"payments": ["py_1", "py_2"]},
        "actions": [
            {"kind": "refund_request", "receipt_id": "rr_1"},
            {"kind": "message", "receipt_id": "msg_1"},
        ],
    }
    record = turn_record(1, values)
    assert record["requests"] == ["rr_1"]
    assert "4111" not in record["message"] and "jo@example.com" not in record["message"]
    assert (record["route"], record["intent"], record["reply_template"]) == (
        "billing",
        "refund_request",
        "billing.refund_requested",
    )


@given(st.lists(st.text(min_size=0, max_size=900), max_size=30))
def test_history_stays_within_its_budget(messages: list[str]) -> None:
    conversation = [_turn(n, message=clip(text)) for n, text in enumerate(messages, start=1)]
    text = history_text(conversation)
    assert len(text) <= HISTORY_CHARS + len(conversation)  # the messages, plus the newlines between them
    if conversation and len(conversation[-1]["message"]) <= HISTORY_CHARS:
        assert text.startswith(conversation[-1]["message"])  # the newest first


def test_replied_message_ids_reads_in_reply_to_then_references_latest_first() -> None:
    from triage.policies.conversation import replied_message_ids

    assert replied_message_ids("<msg_b@support.example>", "<other@mail.example> <msg_a@x> <msg_b@x>") == [
        "msg_b",
        "msg_a",
    ]
    assert replied_message_ids(None, ["<msg_1@x>", "msg_2 msg_3"]) == ["msg_3", "msg_2", "msg_1"]
    assert replied_message_ids("msg_bare", None) == ["msg_bare"]
    assert replied_message_ids("<CAF+foreign@mail.example>", "") == []
    assert replied_message_ids(None, None) == []


@pytest.mark.parametrize(
    "text",
    [
        "Thanks, reconnecting it worked!",
        "Thank you, clearing the cache fixed it. Great support!",
        "That did the trick, thanks a lot",
        "cheers, it works now",
        "Thanks! Problem solved.",
    ],
)
def test_thanks_for_an_answer_that_worked(text: str) -> None:
    assert answer_worked(text, [_turn(1)]) is not None


@pytest.mark.parametrize(
    ("text", "conversation"),
    [
        ("Thanks, reconnecting it worked!", []),  # nothing was answered before
        ("Thanks, but that didn't help, it still fails", [_turn(1)]),  # says it did not help
        ("Reconnecting it worked for a day, now it fails again", [_turn(1)]),  # no thanks: a new report
        ("Thanks! Could you also send me the invoice for this month?", [_turn(1)]),  # thanks, but a new ask
        ("Thanks, reconnecting it worked!", [_turn(1, status="attached")]),  # only an attached turn
    ],
)
def test_not_thanks_for_an_answer_that_worked(text: str, conversation: list[Turn]) -> None:
    assert answer_worked(text, conversation) is None


def _reading(route: str, confidence: float, intent: str = "x") -> Classification:
    return Classification(
        route=route,  # type: ignore[typeddict-item]
        intent=intent,
        confidence=confidence,
        route_scores={},
        urgency="high",
        sentiment="negative",
        signals=["legal_threat"],
        evidence=["lawyer"],
        model="local",
    )


def test_a_thanked_reading_is_feedback_and_keeps_the_signals() -> None:
    reading = thanked(_reading("technical", 0.35, "troubleshooting"), "reconnecting it worked")
    assert (reading["route"], reading["intent"], reading["confidence"]) == ("general", "feedback", 1.0)
    assert (reading["urgency"], reading["sentiment"], reading["signals"]) == ("high", "negative", ["legal_threat"])
    assert reading["evidence"] == ["lawyer", "the customer says the earlier answer worked ('reconnecting it worked')"]


@pytest.mark.parametrize(
    ("own", "with_history", "preferred"),
    [
        (("general", 0.30), ("technical", 0.90), True),  # unclear alone: the surer history reading
        (("technical", 0.70), ("technical", 0.95), True),  # clear, same route: the surer one
        (("billing", 0.97), ("technical", 0.99), False),  # clear on another route: a new topic keeps its reading
        (("billing", 0.60), ("technical", 0.99), False),  # clear at exactly the threshold counts as clear
        (("billing", 0.59), ("technical", 0.99), True),  # just below the threshold
        (("general", 0.30), ("technical", 0.30), False),  # not surer
        (("billing", 0.97, "invoice_request"), ("billing", 0.99, "duplicate_charge"), False),  # another intent
        (("billing", 0.50, "invoice_request"), ("billing", 0.99, "duplicate_charge"), True),  # unclear alone
    ],
)
def test_when_the_history_reading_replaces_the_own(
    own: tuple[Any, ...], with_history: tuple[Any, ...], preferred: bool
) -> None:
    assert prefer_history(_reading(*own), _reading(*with_history), 0.6) is preferred


def test_a_history_reading_that_saw_an_injection_or_routes_to_a_person_does_not_replace_the_own() -> None:
    own = _reading("general", 0.30)
    assert prefer_history(own, _reading("technical", 0.90), 0.6)
    tampered = {**_reading("technical", 0.90), "signals": ["prompt_injection"]}
    assert not prefer_history(own, Classification(**tampered), 0.6)  # type: ignore[typeddict-item]
    flagged_too = Classification(**{**own, "signals": ["prompt_injection"]})  # type: ignore[typeddict-item]
    assert prefer_history(flagged_too, Classification(**tampered), 0.6)  # type: ignore[typeddict-item]
    assert not prefer_history(own, _reading("escalation", 0.95), 0.6)
    assert prefer_history(_reading("escalation", 0.30), _reading("escalation", 0.95), 0.6)


def test_a_reading_with_the_history_takes_its_topic_and_keeps_the_messages_own_signals() -> None:
    own = Classification(
        **{**_reading("general", 0.30, "opening_hours"), "urgency": "low", "sentiment": "neutral", "signals": []}
    )  # type: ignore[typeddict-item]
    reading = read_with_history(own, _reading("technical", 0.90, "login_issue"))
    assert (reading["route"], reading["intent"], reading["confidence"]) == ("technical", "login_issue", 0.90)
    assert (reading["urgency"], reading["sentiment"], reading["signals"]) == ("low", "neutral", [])
    assert reading["evidence"] == ["lawyer", "read with the conversation's earlier turns"]


def test_a_short_or_unclear_follow_up_is_read_with_the_conversation() -> None:
    from triage.policies.conversation import SHORT_MESSAGE_WORDS, needs_history

    short = " ".join(["word"] * SHORT_MESSAGE_WORDS)
    longer = f"{short} more"
    assert needs_history(short, 0.99, 0.8)  # at the word limit: short, however clear
    assert not needs_history(longer, 0.99, 0.8)  # one word more and clear: its own reading
    assert not needs_history(longer, 0.8, 0.8)  # exactly at the threshold counts as clear
    assert needs_history(longer, 0.79, 0.8)  # just below it: unclear


def test_a_message_attached_during_an_approval_is_recorded_as_such() -> None:
    from triage.policies.conversation import attached_turn, last_answered

    attached = attached_turn(3, "fu_7", "Any news on my refund?")
    assert attached == Turn(
        turn=3,
        follow_up_id="fu_7",
        message="Any news on my refund?",
        route=None,
        intent=None,
        status="attached",
        outcome=None,
        reply_template=None,
        answered_with=None,
        requests=[],
    )
    answered = _turn(2)
    assert last_answered([_turn(1), answered, attached]) is answered
    assert last_answered([attached]) is None
    assert last_answered([]) is None


def test_the_queue_ticket_lists_each_turn_with_what_it_did() -> None:
    from triage.policies.conversation import attached_turn, history_lines

    filed = _turn(
        1,
        message="Refund   my\nduplicate charge",
        route="billing",
        intent="refund_request",
        status="awaiting_approval",
        answered_with=None,
        requests=["rr_1", "tk_2"],
    )
    answered = _turn(2, message="I still cannot log in")
    attached = attached_turn(3, "fu_1", "Hello? " + "x" * 400)
    lines = history_lines([filed, answered, attached])
    assert (
        lines[0] == "Turn 1 (billing/refund_request -> awaiting_approval, filed rr_1, tk_2): Refund my duplicate charge"
    )
    assert lines[1] == (
        "Turn 2 (technical/login_issue -> completed, answered with reset-your-password): I still cannot log in"
    )
    assert lines[2] == f"Turn 3 (arrived while awaiting approval): {('Hello? ' + 'x' * 400)[:300]}"
    assert history_lines([]) == []


def test_a_long_message_is_cut_on_a_word_and_marked() -> None:
    assert clip("  my login fails \n") == "my login fails"  # stripped, kept whole within the limit
    exact = "a" * 10
    assert clip(exact, limit=10) == exact
    assert clip("alpha beta gamma", limit=12) == "alpha beta …"
    assert clip("alphabetagamma", limit=5) == "alpha …"  # no space to cut at: cut at the limit


def test_the_history_keeps_the_newest_messages_and_a_useful_part_of_the_next() -> None:
    newest, older, oldest = _turn(3, message="n" * 50), _turn(2, message="o" * 100), _turn(1, message="x" * 10)
    assert history_text([oldest, older, newest], limit=150) == "n" * 50 + "\n" + "o" * 100
    assert history_text([oldest, older, newest], limit=160) == "n" * 50 + "\n" + "o" * 100 + "\n" + "x" * 10
    # What is left after the newest is cut to fit when more than 40 characters remain, dropped otherwise.
    assert history_text([oldest, older, newest], limit=91) == "n" * 50 + "\n" + "o" * 41
    assert history_text([oldest, older, newest], limit=90) == "n" * 50


def test_the_history_counts_every_message_it_keeps_against_its_budget() -> None:
    newest, older, oldest = _turn(3, message="n" * 50), _turn(2, message="o" * 100), _turn(1, message="x" * 10)
    # 150 characters used by the two newest: the oldest, however short, no longer fits.
    assert history_text([oldest, older, newest], limit=155) == "n" * 50 + "\n" + "o" * 100


def test_only_the_part_of_a_message_id_before_the_first_at_sign_names_our_message() -> None:
    from triage.policies.conversation import replied_message_ids

    assert replied_message_ids("<msg_7@relay@support.example>", None) == ["msg_7"]


def test_a_turn_record_keeps_the_outcome_and_the_article_a_kb_answer_used() -> None:
    values = {
        "ticket": {"subject": "Login", "body": "I cannot log in"},
        "classification": {"intent": "login_issue"},
        "route": "technical",
        "status": "completed",
        "outcome": "resolved",
        "reply": {"template": "technical.kb_answer"},
        "findings": {"article": "reset-your-password"},
    }
    record = turn_record(2, values)
    assert (record["turn"], record["outcome"], record["answered_with"]) == (2, "resolved", "reset-your-password")
    both = turn_record(2, {**values, "findings": {"answered_with": "sso-setup", "article": "reset-your-password"}})
    assert both["answered_with"] == "sso-setup"  # the article the answer named wins over the one looked up


def test_a_turn_record_keeps_the_subject_and_body_it_was_given_and_nothing_else() -> None:
    def message(**ticket: str) -> str:
        return turn_record(1, {"ticket": ticket})["message"]

    assert message(subject="Login", body="I cannot log in") == "Login\nI cannot log in"
    assert message(body="I cannot log in") == "I cannot log in"  # no subject: no "None" in its place
    assert message(subject="Login") == "Login"
    assert turn_record(1, {"findings": {"article": {"id": "kb_1"}}})["answered_with"] is None  # not an article name


def test_a_cut_lands_on_the_last_space_within_the_limit() -> None:
    # The subject and body are joined by a newline; the cut looks for a space, as the history shows words.
    assert clip("Refund please\nmycardwascharged", limit=18) == "Refund …"


def test_the_reopen_reason_names_the_turn_and_the_article_when_there_is_one() -> None:
    with_article = reopen_reason("It is still not fixed", [_turn(1)])
    assert with_article == (
        "reopened: the customer says the knowledge-base answer of turn 1 (reset-your-password) did not help "
        "('still not')"
    )
    # A knowledge-base reply that named no article is still a knowledge-base answer.
    kb_reply = _turn(2, answered_with=None, reply_template="technical.kb_answer")
    assert reopen_reason("It is still not fixed", [kb_reply]) == (
        "reopened: the customer says the knowledge-base answer of turn 2 did not help ('still not')"
    )
    assert reopen_reason("It is still not fixed", [_turn(3, answered_with=None, reply_template=None)]) is None
