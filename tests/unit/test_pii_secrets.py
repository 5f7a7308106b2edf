"""Secrets nobody named, at their edges: a detector's match taken as its whole token, the entropy test's limits,
and the text around a secret kept exactly as it was."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from triage.policies.pii import _DETECTOR_CLUES, _PATTERNS, _Clues, _high_entropy, _secret_detectors, redact

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"  # the shape of an AWS access key id (detect-secrets' AWS detector)
RANDOM_24 = "aB3dE5gH7jK9mN1pQ2rS4tU6"  # 24 different characters: entropy log2(24) = 4.58 bits


@pytest.mark.parametrize(
    ("text", "expected", "secrets"),
    [
        (f"{AWS_KEY} is my key", "[SECRET_1] is my key", [AWS_KEY]),  # at the very start
        (f"key {AWS_KEY}", "key [SECRET_1]", [AWS_KEY]),  # at the very end
        (f"key {AWS_KEY}.", "key [SECRET_1].", [AWS_KEY]),  # the full stop ends the sentence, not the key
        (f"key {AWS_KEY}X here", "key [SECRET_1] here", [AWS_KEY + "X"]),  # a key may end in X
        (f"id={AWS_KEY} ok", "[SECRET_1] ok", [f"id={AWS_KEY}"]),  # the whole token, back to its start
        (f"={AWS_KEY} ok", "[SECRET_1] ok", [f"={AWS_KEY}"]),  # back to the text's first character
        (f"key {AWS_KEY}/ab here", "key [SECRET_1] here", [f"{AWS_KEY}/ab"]),  # on to the token's end
        (
            f"a {AWS_KEY} b {AWS_KEY[:-1]}Y c",
            "a [SECRET_1] b [SECRET_2] c",
            [AWS_KEY, AWS_KEY[:-1] + "Y"],
        ),
    ],
)
def test_a_detected_key_is_replaced_as_its_whole_token_and_nothing_else(
    text: str, expected: str, secrets: list[str]
) -> None:
    redaction = redact(text)
    assert redaction.text == expected
    assert list(redaction.values.values()) == secrets


@pytest.mark.parametrize(
    ("text", "expected", "secret"),
    [
        ("key AKCabcdefghij1 here", "key [SECRET_1] here", "AKCabcdefghij1"),  # the blanks are the detector's
        ("key AKCabcdefghij1", "key [SECRET_1]", "AKCabcdefghij1"),
        ("=AKCabcdefghij1 here", "[SECRET_1] here", "=AKCabcdefghij1"),
        # two matches that touch (each takes its quotes) are one secret
        ('key "AKCabcdefghij1""APBabcdefgh1" end', "key [SECRET_1] end", '"AKCabcdefghij1""APBabcdefgh1"'),
    ],
)
def test_a_detector_that_matches_the_blanks_around_a_key_takes_no_word_beside_it(
    text: str, expected: str, secret: str
) -> None:
    redaction = redact(text)
    assert (redaction.text, list(redaction.values.values())) == (expected, [secret])


@pytest.mark.parametrize(
    ("token", "secret"),
    [
        (RANDOM_24, True),  # 24 characters: the shortest key taken for one
        (RANDOM_24[:-1], False),  # 23: too short, however random
        ("7K3M9P2Q8R4T6V1W5X0YZABC", True),  # digits and capitals only
        ("7k3m9p2q8r4t6v1w5x0yzabc", True),  # digits and small letters only
        ("aB3dE5gH7jK9mN1p" * 2, True),  # 16 characters twice each: exactly 4.0 bits, the threshold
        ("aB3dE5gH7jK9mN1" * 2, False),  # 15 twice each: 3.91 bits
        ("abcdefghijklmnopqrstuvwxyzAB", False),  # no digit
        ("12345678901234567890123456", False),  # no letter
        ("QuickBrownFox-Jumps-2046813579", False),  # words then a number: a reference (4.7 bits all the same)
        ("quickbrownfoxjumps-2046813579", False),
        ("QUICKBROWNFOXJUMPS-2046813579", False),
    ],
)
def test_the_entropy_test_at_its_limits(token: str, secret: bool) -> None:
    assert _high_entropy(token) is secret
    expected = "use [SECRET_1] now" if secret else f"use {token} now"
    assert redact(f"use {token} now").text == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"use {RANDOM_24}X.", "use [SECRET_1]."),  # the full stop is not part of the key
        (f"use {RANDOM_24}X now", "use [SECRET_1] now"),  # a key that ends in X keeps it
        (f"use {RANDOM_24[:-1]}.", f"use {RANDOM_24[:-1]}."),  # 23 characters before the full stop: no key
    ],
)
def test_an_unnamed_key_at_the_end_of_a_sentence(text: str, expected: str) -> None:
    assert redact(text).text == expected


def test_a_quoted_password_keeps_its_quotes_and_the_words_after_it() -> None:
    redaction = redact('my password "abc123" ok')
    assert (redaction.text, redaction.values) == ('my password "[SECRET_1]" ok', {"[SECRET_1]": "abc123"})


def test_redacting_into_numbers_on_from_kinds_whose_names_hold_an_underscore() -> None:
    first = redact("from 10.0.0.1, ssn 123-45-6789")
    assert first.values == {"[IP_ADDRESS_1]": "10.0.0.1", "[NATIONAL_ID_1]": "123-45-6789"}
    second = redact("then 10.0.0.2, ssn 987-65-4321", into=first)
    assert second.text == "then [IP_ADDRESS_2], ssn [NATIONAL_ID_2]"
    assert second.values == {**first.values, "[IP_ADDRESS_2]": "10.0.0.2", "[NATIONAL_ID_2]": "987-65-4321"}


HEX_48 = "0123456789abcdef" * 3
TOKEN_35 = "aB3dE5gH7jK9mN1pQ2rS4tU6vW8xY0zA1b2"


@pytest.mark.parametrize(
    "text",
    [
        "key AKCabcdefghij1 here",
        'x="APFabcdefgh1" y',
        f"secret_key = {HEX_48}",
        f"IBM_COS_HMAC_SECRET_ACCESS_KEY: '{HEX_48}'",
        f"\u017fecret-key={HEX_48}",  # a long s: re.IGNORECASE reads it as "s"
        f"{'a1' * 16}-us12",
        f"bot 123456789:{TOKEN_35} now",
        f"bot \u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668:{TOKEN_35} now",  # Arabic-Indic digits are \\d
    ],
)
def test_a_detector_with_a_clue_still_finds_its_secret(text: str) -> None:
    assert "[SECRET_1]" in redact(text).text


def test_the_clues_belong_to_the_installed_detectors() -> None:
    """Every clue names an installed detect-secrets pattern (a changed pattern loses its clue, never a match)."""
    installed = {(pattern.pattern, pattern.flags) for pattern, _ in _secret_detectors()}
    assert set(_DETECTOR_CLUES) <= installed, "detect-secrets changed a pattern: look again at `_DETECTOR_CLUES`"


CLUE_PIECES = [*"0123456789abcdefAPKCSECRETusk:-_='\" \n", "\u017f", "\u0131", "\u0130", "\u212a", "\u0663"]
CLUE_PIECES += ["AKC", "AP", "-us", "secret", "SECRET", "key", "access", "cos", "hmac", "ibm", "123456789:", "a1" * 16]
CLUE_PIECES += [HEX_48, TOKEN_35, "\u017fecret", "SECRE", "_key", "ecret"]
CLUE_PIECES += ["4111 1111 1111 1111", "2345 6789 0123", "AB 12 34 56 C", "ABCPE1234F", "fe80::1", "2001:db8:", "::"]
CLUE_PIECES += [".", "(", ")", "+", "Q", "Z", "\u0966", "\u0967"]  # Devanagari 0 and 1
CLUE_TEXT = st.lists(st.sampled_from(CLUE_PIECES), max_size=16).map("".join)
"""Texts built of what the clued patterns match: each clue's literal, the characters around it, look-alike letters,
digits of other scripts, and numbers of the shapes the digit counts stand for (a card, an Aadhaar, a UK NI number,
a PAN, IPv6 addresses)."""


@settings(max_examples=1000, deadline=None)
@given(CLUE_TEXT)
@example("card 4222222222222 ok")  # the fewest digits a card number has: 13
@example(f"\u017fecret_key={HEX_48}")  # a long s: in the text case-folded as re.IGNORECASE compares it
@example("\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669:" + "aBcDe" * 7)  # another script's digits only
def test_a_pattern_never_matches_a_text_without_its_clue(text: str) -> None:
    """Redaction skips a pattern whose clue a text lacks: that must never skip a match it would have replaced.

    A detector replaces every match; an own pattern only the matches its check accepts (a key named as such needs a
    digit in its value, so its clue asks for one).
    """
    clues = _Clues(text)
    for pattern, needs in _secret_detectors():
        if not needs(clues):
            assert pattern.search(text) is None, (pattern.pattern, text)
    for _, pattern, check, needs in _PATTERNS:
        if not needs(clues):
            assert not any(check(match) for match in pattern.finditer(text)), (pattern.pattern, text)
