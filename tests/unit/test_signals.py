"""Urgency, sentiment and escalation flags: a table of tickets and what an escalation rule should see."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triage.models import signals
from triage.models.signals import SIGNAL_FLAGS, detect_signals
from triage.text import fold_case

CASES: list[tuple[str, set[str], str, str]] = [
    # text, expected flags, urgency, sentiment
    ("I will be contacting my lawyer.", {"legal_threat"}, "critical", "neutral"),
    ("My attorneys will hear about this, your service is terrible.", {"legal_threat"}, "critical", "angry"),
    ("See you in small claims court.", {"legal_threat"}, "critical", "neutral"),
    ("We are considering legal action.", {"legal_threat"}, "critical", "neutral"),
    ("I'm not going to sue, I just want my money back.", set(), "normal", "neutral"),
    ("I don't want to involve lawyers, please just fix it.", set(), "normal", "neutral"),
    ("If you don't refund me I'll sue", {"legal_threat"}, "critical", "neutral"),
    (
        "If this isn't refunded by Friday I'm filing a chargeback with my bank. This is unacceptable.",
        {"chargeback", "deadline"},
        "high",
        "angry",
    ),
    ("I'll dispute the charge with my bank.", {"chargeback"}, "high", "neutral"),
    ("my account was hacked", {"security"}, "critical", "neutral"),
    ("The API returns 401 Unauthorized since this morning", set(), "normal", "neutral"),
    ("There is an unauthorized charge on my card", {"security"}, "critical", "neutral"),
    ("Someone logged into my account from Brazil", {"security"}, "critical", "neutral"),
    ("Unauthorised access to our workspace, possible data breach", {"security"}, "critical", "neutral"),
    ("This is a breach of contract.", set(), "normal", "neutral"),
    (
        "This is the third time I'm writing about this and it's still not fixed.",
        {"repeat_contact"},
        "high",
        "negative",
    ),
    ("For the 3rd time: the export is broken.", {"repeat_contact"}, "high", "neutral"),
    ("I keep having to reset my password again and again", {"repeat_contact"}, "high", "neutral"),
    ("Production is down, nobody in our team can log in", {"outage"}, "critical", "neutral"),
    ("Is Northwind down? We can't access anything.", {"outage"}, "critical", "neutral"),
    ("How do I add all users to a project?", set(), "normal", "neutral"),
    ("No one can tell me what my plan includes?", set(), "normal", "neutral"),
    ("this is fucking ridiculous", {"profanity"}, "high", "angry"),
    ("WHY AM I CHARGED TWICE. fix it", {"shouting"}, "high", "angry"),
    ("Please send the SAML and SCIM config for our SSO via the API", set(), "normal", "neutral"),
    ("URGENT: payment failed", {"deadline"}, "high", "neutral"),
    ("This is terrible service!!!", {"shouting"}, "high", "angry"),
    ("Thanks so much!!!", set(), "low", "positive"),
    (
        "Fix this or I'll cancel my subscription and switch to a competitor.",
        {"cancellation_threat"},
        "normal",
        "negative",
    ),
    ("I need the invoice by tomorrow for our audit.", {"deadline"}, "high", "neutral"),
    ("Please reply asap, we go live on Monday.", {"deadline"}, "high", "neutral"),
    ("It's not urgent, but the export is a bit slow.", set(), "low", "neutral"),
    ("This is not really urgent.", set(), "low", "neutral"),
    ("No rush - whenever you have time, how do I export a CSV?", set(), "low", "neutral"),
    ("Love the new editor, thanks for the great work!", set(), "low", "positive"),
    ("Please reset my password, thanks", set(), "normal", "neutral"),
    ("I would love to know how to change my plan", set(), "normal", "neutral"),
    ("I'm not angry, just confused about the invoice.", set(), "normal", "neutral"),
    ("Not happy with the latest update.", set(), "normal", "negative"),
    ("I'm disappointed that the export still fails.", set(), "normal", "negative"),
    (
        "I am disappointed and frustrated, this is unacceptable and the worst support ever.",
        set(),
        "high",
        "angry",
    ),
    ("The app is great, but I'm frustrated that sync fails.", set(), "normal", "negative"),
    ("Where can I download my invoices?", set(), "normal", "neutral"),
]


@pytest.mark.parametrize(("text", "flags", "urgency", "sentiment"), CASES)
def test_signals_table(text: str, flags: set[str], urgency: str, sentiment: str) -> None:
    signals = detect_signals(text)
    assert (set(signals.flags), signals.urgency, signals.sentiment) == (flags, urgency, sentiment)


def test_flags_are_known_names() -> None:
    for text, *_ in CASES:
        assert detect_signals(text).flags <= set(SIGNAL_FLAGS)


def test_evidence_names_the_matched_phrases() -> None:
    signals = detect_signals("Third time asking. My LAWYER will call you, this is unacceptable!!!")
    assert signals.flags == {"repeat_contact", "legal_threat", "shouting"}
    assert {"third time", "lawyer", "unacceptable", "!!!"} <= set(signals.evidence)
    assert signals.urgency == "critical"
    assert signals.sentiment == "angry"


@pytest.mark.parametrize("text", ["Lawyers", "LAWYER", "lawyer's letter", "my layer... I mean my lawyer"])
def test_case_and_plurals(text: str) -> None:
    assert "legal_threat" in detect_signals(text).flags


@pytest.mark.parametrize("text", ["unauthorized charge", "unauthorised login", "we got hackd", "fraudulent order"])
def test_spelling_variants_of_security_words(text: str) -> None:
    assert "security" in detect_signals(text).flags


def test_is_deterministic_and_handles_empty_text() -> None:
    assert detect_signals("") == detect_signals("")
    empty = detect_signals("")
    assert (empty.urgency, empty.sentiment, empty.flags, empty.evidence) == ("normal", "neutral", frozenset(), ())


@pytest.mark.parametrize(
    ("text", "resolved"),
    [
        ("Thanks, I can see the refund now. All good, you can close this.", True),
        ("Please close this ticket, the problem is solved now.", True),
        ("The issue is not resolved now and I still see two charges.", False),
        ("I was charged twice, please refund one.", False),
    ],
)
def test_a_customer_saying_it_is_resolved_is_flagged(text: str, resolved: bool) -> None:
    assert ("resolved" in detect_signals(text).flags) is resolved


@pytest.mark.parametrize(
    "text",
    [
        "EVERYTHING IS DOWN for us",
        "Everything İs down for us",
        "everythıng ıs down for us",
        "everything iſ down for us",
    ],
)
def test_lexicons_match_whatever_the_case_including_the_letters_lower_does_not_fold(text: str) -> None:
    """The lexicons are matched against lower-cased text. Three letters a case-insensitive match treats as ASCII
    are not lowered to it by `str.lower` ("İ" even becomes two characters); they are folded first."""
    signals = detect_signals(text)
    assert "outage" in signals.flags and signals.urgency == "critical"
    assert "everything is down" in signals.evidence


def test_a_lexicon_phrase_with_a_capital_letter_is_refused() -> None:
    from triage.models.signals import _lexicon

    assert _lexicon(r"down\S*", "not working").search("it is downright not working")
    with pytest.raises(ValueError, match="lower-cased"):
        _lexicon("Outage")


_PHRASES = (
    "everything is down",
    "i will contact my lawyer",
    "dispute the charge with my bank",
    "my account was hacked",
    "this is the third time",
    "not happy",
    "thank you so much",
    "no rush",
)


@settings(max_examples=300, deadline=None)
@given(
    phrases=st.lists(st.sampled_from(_PHRASES), min_size=1, max_size=3),
    filler=st.text(max_size=40),
    seed=st.randoms(use_true_random=False),
)
def test_the_flags_do_not_depend_on_how_the_letters_are_cased(phrases: list[str], filler: str, seed: Any) -> None:
    """Any mix of capitals, and the letters a case-insensitive match treats as ASCII ("İ", "ı", "ſ"), gives the same
    flags as the lower-case text (shouting aside: that is about capitals)."""
    text = f" {filler} ".join(phrases)
    variants = {"i": ("i", "I", "\u0130", "\u0131"), "s": ("s", "S", "\u017f")}

    def cases(char: str) -> tuple[str, ...]:  # "ß" upper-cases to "SS": another text, not another case
        upper = char.upper()
        return variants.get(char, (char, upper) if len(upper) == 1 and upper.lower() == char else (char,))

    mixed = "".join(seed.choice(cases(c)) for c in text)
    assert detect_signals(mixed).flags - {"shouting"} == detect_signals(text).flags - {"shouting"}


def _negated_by_rescanning(text: str, start: int, window: int) -> bool:
    """The negation rule as first written: scan `text[:start]` for the clause's last break, read all its words."""
    clause_start = 0
    for boundary in signals._CLAUSE_BREAK.finditer(text, 0, start):
        clause_start = boundary.end()
    words = signals._WORD.findall(text[clause_start:start].lower())
    words = [word for word in words if word not in signals._INTENSIFIERS]
    return any(word.endswith("n't") or word.replace("'", "") in signals._NEGATORS for word in words[-window:])


_PIECES = (
    " ",
    "  ",
    "\t",
    "\n",
    ".",
    ",",
    "!",
    "?",
    ":",
    ";",
    "'",
    "-",
    "/",
    "not",
    "no",
    "never",
    "don't",
    "isn't",
    "nothing",
    "really",
    "very",
    "so",
    "at all",
    "but",
    "butter",
    "however",
    "though",
    "if",
    "iffy",
    "or",
    "order",
    "then",
    "i'll",
    "i will",
    "we'll",
    "we will",
    "otherwise",
    "happy",
    "great",
    "refund",
    "urgent",
    "broken",
    "o'clock",
    "a'b'c",
    "\u0130",
    "\u0131",
    "\u017f",
    "\u212a",
    "\u03c3",
    "x" * 70,
    "word " * 30,
)


@settings(max_examples=400, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(_PIECES), max_size=120),
    window=st.integers(min_value=0, max_value=5),
)
def test_negation_read_from_the_clause_index_is_what_rescanning_the_text_says(pieces: list[str], window: int) -> None:
    """At every position of any text, the indexed reading of a clause's last words gives the rescanning rule's answer
    (breaks that a cut text finds differently, words cut at the window's edge, runs of intensifiers, no spaces)."""
    text = fold_case("".join(pieces))
    clauses = signals._Clauses(text)
    for position in range(len(text) + 1):
        assert clauses.negated(position, window) == _negated_by_rescanning(text, position, window), position


class _Counting:
    """A pattern that counts how many characters its scans were given to read."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern, self.read = pattern, 0

    def finditer(self, text: str, pos: int = 0, endpos: int = sys.maxsize) -> Iterator[re.Match[str]]:
        self.read += min(endpos, len(text)) - pos
        return self.pattern.finditer(text, pos, endpos)

    def findall(self, text: str) -> list[Any]:
        self.read += len(text)
        return self.pattern.findall(text)


def test_a_long_text_full_of_phrases_is_read_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clause breaks and the words before each phrase are not read again from the text's start for every phrase
    (that took time in the square of the text's length: 190 ms for 11,500 characters)."""
    breaks, words = _Counting(signals._CLAUSE_BREAK), _Counting(signals._WORD)
    monkeypatch.setattr(signals, "_CLAUSE_BREAK", breaks)
    monkeypatch.setattr(signals, "_WORD", words)
    sentence = "I am not happy and really angry about the broken refund that failed again and it is urgent "
    text = sentence * 200  # one clause of 18,000 characters, with about 1,000 phrases in it
    got = detect_signals(text)
    assert got.sentiment == "angry"
    assert breaks.read <= 3 * len(text)
    assert words.read <= 4 * len(text)


@pytest.mark.parametrize("word", ["knot", "isn't", "an otherwise", "nobody", "unless"])
def test_negation_where_the_first_words_read_end(word: str) -> None:
    """A word that ends in a negator ("knot", "isn't") cut where the first reading starts is not read as one."""
    for filler in range(2 * signals._WORDS_REACH):
        text = f"it was {word} {'y' * filler} happy and {word} very happy"
        clauses = signals._Clauses(text)
        for position in range(len(text) + 1):
            for window in (1, 2, 4):
                expected = _negated_by_rescanning(text, position, window)
                assert clauses.negated(position, window) == expected, (filler, position, window)
