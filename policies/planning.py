"""Pure rules for tickets that ask several things: where to split, how many asks, what a merged reply must show.

Splitting is for the common cases (the local tier): a ticket is split only where the customer says there is more
than one thing ("also", "as well", "two problems", ...), so a ticket without such a cue never pays for planning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

PLAN_TEMPLATE = "plan.answers"
"""The merged draft of a ticket with several asks: its facts are the asks' own drafts, in order (`parts`)."""
DEFAULT_MAX_ASKS = 3
"""Asks handled in one ticket unless the policy bundle says otherwise (`[planning] max_asks` in support.toml)."""
MAX_ASKS_CEILING = 10
"""The most asks a bundle may allow: each one runs a specialist in parallel within one run's budget."""
MIN_ASK_WORDS = 3
"""A part shorter than this is not an ask of its own ('Thanks.', 'Hi team,')."""

_CUE = re.compile(
    r"\b(?:also|as\s+well|additionally|another\s+(?:thing|issue|question|problem)|separately|"
    r"(?:two|three|2|3)\s+(?:things|problems|issues|questions|requests)|on\s+top\s+of\s+that|while\s+you'?re\s+at\s+it)\b",
    re.IGNORECASE,
)
_BOUNDARY = re.compile(
    r"(?<=[.!?])\s+|\n+|;\s*|,?\s+\band\s+(?:I\s+)?also\b\s*|\bAlso\b[,:]?\s*|,?\s+(?:and\s+)?separately,?\s*|"
    r",?\s+and\s+(?=I\s+(?:can'?t|cannot|also|need|want|would\s+like)\b)",
)


def has_several_asks(text: str) -> bool:
    """Whether the customer signals more than one thing (the cheap test before any split)."""
    return _CUE.search(text) is not None


def split_asks(text: str) -> list[str]:
    """The parts of a ticket that may each be an ask, in order; [] when it gives no cue that there are several."""
    if not has_several_asks(text):
        return []
    parts = [part.strip(" ,.;:-") for part in _BOUNDARY.split(text)]
    return [part for part in parts if len(part.split()) >= MIN_ASK_WORDS]


def ask_status(outcome: str) -> str:
    """An ask's status from its specialist's outcome: answered, or handed_on to a person."""
    return "answered" if outcome in ("resolved", "needs_info") else "handed_on"


def merged_reply_findings(
    reply_body: str, parts: Sequence[Mapping[str, Any]], taken: set[str], promises: Mapping[str, str]
) -> list[str]:
    """Why a merged reply may not be sent as it is ([] when it may).

    Each part (`index`, `body`, `facts`, `template`) must appear, in order; every fact value it carries must survive;
    a part whose template says an action was done (`promises`: template -> action kind) needs that action `taken`.
    """
    findings: list[str] = []
    position = 0
    for part in parts:
        found = reply_body.find(str(part["body"]), position)
        if found < 0:
            findings.append(f"ask {part['index']} is not answered in order")
        else:
            position = found + len(str(part["body"]))
        for key, value in part["facts"].items():
            if isinstance(value, str | int) and str(value) and str(value) not in reply_body:
                findings.append(f"ask {part['index']}: fact {key} lost in the merge")
        promised = promises.get(str(part["template"]))
        if promised is not None and promised not in taken:
            findings.append(f"ask {part['index']}: promises a {promised} that was not taken")
    return findings
