"""A deterministic check of a model-written reply against the approved one it rewrote.

Facts and actions come from tools and templates; a model may only change the wording. `verify_draft` holds a draft
to that: every fact of the approved reply (amounts, ids, dates, links, numbers, names and personal-data placeholders)
is present and unchanged, no new fact appears, nothing is promised that the approved reply did not promise (a
refund, a credit, a deadline, an action), and no template placeholder, internal note or prompt delimiter leaked.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Verdict", "verify_draft", "verify_summary"]

_FACT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("link", re.compile(r"https?://[^\s<>()\"']+[^\s<>()\"'.,;:!?]")),
    ("amount", re.compile(r"[$€£¥]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)?\s?(?:USD|EUR|GBP)\b")),
    ("date", re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?Z?)?\b")),
    ("id", re.compile(r"\b[a-z]{2,6}_[A-Za-z0-9]{2,}\b|\b[A-Z]{2,6}-\d{2,}\b")),
    ("placeholder", re.compile(r"\[[A-Z_]+_\d+\]")),
    ("number", re.compile(r"(?<![\w.$€£¥])\d+(?:[.,]\d+)*(?:-\d+)?(?![\w%])")),
)
_VERSION = re.compile(r"\b[vV]?\d+(?:\.\d+){1,3}(?:-[0-9A-Za-z][0-9A-Za-z.]*)?\b")
_COMMITMENTS = re.compile(
    r"\b(refund(?:ed|s)?|credit(?:ed|s)?|compensat\w*|discount\w*|voucher\w*|free of charge|waive\w*|"
    r"guarantee\w*|promise\w*|reimburs\w*|we will|we'll|we shall|within|by (?:tomorrow|monday|tuesday|wednesday|"
    r"thursday|friday|the end of)|today|tonight|immediately|right away|deadline|escalat\w*|upgrade\w*|cancel\w*)\b",
    re.I,
)
_LEAKS = re.compile(
    r"\{[^{}\n]{1,40}\}|\[(?:internal|note|todo|tbd|placeholder|insert|name|secret|redacted)[^\]\n]*\]|"
    r"\b(?:TODO|TBD|FIXME|XXX)\b|internal note|note to (?:self|agent)|</?(?:reply|ticket|system)>|\[SECRET_\d+\]",
    re.I,
)


@dataclass(frozen=True)
class Verdict:
    """Whether a draft may be sent, and what is wrong with it if not."""

    ok: bool
    findings: tuple[str, ...] = ()


def _facts(text: str) -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    rest = text
    for kind, pattern in _FACT_PATTERNS:
        for match in pattern.finditer(rest):
            found[(kind, match.group(0))] += 1
        rest = pattern.sub(" ", rest)  # a fact is counted once, by its most specific kind
    return found


def verify_draft(approved: str, draft: str, *, names: Iterable[str] = ()) -> Verdict:
    """Check `draft` (a model's rewrite) against `approved` (the template reply); pure and deterministic."""
    findings: list[str] = []
    if not draft.strip():
        return Verdict(False, ("the draft is empty",))
    expected, written = _facts(approved), _facts(draft)
    for kind, value in sorted(expected):
        if written[(kind, value)] == 0:
            findings.append(f"{kind} {value!r} is missing or changed")
    for kind, value in sorted(written):
        if expected[(kind, value)] == 0:
            findings.append(f"new {kind} {value!r} that the approved reply does not contain")
    for name in names:
        if name and name in approved and name not in draft:
            findings.append(f"name {name!r} is missing or changed")
    promised = Counter(m.group(0).lower() for m in _COMMITMENTS.finditer(approved))
    for phrase, count in sorted(Counter(m.group(0).lower() for m in _COMMITMENTS.finditer(draft)).items()):
        if count > promised[phrase]:
            findings.append(f"new commitment {phrase!r} that the approved reply does not make")
    approved_leaks = {m.group(0) for m in _LEAKS.finditer(approved)}
    for match in _LEAKS.finditer(draft):
        if match.group(0) not in approved_leaks:
            findings.append(f"leaked placeholder or note {match.group(0)!r}")
    return Verdict(not findings, tuple(dict.fromkeys(findings)))


def verify_summary(notes: str, summary: str, *, max_chars: int = 600) -> Verdict:
    """Check a model's summary of release notes: it may leave facts out, never add one.

    Refused: an empty or over-long summary, a fact (version, number, amount, date, id, link) or a commitment (a
    promise, a deadline, a credit) that the notes do not contain, and a leaked placeholder or note.
    """
    text = summary.strip()
    if not text:
        return Verdict(False, ("the summary is empty",))
    findings: list[str] = []
    if len(text) > max_chars:
        findings.append(f"the summary is {len(text)} characters long ({max_chars} at most)")
    versions = {m.group(0).lower().lstrip("v") for m in _VERSION.finditer(notes)}
    for match in _VERSION.finditer(text):
        if match.group(0).lower().lstrip("v") not in versions:
            findings.append(f"version {match.group(0)!r} that the notes do not contain")
    known = _facts(notes)
    for kind, value in sorted(_facts(text)):
        if known[(kind, value)] == 0:
            findings.append(f"{kind} {value!r} that the notes do not contain")
    stated = {m.group(0).lower() for m in _COMMITMENTS.finditer(notes)}
    for match in _COMMITMENTS.finditer(text):
        if match.group(0).lower() not in stated:
            findings.append(f"commitment {match.group(0)!r} that the notes do not make")
    note_leaks = {m.group(0) for m in _LEAKS.finditer(notes)}
    for match in _LEAKS.finditer(text):
        if match.group(0) not in note_leaks:
            findings.append(f"leaked placeholder or note {match.group(0)!r}")
    return Verdict(not findings, tuple(dict.fromkeys(findings)))
