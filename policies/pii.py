"""Find personal data in text and swap it for stable placeholders before a model sees it.

Detected: email addresses, payment card numbers (checked with Luhn), IBANs (checked with mod 97), US social
security and UK national insurance numbers, and phone numbers. The same value gets the same placeholder within one
text (`[EMAIL_1]` twice), so a model can still tell that two mentions are one address, and `restore` puts the real
values back into what the model wrote.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PII_KINDS = ("IBAN", "CARD", "NATIONAL_ID", "EMAIL", "PHONE")


def luhn_valid(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum that payment card numbers carry."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """Whether a string is an IBAN with a correct mod-97 check."""
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1
    except ValueError:
        return False


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")


def _looks_like_phone(candidate: str) -> bool:
    return 8 <= len(_digits(candidate)) <= 15 and not _DATE.fullmatch(candidate.strip())


# Each kind: a pattern and a check on the match (False: not personal data after all). Order matters: an IBAN or a
# card number also looks like a phone number, so they are replaced first.
_PATTERNS: tuple[tuple[str, re.Pattern[str], Callable[[str], bool]], ...] = (
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), iban_valid),
    ("CARD", re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])"), lambda m: luhn_valid(_digits(m))),
    ("NATIONAL_ID", re.compile(r"\b\d{3}-\d{2}-\d{4}\b|\b[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"), bool),
    ("EMAIL", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"), bool),
    ("PHONE", re.compile(r"(?<![\w\d])(?:\+|\()?\d[\d ().\-]{7,17}\d(?![\d])"), _looks_like_phone),
)
_PLACEHOLDER = re.compile(r"\[(?:" + "|".join(PII_KINDS) + r")_\d+\]")


@dataclass
class Redaction:
    """A redacted text with the mapping that restores it."""

    text: str
    values: dict[str, str] = field(default_factory=dict)
    """placeholder -> original value."""

    @property
    def counts(self) -> dict[str, int]:
        """How many distinct values of each kind were redacted."""
        return dict(Counter(placeholder[1:].rsplit("_", 1)[0] for placeholder in self.values))


def redact(text: str, *, into: Redaction | None = None) -> Redaction:
    """Replace personal data in `text` with placeholders; reuse `into`'s placeholders for values seen before."""
    result = Redaction(text="", values=dict(into.values) if into else {})
    by_value = {value: placeholder for placeholder, value in result.values.items()}
    counters: Counter[str] = Counter(placeholder[1:].rsplit("_", 1)[0] for placeholder in result.values)

    def substitute(kind: str, check: Callable[[str], bool]) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            value = match.group(0)
            if _PLACEHOLDER.fullmatch(value) or not check(value):
                return value
            if value not in by_value:
                counters[kind] += 1
                by_value[value] = f"[{kind}_{counters[kind]}]"
                result.values[by_value[value]] = value
            return by_value[value]

        return replace

    for kind, pattern, check in _PATTERNS:
        text = pattern.sub(substitute(kind, check), text)
    result.text = text
    return result


def restore(text: str, redaction: Redaction) -> str:
    """Put the original values back in place of their placeholders."""
    return _PLACEHOLDER.sub(lambda m: redaction.values.get(m.group(0), m.group(0)), text)


def redact_tree(value: Any) -> Any:
    """A copy of `value` (dicts, lists, strings) with personal data in every string swapped for placeholders."""
    if isinstance(value, str):
        return redact(value).text
    if isinstance(value, dict):
        return {key: redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(item) for item in value]
    return value
