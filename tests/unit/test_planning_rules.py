"""The pure planning rules: where a ticket splits into asks, and what a merged reply must show."""

from __future__ import annotations

import pytest

from triage.policies.planning import ask_status, has_several_asks, merged_reply_findings, split_asks


@pytest.mark.parametrize(
    "text",
    [
        "I was charged twice this month. Please refund the duplicate.",
        "My calendar sync fails and shows an error when I connect it.",
        "Hi, I can't log in to my account since yesterday, please help.",
    ],
)
def test_a_ticket_without_a_cue_is_not_split(text: str) -> None:
    assert split_asks(text) == []


def test_a_ticket_that_says_also_is_split_in_order() -> None:
    text = "I was charged twice, please refund one. Also change my email to a@example.org. Thanks!"
    assert split_asks(text) == ["I was charged twice, please refund one", "change my email to a@example.org"]
    assert split_asks("I was charged twice for my plan, and I also can't log in to my account.") == [
        "I was charged twice for my plan",
        "can't log in to my account",
    ]


def _part(index: int, body: str, **facts: str) -> dict[str, object]:
    return {"index": index, "template": "t", "body": body, "facts": facts}


def test_a_merged_reply_must_answer_every_ask_in_order_with_its_facts() -> None:
    parts = [_part(1, "Refund re_1 of $19.00 done.", refund_id="re_1"), _part(2, "Email change ar_2 filed.")]
    assert merged_reply_findings("1. Refund re_1 of $19.00 done.\n2. Email change ar_2 filed.", parts, set(), {}) == []
    swapped = "2. Email change ar_2 filed.\n1. Refund re_1 of $19.00 done."
    assert merged_reply_findings(swapped, parts, set(), {}) == ["ask 2 is not answered in order"]
    lost = merged_reply_findings("1. Refund done.\n2. Email change ar_2 filed.", parts, set(), {})
    assert lost == ["ask 1 is not answered in order", "ask 1: fact refund_id lost in the merge"]


def test_a_merged_reply_may_not_promise_an_effect_that_was_not_taken() -> None:
    parts = [{"index": 1, "template": "billing.refunded", "body": "Refunded.", "facts": {}}]
    promises = {"billing.refunded": "refund"}
    assert merged_reply_findings("Refunded.", parts, set(), promises) == ["ask 1: promises a refund that was not taken"]
    assert merged_reply_findings("Refunded.", parts, {"refund"}, promises) == []


@pytest.mark.parametrize(
    "text",
    [
        "Please refund the charge. I also need a new invoice.",
        "I have two questions about my plan.",
        "On top of that, my export failed.",
        "Separately, can you update my address?",
    ],
)
def test_a_cue_says_there_may_be_several_asks(text: str) -> None:
    assert has_several_asks(text)


@pytest.mark.parametrize(
    "text", ["Please refund the charge.", "My calendar sync is broken", "Thanks for the quick fix!"]
)
def test_without_a_cue_there_is_one_ask(text: str) -> None:
    assert not has_several_asks(text)


def test_an_ask_is_answered_only_when_its_specialist_resolved_it_or_asked_for_more() -> None:
    assert ask_status("resolved") == "answered"
    assert ask_status("needs_info") == "answered"
    assert ask_status("held_for_person") == "handed_on"
    assert ask_status("handed_off") == "handed_on"


def test_a_reply_that_repeats_an_answer_at_its_end_still_answers_in_order() -> None:
    parts = [_part(1, "Your refund is on its way."), _part(2, "Your email is changed.")]
    reply = "Your refund is on its way. Your email is changed. Your refund is on its way."
    assert merged_reply_findings(reply, parts, set(), {}) == []


def test_a_short_answer_placed_before_the_one_it_follows_is_out_of_order() -> None:
    parts = [_part(1, "Your refund is on its way."), _part(2, "Done.")]
    assert merged_reply_findings("Hello there. Done. Your refund is on its way.", parts, set(), {}) == [
        "ask 2 is not answered in order"
    ]


def test_an_ask_keeps_its_own_words_and_three_words_make_an_ask() -> None:
    assert split_asks("Xero export fails every night. Also send invoice X") == [
        "Xero export fails every night",
        "send invoice X",
    ]
