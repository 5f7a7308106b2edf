"""Find secrets and personal data in text and swap them for stable placeholders before a model sees it.

Once a model is external, this is the only thing between a customer's secrets and a third party. Detected:

- secrets (`SECRET`): provider keys and tokens found by detect-secrets' own detectors (AWS, GitHub, GitLab, Slack,
  Stripe, OpenAI, JWTs, private-key headers, credentials in URLs, ...), whole private-key blocks, whatever follows
  "password"/"passcode"/"PIN" (is, was, :, =), keys and tokens named as such, and long high-entropy strings;
- payment data: IBANs (mod-97 checked), card numbers (Luhn checked), card security codes (`CVV`, after its name);
- identifiers: US SSNs, UK National Insurance numbers and Aadhaar numbers (Verhoeff checked) as `NATIONAL_ID`;
  passport numbers (`PASSPORT`) and tax ids (`TAX_ID`: after their name, plus the PAN and EIN formats);
- contact and whereabouts: email addresses, also written out ("john at example dot com"); IPv4/IPv6 addresses
  (`IP_ADDRESS`); dates of birth after their name (`DATE_OF_BIRTH`); street addresses and UK postcodes
  (`ADDRESS`); phone numbers (`PHONE`: international or trunk-prefixed forms, or after a phone word).

Order numbers, amounts and payment dates stay: the model needs them and they identify no one. The same value gets
the same placeholder within one text (`[EMAIL_1]` twice), and `restore` puts the real values back into what the
model wrote, except secrets, which are never put back anywhere.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from triage.text import digit_count, fold_case, has_digit

SECRET_KINDS = frozenset({"SECRET"})
"""Kinds `restore` never puts back: a secret does not travel, not even back to the customer."""
REMOVED_SECRET = "[removed]"


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
    compact = candidate.replace(" ", "")  # int(char, 36) reads either case
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1
    except ValueError:
        return False


_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def verhoeff_valid(digits: str) -> bool:
    """Whether a digit string passes the Verhoeff checksum that Aadhaar numbers carry."""
    check = 0
    for index, char in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[index % 8][int(char)]]
    return check == 0


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


_NUMERIC_DATE = r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}"
_DATE = re.compile(_NUMERIC_DATE)
_PHONE_WORDS = re.compile(
    r"(?i)\b(?:call|phone|tel|telephone|mobile|cell|whatsapp|ring|text|sms|landline|number|reach me|contact me)\b"
)
_REFERENCE_WORDS = re.compile(
    r"(?i)(?:order|invoice|ticket|ref|reference|case|tracking|receipt|transaction|account|customer|id|no\.?|#)\W{0,3}$"
)


def _before(match: re.Match[str]) -> str:
    """The 30 characters before a match: where a word naming it (a phone, an order) would be."""
    return match.string[max(0, match.start() - 30) : match.start()]


def _no_reference_before(match: re.Match[str]) -> bool:
    return not _REFERENCE_WORDS.search(_before(match))


def _phone(match: re.Match[str]) -> bool:
    candidate = match.group(0)
    digits = _digits(candidate)
    if not 8 <= len(digits) <= 15 or _DATE.fullmatch(candidate.strip()):
        return False
    before = _before(match)
    if _REFERENCE_WORDS.search(before):
        return False
    if candidate.startswith(("+", "(")) or digits.startswith("0"):
        return True
    return bool(_PHONE_WORDS.search(before))


_TLDS = r"(?:com|org|net|edu|gov|io|co|uk|de|fr|es|it|nl|be|ch|at|se|no|dk|fi|ie|pt|pl|in|au|ca|us|info|biz|me)"
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_ANY_DATE = (
    rf"(?:{_NUMERIC_DATE}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH},?\s+\d{{4}}|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})"
)
_STREET_TYPES = (
    r"(?:street|st|road|rd|avenue|ave|lane|ln|drive|dr|boulevard|blvd|way|court|ct|place|pl|close|terrace|"
    r"crescent|square|sq|parkway|highway|hwy|row|mews|gardens|grove|hill)"
)
_PASSWORD_STOPWORDS = frozenset(
    {
        "not",
        "wrong",
        "incorrect",
        "invalid",
        "expired",
        "too",
        "the",
        "my",
        "a",
        "an",
        "no",
        "still",
        "being",
        "now",
        "reset",
        "correct",
        "right",
        "rejected",
        "changed",
        "missing",
        "empty",
        "required",
        "compromised",
        "stolen",
        "leaked",
        "weak",
        "long",
        "short",
        "case",
        "forgotten",
        "lost",
        "working",
        "accepted",
        "same",
        "different",
        "there",
        "it",
        "this",
        "that",
    }
)


def _password_value(match: re.Match[str]) -> bool:
    return match.group("value").lower().strip(".,;:!?'\"") not in _PASSWORD_STOPWORDS


_Check = Callable[[re.Match[str]], bool]


def _always(match: re.Match[str]) -> bool:
    return True


class _Clues:
    """What one version of the text contains that some patterns cannot match without (each worked out once)."""

    __slots__ = ("_digit", "_digits", "_folded", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._digit: bool | None = None
        self._digits: int | None = None
        self._folded: str | None = None

    @property
    def digit(self) -> bool:
        r"""Whether the text has a digit (any script's, as `\d` in the patterns reads one)."""
        if self._digit is None:
            self._digit = has_digit(self.text)
        return self._digit

    @property
    def digits(self) -> int:
        r"""How many digits the text has (any script's, as `\d` reads them)."""
        if self._digits is None:
            self._digits = digit_count(self.text) if self.digit else 0
        return self._digits

    def says(self, *words: str) -> bool:
        """Whether the text contains one of `words` (lower-case ASCII) as a case-insensitive pattern would see it."""
        if self._folded is None:
            self._folded = fold_case(self.text)
        return any(word in self._folded for word in words)


_Needs = Callable[[_Clues], bool]


def _needs_nothing(clues: _Clues) -> bool:
    return True


def _needs_digit(clues: _Clues) -> bool:
    return clues.digit


def _needs_digit_and_dash(clues: _Clues) -> bool:
    return "-" in clues.text and clues.digit


# Each kind: a pattern, a check on the match (False: not personal data after all), and what the text must contain
# for the pattern to match at all (a digit, as many digits as a match holds, a word it names), so that the search
# is skipped when it cannot match: most texts redacted have no digit, and a search costs 2-11 us. A pattern with a
# `value` group replaces only that group (the words naming it stay, e.g. "password is [SECRET_1]"). Order matters:
# a more specific kind is replaced before a general one that would also match (a card number also looks like a
# phone).
_PATTERNS: tuple[tuple[str, re.Pattern[str], _Check, _Needs], ...] = (
    (
        "SECRET",
        re.compile(
            r"(?i)\b(?:pass(?:word|code|phrase)?|pwd|pin|passwort|mot de passe|contraseña)\b\s*[:=]?\s*"
            r"[\"“'](?P<value>[^\"”'\s]{3,})[\"”']"
        ),
        _always,
        lambda c: c.says("pass", "pw", "pin", "contrase"),
    ),
    (
        "SECRET",
        re.compile(
            r"(?i)\b(?:pass(?:word|code|phrase)?|pwd|pw|pin(?: code)?|passwort|mot de passe|contraseña)\b"
            r"(?:\s+(?:is now|is|was|ist|war|est|es)\b|\s*[:=])\s*[\"'“]?"
            r"(?P<value>[^\s\"'”]+?)[\"'”]?(?=[\s,;]|[.!?](?:\s|$)|$)"
        ),
        _password_value,
        lambda c: c.says("pass", "pw", "pin", "contrase"),
    ),
    (
        "SECRET",
        re.compile(r"\b(?:sk|pk|rk)[-_](?:live|test|prod)[-_][A-Za-z0-9_-]{8,}"),
        _always,
        lambda c: any(word in c.text for word in ("live", "test", "prod")),
    ),
    ("SECRET", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"), _always, lambda c: "sk-" in c.text),
    (
        "SECRET",
        re.compile(
            r"(?i)\b(?:api[ _-]?key|access[ _-]?key|secret(?:[ _-]?key)?|auth[ _-]?token|access[ _-]?token|token|"
            r"bearer)\b(?:\s+(?:is|was|=|:)|\s*[:=])?\s*[\"']?(?P<value>[A-Za-z0-9_\-./+=]{12,})"
        ),
        lambda m: bool(re.search(r"\d", m.group("value"))) and bool(re.search(r"[A-Za-z]", m.group("value"))),
        lambda c: c.digit and c.says("key", "secret", "token", "bearer"),
    ),
    (
        "IBAN",
        re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
        lambda m: iban_valid(m[0]),
        _needs_digit,
    ),
    (
        "CARD",
        re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])"),
        lambda m: luhn_valid(_digits(m[0])),
        lambda c: c.digits >= 13,
    ),
    (
        "CVV",
        re.compile(
            r"(?i)\b(?:cvv2?|cvc2?|csc|cid|security code|card verification(?: code| value)?)\b\D{0,15}?"
            r"(?P<value>(?<!\d)\d{3,4})(?!\d)"
        ),
        _always,
        lambda c: c.digit and c.says("cvv", "cvc", "csc", "cid", "security code", "card verification"),
    ),
    ("EMAIL", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"), _always, lambda c: "@" in c.text),
    (
        "EMAIL",
        re.compile(
            r"(?i)\b[A-Za-z0-9._%+\-]+\s*(?:\s(?:at)\s|[\(\[\{<]\s*at\s*[\)\]\}>])\s*[A-Za-z0-9\-]+"
            r"(?:\s*(?:\s(?:dot)\s|[\(\[\{<]\s*dot\s*[\)\]\}>])\s*[A-Za-z0-9\-]+)*"
            rf"\s*(?:\s(?:dot)\s|[\(\[\{{<]\s*dot\s*[\)\]\}}>])\s*{_TLDS}\b"
        ),
        _always,
        lambda c: c.says("dot"),
    ),
    (
        "IP_ADDRESS",
        re.compile(
            r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.]\d)"
        ),
        _always,
        lambda c: c.text.count(".") >= 3 and c.digit,
    ),
    (
        "IP_ADDRESS",
        re.compile(
            r"(?i)(?<![\w:])(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}(?![\w:])|(?<![\w:])(?:[0-9a-f]{1,4}:){1,6}:"
            r"(?:[0-9a-f]{1,4}:){0,5}[0-9a-f]{1,4}(?![\w:])"
        ),
        _always,
        lambda c: c.text.count(":") >= 2,  # either form has two colons at least
    ),
    (
        "DATE_OF_BIRTH",
        re.compile(
            rf"(?i)\b(?:date of birth|birth ?date|d\.?o\.?b\.?|born(?: on)?|birthday)\b\W{{0,5}}(?:is\s+)?"
            rf"(?P<value>{_ANY_DATE})"
        ),
        _always,
        lambda c: c.digit and c.says("birth", "born", "dob", "d.o", "o.b"),  # "d.ob", "do.b" and "d.o.b" too
    ),
    (
        "PASSPORT",
        re.compile(
            r"(?i)\bpassport\b(?:\s+(?:no\.?|number|num|#|id))?\s*(?:is\s+|:\s*|#\s*)?(?P<value>(?=[A-Z0-9]*\d)[A-Z0-9]{6,9})\b"
        ),
        _always,
        lambda c: c.digit and c.says("passport"),
    ),
    (
        "TAX_ID",
        re.compile(
            r"(?i)\b(?:tax (?:id|number|code|identification number)|tin|vat (?:no\.?|number|id)|ein|utr|itin|"
            r"steuer-?id|steuernummer|steuer-identifikationsnummer|pan(?: number)?|nif|codice fiscale|cpf|rfc)\b"
            r"\W{0,5}(?:is\s+)?(?P<value>(?=[A-Z0-9 ./-]*\d)[A-Z0-9][A-Z0-9 ./-]{5,18}[A-Z0-9])"
        ),
        _always,
        lambda c: (
            c.digit
            and c.says("tax", "tin", "vat", "ein", "utr", "steuer", "pan", "nif", "codice fiscale", "cpf", "rfc")
        ),
    ),
    ("TAX_ID", re.compile(r"\b[A-Z]{3}[PCHFATBLJG][A-Z]\d{4}[A-Z]\b"), _always, lambda c: c.digits >= 4),
    ("TAX_ID", re.compile(r"(?<![\w-])\d{2}-\d{7}(?![\w-])"), _no_reference_before, _needs_digit_and_dash),
    ("NATIONAL_ID", re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])"), _always, _needs_digit_and_dash),
    (
        "NATIONAL_ID",
        re.compile(r"(?i)\b[A-CEGHJ-TW-Z][A-CEGHJ-NP-TW-Z][ -]?\d{2}[ -]?\d{2}[ -]?\d{2}[ -]?[A-D]\b"),
        _always,
        lambda c: c.digits >= 6,
    ),
    (
        "NATIONAL_ID",
        re.compile(r"(?<![\d-])[2-9]\d{3}[ -]?\d{4}[ -]?\d{4}(?![\d-])"),
        lambda m: verhoeff_valid(_digits(m[0])),
        lambda c: c.digits >= 12,
    ),
    (
        "ADDRESS",
        re.compile(
            rf"(?i)\b(?:(?:flat|apt|apartment|unit|suite)\s+\d+[a-z]?,?\s+)?\d{{1,5}}[a-z]?,?\s+(?:[A-Z][a-z'’-]+\s+){{1,3}}"
            rf"{_STREET_TYPES}\b\.?"
        ),
        lambda m: bool(re.search(r"\s[A-Z]", m[0])),
        _needs_digit,
    ),
    (
        "ADDRESS",
        re.compile(r"\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|weg|platz|gasse|allee|ring|damm)\s+\d{1,4}[a-z]?\b"),
        _always,
        _needs_digit,
    ),
    (
        "ADDRESS",
        re.compile(
            r"(?i)\b\d{1,4}(?:bis|ter)?,?\s+(?:rue|avenue|av\.|boulevard|bd|chemin|place|calle|via|viale|piazza)"
            r"\s+(?:(?:de|du|des|la|le|l'|del|della|di)\s+)*[A-ZÀ-Ý][\w'’-]+(?:\s+[A-ZÀ-Ý][\w'’-]+){0,2}"
        ),
        _always,
        lambda c: c.digit and c.says("rue", "av", "boulevard", "bd", "chemin", "place", "calle", "via", "piazza"),
    ),
    ("ADDRESS", re.compile(r"\b(?:GIR 0AA|[A-Z]{1,2}\d[A-Z\d]? ?\d[ABD-HJLNP-UW-Z]{2})\b"), _always, _needs_digit),
    ("PHONE", re.compile(r"(?<![\w\d-])(?:\+|\()?\d[\d ().\-]{7,17}\d(?![\d])"), _phone, _needs_digit),
)
PII_KINDS = tuple(dict.fromkeys(kind for kind, *_ in _PATTERNS))
"""Every kind of data `redact` replaces, in the order it looks for them."""
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)
_PLACEHOLDER = re.compile(r"\[(?:" + "|".join(PII_KINDS) + r")_\d+\]")
_TOKEN_CHAR = r"[^\s\"'<>()\[\]{},;]"
_TOKEN_CHARS = re.compile(_TOKEN_CHAR + "+")
_KEY_MIN_CHARS = 24
"""The shortest token the entropy test takes for a key."""
_LONG_TOKEN = re.compile(f"{_TOKEN_CHAR}{{{_KEY_MIN_CHARS},}}")
"""A whole token of `_TOKEN_CHARS` long enough for `_high_entropy` to look at (shorter ones never pass it)."""


_DETECTOR_CLUES: dict[tuple[str, int], _Needs] = {
    (r'(?:\s|=|:|"|^)AKC[a-zA-Z0-9]{10,}(?:\s|"|$)', re.UNICODE): lambda c: "AKC" in c.text,
    (r'(?:\s|=|:|"|^)AP[\dABCDEF][a-zA-Z0-9]{8,}(?:\s|"|$)', re.UNICODE): lambda c: "AP" in c.text,
    (
        r'(?:(?<=\W)|(?<=^))(?:\[|)(?:"|\'|)(?:(?:ibm)?[-_]?cos[-_]?(?:hmac)?|)(?:_|-|)'
        r'(?:secret[-_]?(?:access)?[-_]?key)(?:"|\'|)(?:\]|)(?: *)(?:=|:|:=|=>| +|::)(?: *)(?:"|\'|)'
        r'([a-f0-9]{48}(?![a-f0-9]))(?:"|\'|)',
        re.IGNORECASE | re.UNICODE,
    ): lambda c: c.says("secret"),
    (r"[0-9a-z]{32}-us[0-9]{1,2}", re.UNICODE): lambda c: "-us" in c.text,
    (r"\d{8,10}:[0-9A-Za-z_-]{35}", re.UNICODE): lambda c: ":" in c.text and c.digit,
}
"""What a text must contain for five of detect-secrets' patterns to match: a literal every match holds. These five
begin with a class or an optional group, so the engine cannot look for a literal prefix and tries every position:
they took 27 of the 45 us that the 38 patterns took on a bench ticket. The others begin with a literal, which the
engine already finds fast (checking first made them slower). A clue belongs to a pattern's exact text and flags: a
pattern changed by another detect-secrets version has none and is always searched."""


@cache
def _secret_detectors() -> tuple[tuple[re.Pattern[str], _Needs], ...]:
    """The patterns of detect-secrets' provider detectors (keys and tokens with a known shape), if installed.

    Each comes with what a text must contain for it to match (`_DETECTOR_CLUES`; without a clue, always searched).
    """
    try:
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
        from detect_secrets.plugins.base import RegexBasedDetector
    except ImportError:  # pragma: no cover - a runtime dependency; the own patterns above still apply
        return ()
    skipped = {"KeywordDetector", "IPPublicDetector", "SoftlayerDetector", "IbmCloudIamDetector", "CloudantDetector"}
    patterns: list[re.Pattern[str]] = []
    plugin: Any
    for plugin in get_mapping_from_secret_type_to_class().values():
        if issubclass(plugin, RegexBasedDetector) and plugin.__name__ not in skipped:
            patterns.extend(plugin.denylist)  # a class attribute on every regex detector
    return tuple(
        (pattern, _DETECTOR_CLUES.get((pattern.pattern, pattern.flags), _needs_nothing)) for pattern in patterns
    )


def _high_entropy(token: str) -> bool:
    """A long random-looking token (a key nobody named): mixed letters and digits, high Shannon entropy."""
    from math import log2

    if len(token) < _KEY_MIN_CHARS or not (re.search(r"\d", token) and re.search(r"[A-Za-z]", token)):
        return False
    if re.fullmatch(r"[A-Za-z]+(?:[-_][A-Za-z]+)*[-_]?\d+", token):  # words then a number: a reference, not a key
        return False
    counts = Counter(token)
    entropy = -sum(n / len(token) * log2(n / len(token)) for n in counts.values())
    return entropy >= 4.0


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


MEMO_TEXTS = 128
"""Recent texts in which redaction found nothing, remembered so that such a text redacted again (the ticket's message,
read by the classifier and again when its turn is recorded; a reply's facts, such as the customer's name) costs a
lookup. Enough for the tickets in flight at once, not a store of them."""
MEMO_CHARS = 2_000
"""Longer texts are always redacted afresh."""


class _CleanTexts:
    """Digests (BLAKE2b, 32 bytes) of the last `size` texts in which redaction found nothing, oldest dropped first.

    Only digests are kept: no customer's text stays in memory because it was redacted, and a text with anything to
    replace is never remembered at all.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._digests: dict[bytes, None] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(text: str) -> bytes | None:
        """The digest `text` is remembered by, or None when it is too long to be remembered."""
        if len(text) > MEMO_CHARS:
            return None
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=32).digest()

    def __contains__(self, key: bytes) -> bool:
        with self._lock:
            if key not in self._digests:
                return False
            self._digests[key] = self._digests.pop(key)  # the most recently used is dropped last
            return True

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, key: bytes) -> None:
        with self._lock:
            self._digests.pop(key, None)
            self._digests[key] = None
            while len(self._digests) > self.size:
                del self._digests[next(iter(self._digests))]

    def clear(self) -> None:
        with self._lock:
            self._digests.clear()


_CLEAN = _CleanTexts(MEMO_TEXTS)

RUN_TEXTS = 8
"""Texts one run keeps the redaction of (`redactions_kept`): the ticket's message and a few more."""
_RUN_REDACTIONS: ContextVar[dict[str, Redaction] | None] = ContextVar("triage_run_redactions", default=None)


@contextmanager
def redactions_kept() -> Iterator[None]:
    """Within the block (one graph run), a text redacted again gets its first redaction back.

    The ticket's message is redacted when it is classified and again when its turn is recorded. A text with nothing
    to replace is remembered process-wide by digest (`_CLEAN`); one with personal data in it, or longer than
    `MEMO_CHARS`, was redacted afresh, about 7 ms for a 15,000-character message. The redactions are held only by
    the block's context (the run's tasks share it) and dropped when it ends.
    """
    kept: dict[str, Redaction] = {}
    token = _RUN_REDACTIONS.set(kept)
    try:
        yield
    finally:
        _RUN_REDACTIONS.reset(token)
        kept.clear()  # a context copied during the run (a task, a thread) keeps the dict, not the texts


def redact(text: str, *, into: Redaction | None = None) -> Redaction:
    """Replace secrets and personal data in `text` with placeholders; reuse `into`'s placeholders for known values."""
    key = _CLEAN.key(text)
    if key is not None and key in _CLEAN:  # nothing in it to replace: the text stays, and so do `into`'s placeholders
        return Redaction(text=text, values=dict(into.values) if into else {})
    kept = _RUN_REDACTIONS.get() if into is None else None
    if kept is not None and (earlier := kept.get(text)) is not None:
        return Redaction(text=earlier.text, values=dict(earlier.values))
    result = _redact(text, into)
    if key is not None and result.text == text:
        # Unchanged means no placeholder went in (a value is never its own placeholder), with or without `into`.
        _CLEAN.add(key)
    elif kept is not None and len(kept) < RUN_TEXTS:
        kept[text] = Redaction(text=result.text, values=dict(result.values))
    return result


def _redact(text: str, into: Redaction | None) -> Redaction:
    result = Redaction(text="", values=dict(into.values) if into else {})
    by_value = {value: placeholder for placeholder, value in result.values.items()}
    counters: Counter[str] = Counter(placeholder[1:].rsplit("_", 1)[0] for placeholder in result.values)

    def placeholder_for(kind: str, value: str) -> str:
        if value not in by_value:
            counters[kind] += 1
            by_value[value] = f"[{kind}_{counters[kind]}]"
            result.values[by_value[value]] = value
        return by_value[value]

    def substitute(kind: str, check: _Check) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            whole = match.group(0)
            if _PLACEHOLDER.fullmatch(whole) or not check(match):
                return whole
            if "value" in match.re.groupindex and match.group("value"):
                start, end = match.span("value")
                value = match.group("value")
                if _PLACEHOLDER.fullmatch(value):
                    return whole
                offset = match.start()
                return whole[: start - offset] + placeholder_for(kind, value) + whole[end - offset :]
            return placeholder_for(kind, whole)

        return replace

    text = _PRIVATE_KEY.sub(lambda m: placeholder_for("SECRET", m.group(0)), text)
    clues = _Clues(text)
    text = _redact_known_secrets(clues, placeholder_for)
    for kind, pattern, check, needs in _PATTERNS:
        if clues.text is not text:  # a substitution made a new text (`sub` returns the same one when it made none)
            clues = _Clues(text)
        if needs(clues):
            text = pattern.sub(substitute(kind, check), text)
    result.text = text
    return result


def _redact_known_secrets(clues: _Clues, placeholder_for: Callable[[str, str], str]) -> str:
    """Whole tokens that a provider detector or the entropy test flags become `SECRET` placeholders."""
    text = clues.text
    spans: list[tuple[int, int]] = []
    for pattern, needs in _secret_detectors():
        if not needs(clues):
            continue
        for match in pattern.finditer(text):
            found = match.group(0)  # some detectors take the blank before or after a key into their match
            start = match.start() + len(found) - len(found.lstrip())
            end = match.end() - len(found) + len(found.rstrip())
            while start > 0 and _TOKEN_CHARS.fullmatch(text[start - 1]):
                start -= 1
            while end < len(text) and _TOKEN_CHARS.fullmatch(text[end]):
                end += 1
            spans.append((start, end))
    for match in _LONG_TOKEN.finditer(text):
        token = match.group(0).rstrip(".:!?")
        if _high_entropy(token) and not _PLACEHOLDER.fullmatch(token):
            spans.append((match.start(), match.start() + len(token)))
    if not spans:
        return text
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    pieces: list[str] = []
    cursor = 0
    for start, end in merged:
        value = text[start:end].rstrip(".:!?")
        pieces += [text[cursor:start], placeholder_for("SECRET", value)]
        cursor = start + len(value)
    pieces.append(text[cursor:])
    return "".join(pieces)


def restore(text: str, redaction: Redaction) -> str:
    """Put the original values back in place of their placeholders (secrets stay out: `[removed]`)."""

    def back(match: re.Match[str]) -> str:
        placeholder = match.group(0)
        if placeholder[1:].rsplit("_", 1)[0] in SECRET_KINDS:
            return REMOVED_SECRET if placeholder in redaction.values else placeholder
        return redaction.values.get(placeholder, placeholder)

    return _PLACEHOLDER.sub(back, text)


def redact_tree(value: Any) -> Any:
    """A copy of `value` (dicts, lists, strings) with personal data in every string swapped for placeholders."""
    if isinstance(value, str):
        return redact(value).text
    if isinstance(value, dict):
        return {key: redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(item) for item in value]
    return value
