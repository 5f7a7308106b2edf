"""Deterministic urgency and sentiment signals that escalation rules can rely on.

Everything here is a word-boundary regular expression or a counting rule: the same text always gives the same
`Signals`, and `Signals.evidence` lists the phrases that decided it, so an audit can see why a ticket escalated.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from triage.taxonomy import Sentiment, Urgency
from triage.text import fold_case

__all__ = ["SIGNAL_FLAGS", "Signals", "detect_signals"]

SIGNAL_FLAGS: tuple[str, ...] = (
    "legal_threat",
    "chargeback",
    "security",
    "repeat_contact",
    "outage",
    "profanity",
    "shouting",
    "cancellation_threat",
    "deadline",
    "resolved",
)


@dataclass(frozen=True)
class Signals:
    """Urgency, sentiment and the flags behind them.

    Attributes:
        urgency: `critical` for outages, security reports and legal threats; `high` for chargebacks, deadlines,
            repeat contacts and angry customers; `low` for positive feedback or an explicit "no rush"; otherwise
            `normal`.
        sentiment: `angry`, `negative`, `positive` or `neutral`.
        flags: The names from `SIGNAL_FLAGS` that matched.
        evidence: The matched phrases, lower-cased, in order of first appearance.
    """

    urgency: Urgency
    sentiment: Sentiment
    flags: frozenset[str]
    evidence: tuple[str, ...]


def _lexicon(*patterns: str) -> re.Pattern[str]:
    """One pattern for the phrases, matched against lower-cased text (faster than a case-insensitive pattern).

    Raises:
        ValueError: a phrase has an upper-case letter outside an escape (such as S in a non-space class): it
            could never match.
    """
    for pattern in patterns:
        if any(char.isupper() for char in re.sub(r"\\.", "", pattern)):
            raise ValueError(f"lexicon phrases are matched against lower-cased text: {pattern!r}")
    return re.compile(r"\b(?:" + "|".join(patterns) + r")\b")


# Patterns allow plurals and a few frequent misspellings ("lawer", "attorny", "unauthorised", "hackd").
_FLAG_LEXICONS: dict[str, re.Pattern[str]] = {
    "legal_threat": _lexicon(
        r"law(?:y|ye)?[ae]rs?",
        r"attorn[ae]?(?:y|ey)s?",
        r"solicitors?",
        r"legal (?:action|proceedings?|counsel|team|department|steps)",
        r"su(?:e|ing|ed)(?: you| your company| northwind)?",
        r"law ?suits?",
        r"litigation",
        r"small[- ]claims?",
        r"(?:in|to|take you to) court",
        r"courts?",
        r"ombudsman",
        r"regulators?",
        r"consumer (?:protection|rights|affairs)",
        r"trading standards",
        r"better business bureau",
        r"bbb",
        r"ftc",
        r"data protection authority",
        r"arbitration",
    ),
    "chargeback": _lexicon(
        r"charge[- ]?backs?",
        r"dispute (?:the|this|that|your|a) (?:charge|payment|transaction)s?",
        r"disput(?:e|ing|ed) (?:it|this|the charge|the payment) with "
        r"(?:my|our) (?:bank|card (?:company|issuer)|credit card)",
        r"revers(?:e|ing) the (?:charge|payment)",
        r"(?:opened|filed|open|file) a dispute",
    ),
    "security": _lexicon(
        r"hack(?:e?d|ing|ers?)",
        r"(?:data )?breach(?:ed|es)?(?! of contract)",
        r"(?<!401 )(?<!\d{3} )unauth?ori[sz]ed(?! error)(?! response)(?! \()",
        r"without (?:my|our) (?:permission|knowledge|consent)",
        r"some(?:one|body) (?:has )?(?:logged|logging|signed|signing) (?:in|into|on)",
        r"some(?:one|body) (?:has )?(?:accessed|is using|used|hijacked|changed my password)",
        r"fraud(?:ulent)?",
        r"phishing",
        r"compromised",
        r"stolen (?:card|password|credentials|account|api key|token)",
        r"(?:data|credential|password) leaks?",
        r"leaked",
        r"identity theft",
        r"vulnerabilit(?:y|ies)",
    ),
    "repeat_contact": _lexicon(
        r"(?:second|third|fourth|fifth|umpteenth|nth|\d+(?:st|nd|rd|th)) time",
        r"again and again",
        r"over and over(?: again)?",
        r"yet again",
        r"still (?:not|isn'?t|hasn'?t been|has not been) (?:fixed|resolved|solved|working|sorted)",
        r"still (?:no|waiting)",
        r"keep having to",
        r"(?:i|we) keep (?:asking|writing|calling|emailing)",
        r"(?:asked|written|wrote|called|emailed|contacted you|complained)(?: \w+){0,3} "
        r"(?:\d+|two|three|four|five|several|multiple|many) times",
        r"(?:\d+|three|four|five|several|multiple|many) (?:emails|tickets|calls) (?:later|already|and)",
        r"no one (?:has )?(?:replied|answered|responded|got back)",
        r"nobody (?:has )?(?:replied|answered|responded|got back)",
    ),
    "outage": _lexicon(
        r"down for (?:everyone|everybody|all(?: of us)?|the whole \w+)",
        r"outages?",
        r"(?:production|prod|site|website|service|server|servers|app|platform|system|api|everything) "
        r"(?:is|are|went|seems|seem|has been|have been|was) (?:completely |totally )?down",
        r"(?:is|are) (?:you|northwind|the service|the site|your servers?) down",
        r"can'?t access anything",
        r"cannot access anything",
        r"all (?:of )?(?:our |my |the )?(?:users|employees|staff|colleagues|customers) (?:are |were )?"
        r"(?:affected|can'?t|cannot|unable|are unable|get|see|have no|lost|locked out)",
        r"(?:no ?one|nobody)(?: (?:in|at|on) (?:our|my|the) (?:team|company|office|org|organi[sz]ation))? "
        r"can(?:'?t)? (?:log ?in|login|sign in|access|connect|reach|open|load|use|work)",
        r"(?:entire|whole) (?:team|company|office|org|organi[sz]ation) (?:can'?t|cannot|is unable)",
        r"service unavailable",
        r"service disruption",
    ),
    "profanity": _lexicon(
        r"f+u+c+k+\w*",
        r"f[*@#]+k\w*",
        r"wtf",
        r"s+h+i+t+\w*",
        r"bull ?shit",
        r"crap(?:py)?",
        r"damn(?:ed|it)?",
        r"goddamn\w*",
        r"ass ?holes?",
        r"bastards?",
        r"bloody",
        r"piss(?:ed)?(?: off)?",
        r"screw (?:you|this|that)",
        r"idiots?",
        r"morons?",
    ),
    "cancellation_threat": _lexicon(
        r"cancel\w* (?:my|our|the) (?:subscription|account|plan|contract|membership)s? (?:if|unless)",
        r"(?:or|otherwise|else) (?:i|we)(?:'ll| will| am going to| are going to)? "
        r"(?:cancel|leave|switch|walk away)",
        r"(?:switch\w*|mov(?:e|ing)|go(?:ing)?|jump\w*) (?:over )?to (?:a |another |your )?competitors?",
        r"take (?:my|our) (?:business|money) elsewhere",
        r"(?:looking at|considering|evaluating) (?:other|alternative) (?:providers|vendors|tools|solutions)",
    ),
    "deadline": _lexicon(
        r"by (?:tomorrow|today|tonight|monday|tuesday|wednesday|thursday|friday|saturday|sunday|noon)",
        r"by (?:the )?end of (?:the )?(?:day|week|month)",
        r"by eod",
        r"asap",
        r"as soon as possible",
        r"urgent(?:ly)?",
        r"immediately",
        r"right away",
        r"dead ?lines?",
        r"within (?:\d+|twenty[- ]four|forty[- ]eight) hours",
        r"time[- ]sensitive",
        r"emergency",
    ),
    # The customer says the matter is settled: nothing should be filed for it.
    "resolved": _lexicon(
        r"(?:you|u) can close (?:this|the|my) (?:ticket|request|case|issue)?",
        r"(?:you|u) can close (?:it|this)",
        r"please close (?:this|the|my) (?:ticket|request|case|issue)",
        r"all (?:good|sorted|fixed|resolved) now",
        r"(?:issue|problem|it) (?:is|has been|was) (?:resolved|solved|fixed|sorted) now",
        r"no (?:further )?action (?:is )?needed",
        r"(?:i|we) can see the refund(?: now)?",
        r"(?:the )?refund (?:has )?(?:arrived|came through|is on my card)",
    ),
}

_NEGATIVE = _lexicon(
    r"disappoint(?:ed|ing|ment)",
    r"frustrat(?:ed|ing|ion)",
    r"unacceptable",
    r"not acceptable",
    r"terrible",
    r"awful",
    r"horrible",
    r"horrendous",
    r"poor (?:service|support|quality)",
    r"useless",
    r"ridiculous",
    r"annoy(?:ed|ing)",
    r"upset",
    r"unhappy",
    r"dissatisfied",
    r"angry",
    r"sad",
    r"shameful",
    r"rude",
    r"waste of (?:time|money)",
    r"(?:never|not) (?:again|working|fixed|resolved)",
)
# Strong markers count twice toward "several negative markers".
_STRONG_NEGATIVE = _lexicon(
    r"furious",
    r"livid",
    r"outrag(?:ed|eous)",
    r"disgust(?:ed|ing)",
    r"disgrace(?:ful)?",
    r"appalling",
    r"pathetic",
    r"incompetent",
    r"worst",
    r"fed up",
    r"sick (?:and tired )?of",
    r"scam(?:med)?",
    r"rip[- ]?off",
    r"(?:this|that) is a joke",
    r"rubbish",
    r"thanks for nothing",
)
_POSITIVE = _lexicon(
    r"(?<!would )(?<!'d )love(?:d|s)?",
    r"great",
    r"awesome",
    r"excellent",
    r"amazing",
    r"fantastic",
    r"wonderful",
    r"brilliant",
    r"perfect(?:ly)?",
    r"happy",
    r"helpful",
    r"appreciate(?:d)?",
    r"kudos",
    r"thanks? (?:you )?(?:so much |a lot |very much )?for",
    r"thanks? (?:you )?(?:so much|a lot|very much|a million)",
    r"many thanks",
    r"well done",
    r"impressed",
    r"satisfied",
    r"good job",
)
_CALM = _lexicon(
    r"no (?:rush|hurry|urgency|pressure)",
    r"not (?:really |that |very |at all )?(?:urgent|a priority|time[- ]sensitive)",
    r"whenever (?:you|you've|you have) (?:can|time|a moment|a chance)",
    r"at your (?:convenience|leisure)",
    r"low priority",
)
_NEGATORS = frozenset(
    {
        "not",
        "no",
        "never",
        "without",
        "hardly",
        "nothing",
        "nobody",
        "neither",
        "nor",
        "isnt",
        "arent",
        "wasnt",
        "dont",
        "doesnt",
        "didnt",
        "wont",
        "wouldnt",
        "cant",
        "cannot",
        "aint",
    }
)
# A negation before a conditional does not negate the threat after it: "if you don't refund me I'll sue".
_CLAUSE_BREAK = re.compile(
    r"[.,;:!?\n]|\b(?:but|however|though|if|unless|otherwise|or|then|i'll|i will|we'll|we will)\b", re.IGNORECASE
)
_INTENSIFIERS = frozenset({"really", "that", "very", "so", "too", "exactly", "particularly", "super", "at", "all"})
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?", re.IGNORECASE)
_EXCLAIMS = re.compile(r"!{3,}")
_CAPS_WORD = re.compile(r"\b[A-Za-z][A-Za-z']*\b")
_ACRONYMS = frozenset(
    {
        "API",
        "SSO",
        "VAT",
        "USD",
        "EUR",
        "GBP",
        "GDPR",
        "CCPA",
        "PDF",
        "CSV",
        "URL",
        "HTTP",
        "HTTPS",
        "SAML",
        "SCIM",
        "IBAN",
        "CEO",
        "CTO",
        "FAQ",
        "USB",
        "BBB",
        "FTC",
        "ICO",
        "SMS",
        "MFA",
        "UTC",
        "CET",
        "PST",
        "EST",
        "JSON",
        "XML",
        "SDK",
        "CLI",
        "ASAP",
        "RMA",
        "INV",
        "SLA",
        "CRM",
        "RSVP",
        "NOTE",
        "PS",
        "FYI",
        "EOD",
        "ETA",
        "VPN",
        "AWS",
        "HDMI",
        "OAUTH",
        "IMPORTANT",
        "UPDATE",
    }
)
_NEGATION_WINDOW = 4
# How far back a negator may stand, per flag: deadlines only count as negated right next to one ("not urgent").
_FLAG_NEGATION_WINDOWS = {"outage": 0, "repeat_contact": 0, "profanity": 0, "deadline": 1}


_BREAK_REACH = 16
"""More characters than a clause break and the one after it that its `\\b` reads (`otherwise` and a space): a break
that starts this far before a position is found alike whether the text is cut at that position or not."""
_WORDS_REACH = 64
"""How far before a phrase `_Clauses.negated` first looks for the clause's last words."""


class _Clauses:
    """A text's clause breaks, found once: the negators before each phrase are read without scanning the text again.

    `negated(start, window)` is what scanning `text[:start]` for the clause's last break and reading all of its words
    would say (a text with many phrases took time in the square of its length: 190 ms for 11,500 characters).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts: list[int] | None = None
        self._ends: list[int] = []

    def _clause_start(self, position: int) -> int:
        """The end of the last clause break in `text[:position]`, or 0."""
        if self._starts is None:
            breaks = list(_CLAUSE_BREAK.finditer(self.text))
            self._starts, self._ends = [match.start() for match in breaks], [match.end() for match in breaks]
        # The breaks that start `_BREAK_REACH` or more before `position` read nothing from it on: a scan of the cut
        # text finds them too, and nothing else before the last one's end or `position - _BREAK_REACH`.
        found = bisect.bisect_right(self._starts, position - _BREAK_REACH)
        start = self._ends[found - 1] if found else 0
        for boundary in _CLAUSE_BREAK.finditer(self.text, max(start, position - _BREAK_REACH), position):
            start = boundary.end()
        return start

    def negated(self, position: int, window: int = _NEGATION_WINDOW) -> bool:
        """Whether a negator ("not", "no", "never", "don't", ...) is among the clause's last `window` words.

        The clause is the one `position` is in; its words are read up to `position`, intensifiers skipped.
        """
        clause_start = self._clause_start(position)
        reach = _WORDS_REACH
        while True:
            # Cut at a space (no word spans one): the words after it are the clause's last words.
            cut = self.text.rfind(" ", clause_start, position - reach) if window > 0 else -1
            start = clause_start if cut < 0 else cut
            words = [word for word in _WORD.findall(self.text[start:position].lower()) if word not in _INTENSIFIERS]
            if cut < 0 or len(words) >= window:
                return any(word.endswith("n't") or word.replace("'", "") in _NEGATORS for word in words[-window:])
            reach *= 4


def _matches(pattern: re.Pattern[str], clauses: _Clauses, *, negation_window: int = _NEGATION_WINDOW) -> list[str]:
    return [
        match.group(0)
        for match in pattern.finditer(clauses.text)
        if not (negation_window and clauses.negated(match.start(), negation_window))
    ]


def _is_shouting(text: str) -> tuple[bool, list[str]]:
    considered = 0
    shouted: list[str] = []
    for word in _CAPS_WORD.findall(text):
        if len(word) < 2 or word.upper() in _ACRONYMS:
            continue
        considered += 1
        if len(word) >= 3 and word.isupper():
            shouted.append(word.lower())
    loud = len(shouted) >= 3 and len(shouted) / max(considered, 1) >= 0.5
    return loud, shouted


def detect_signals(text: str) -> Signals:
    """Detect urgency, sentiment and escalation flags in a ticket.

    Args:
        text: The ticket subject and body.

    Returns:
        The signals, with the phrases that produced them as evidence.
    """
    flags: set[str] = set()
    evidence: list[str] = []

    def note(flag: str | None, phrases: list[str]) -> None:
        if flag is not None and phrases:
            flags.add(flag)
        for phrase in phrases:
            if phrase not in evidence:
                evidence.append(phrase)

    lowered = fold_case(text)  # every lexicon is matched against it
    clauses = _Clauses(lowered)
    for flag, lexicon in _FLAG_LEXICONS.items():
        note(flag, _matches(lexicon, clauses, negation_window=_FLAG_NEGATION_WINDOWS.get(flag, _NEGATION_WINDOW)))

    loud, shouted = _is_shouting(text)
    if loud:
        note("shouting", shouted[:5])

    negatives = _matches(_NEGATIVE, clauses)
    strong_negatives = _matches(_STRONG_NEGATIVE, clauses)
    positives: list[str] = []
    for match in _POSITIVE.finditer(lowered):
        phrase = match.group(0)
        if clauses.negated(match.start()):
            negatives.append(f"not {phrase}")
        else:
            positives.append(phrase)
    exclaims = _EXCLAIMS.findall(text)
    negative_score = len(negatives) + 2 * len(strong_negatives) + ("cancellation_threat" in flags)
    if exclaims and negative_score:
        note("shouting", exclaims[:1])
    calm = _matches(_CALM, clauses, negation_window=0)

    sentiment: Sentiment
    threat = bool(flags & {"legal_threat", "chargeback"})
    if flags & {"profanity", "shouting"} or (threat and negative_score) or negative_score >= 3:
        sentiment = "angry"
    elif negative_score:
        sentiment = "negative"
    elif positives:
        sentiment = "positive"
    else:
        sentiment = "neutral"
    if sentiment in {"angry", "negative"}:
        note(None, negatives + strong_negatives)
    elif sentiment == "positive":
        note(None, positives)

    urgency: Urgency
    if flags & {"outage", "security", "legal_threat"}:
        urgency = "critical"
    elif flags & {"chargeback", "deadline", "repeat_contact"} or sentiment == "angry":
        urgency = "high"
    elif (sentiment == "positive" or calm) and not flags - {"resolved"} and sentiment != "negative":
        urgency = "low"
        note(None, calm)
    else:
        urgency = "normal"

    return Signals(urgency=urgency, sentiment=sentiment, flags=frozenset(flags), evidence=tuple(evidence))
