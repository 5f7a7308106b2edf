"""Detect prompt-injection and jailbreak attempts in ticket text.

Detection only flags; it never grants or refuses anything by itself. Whatever it misses, a ticket still cannot
cause an effect its specialist is not granted, and refunds are only ever requested for payments the helpdesk shows.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

from triage.text import fold_case

INJECTION_SIGNAL = "prompt_injection"
"""The classification signal of a ticket whose text holds an injection attempt (set by the model tier's guard)."""


def _says(*words: str) -> Callable[[str], bool]:
    """A test that a case-folded text contains one of `words` (lower-case ASCII)."""
    return lambda folded: any(word in folded for word in words)


_TOOL_WORDS = _says("<!--", "tool", "function", "action", "amount_cents")


def _tool_markup_words(folded: str) -> bool:
    """Markup, a tool's name, or a call with a keyword argument (`f(a=1)`: a parenthesis and an equals sign)."""
    return _TOOL_WORDS(folded) or ("(" in folded and "=" in folded)


_RULES: tuple[tuple[str, re.Pattern[str], Callable[[str], bool]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE), needs)
    for name, pattern, needs in (
        (
            "override_instructions",
            r"\b(ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}\b(previous|prior|above|earlier|all|your|the|"
            r"any)\b[^.\n]{0,20}\b(instructions?|rules?|prompts?|guidelines?|polic(y|ies)|directives?)\b",
            _says("ignore", "disregard", "forget", "override", "bypass"),
        ),
        (
            "new_instructions",
            r"\b(new|updated|real|actual)\s+(system\s+)?instructions?\s*(:|are\b)",
            _says("instruction"),
        ),
        (
            "system_prompt",
            r"\b(system|developer)\s*(prompt|message|mode)\b|<\s*/?\s*(system|assistant)\s*>",
            _says("system", "developer", "assistant"),
        ),
        (
            "role_play",
            r"\b(you are now|from now on,? you|pretend (to be|you are)|act as if you|roleplay as|"
            r"(act|behave) as (an? |the )?(ai|assistant|bot|chatbot|language model|llm|system))\b",
            _says("you are now", "from now on", "pretend", "act as", "roleplay as", "behave as"),
        ),
        (
            "jailbreak",
            r"\b(jailbreak|DAN mode|do anything now|no restrictions|unfiltered mode)\b",
            _says("jailbreak", "dan mode", "do anything now", "no restrictions", "unfiltered mode"),
        ),
        (
            "tool_markup",
            r"<!--.*?-->|\b(tool|function|action)[_ ]?(call)?\s*[:=(]\s*\w+|\b\w+\s*\(\s*\w+\s*=|"
            r"\bamount_cents\s*[=:]",
            _tool_markup_words,
        ),
        (
            "deception",
            r"\bpretend (that )?(the|this|my|your|it|a)\b|\b(say|tell (me|them)) (that )?it (was|is) approved\b",
            _says("pretend", "approved"),
        ),
        (
            "forced_action",
            r"\b(you (must|will|have to)|i (order|command|instruct) you to|immediately)\b[^.\n]{0,40}"
            r"\b(refund|transfer|credit|delete|approve|wire)\b[^.\n]{0,40}\b(without|no need for|skip)\b"
            r"[^.\n]{0,20}\b(approval|verification|review|checks?)\b",
            _says("without", "no need for", "skip"),
        ),
        (
            "approval_claim",
            r"\b(already|pre-?)\s*(approved|authori[sz]ed)\b[^.\n]{0,40}\b(by|from)\b[^.\n]{0,30}"
            r"\b(manager|supervisor|admin|ceo|support|your team)\b",
            _says("approved", "authori"),
        ),
    )
)
"""Each rule: its name, its pattern, and a test on the text case-folded (`fold_case`) that is true wherever the
pattern can match (a word every match holds): a rule whose words a text lacks is not searched. Nine searches took
about 80 us on a bench ticket; most tickets hold none of the words."""
_BASE64 = re.compile(r"\b[A-Za-z0-9+/]{24,}={0,2}")


@dataclass(frozen=True)
class InjectionCheck:
    """What the detector found: the rule names that fired and the matched text."""

    rules: tuple[str, ...]
    evidence: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        """Whether any rule fired."""
        return bool(self.rules)


def detect_injection(text: str) -> InjectionCheck:
    """Check a ticket's text, and any base64 blobs in it decoded, for injection and jailbreak patterns."""
    texts = [text, *_decoded_blobs(text)]
    rules: list[str] = []
    evidence: list[str] = []
    for candidate in texts:
        folded = fold_case(candidate)
        for name, pattern, needs in _RULES:
            match = pattern.search(candidate) if needs(folded) else None
            if match and name not in rules:
                rules.append(name if candidate is text else f"{name} (base64)")
                evidence.append(match.group(0)[:80])
    return InjectionCheck(rules=tuple(rules), evidence=tuple(evidence))


def _decoded_blobs(text: str) -> list[str]:
    decoded = []
    for blob in _BASE64.findall(text):
        try:
            plain = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if plain.isprintable():
            decoded.append(plain)
    return decoded
