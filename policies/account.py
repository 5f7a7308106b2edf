"""Pure rules for account requests: which changes need the customer's explicit words before anything is filed."""

from __future__ import annotations

import re

# Irreversible or data-releasing requests are only filed when the ticket asks for them in so many words; a
# classifier's guess ("something is wrong with my account" -> account_deletion) is not enough.
_EXPLICIT: dict[str, re.Pattern[str]] = {
    "account_deletion": re.compile(
        r"\b(delet\w*|clos\w*|erase|erasure|remov\w*|terminat\w*|cancel\w*|shut down)\b[^.?!\n]{0,40}"
        r"\b(account|profile|data|workspace|everything|me)\b|\bright to (be forgotten|erasure)\b"
        r"|\b(account|data|profile)\b[^.?!\n]{0,30}\b(delet\w*|erase\w*|remov\w*|clos\w*)\b",
        re.IGNORECASE,
    ),
    "data_export": re.compile(
        r"\b(export\w*|copy|copies|download\w*|send me|access request|portability|dsar|takeout)\b[^.?!\n]{0,40}"
        r"\b(data|information|everything|files|account)\b|\bsubject access\b|\b(data|information) (export|request)\b",
        re.IGNORECASE,
    ),
}


def needs_explicit_request(kind: str) -> bool:
    """Whether `kind` is only filed on an explicit request."""
    return kind in _EXPLICIT


def explicitly_requested(kind: str, text: str) -> bool:
    """Whether the ticket asks for `kind` in so many words (always true for kinds without the rule)."""
    pattern = _EXPLICIT.get(kind)
    return pattern is None or pattern.search(text) is not None
