"""Pure rules for conversations: what an earlier turn leaves for the next, and when a follow-up reopens a thread.

A conversation is one thread that grows turn by turn. When a turn ends, the next one keeps a short record of it
(`Turn`): the customer's message clipped and redacted, the route and intent, what was filed and how it was answered.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from triage.policies.injection import INJECTION_SIGNAL
from triage.policies.pii import redact
from triage.state import Classification, Turn

MESSAGE_CHARS = 600
"""How much of each earlier message a conversation keeps (it is in every later checkpoint)."""
HISTORY_CHARS = 1_200
"""How much of the earlier messages the classifier reads besides the new one."""
MAX_TURNS = 20
"""Earlier turns kept in state; older ones drop out (the audit trail and the customer memory keep their gist)."""
FOLLOW_UP_EVENT = "follow_up"
"""The audit-trail event of a message attached to a thread that awaits approval."""
SHORT_MESSAGE_WORDS = 12
"""A follow-up this short is read with the conversation before it even when its own words are clear."""

_REQUEST_KINDS = frozenset({"refund_request", "account_request", "ticket"})

_DID_NOT_HELP = re.compile(
    r"\b(?:still\s+(?:not|isn'?t|doesn'?t|does\s+not|can'?t|cannot|won'?t|broken|failing|happening|the\s+same|"
    r"having|getting|no\s+luck)|"
    r"(?:didn'?t|did\s+not|doesn'?t|does\s+not|hasn'?t|has\s+not|won'?t)\s+(?:help|work|fix|solve|resolve)|"
    r"not\s+(?:fixed|resolved|solved|working\s+yet)|no\s+luck|same\s+(?:problem|issue|error)|"
    r"(?:tried|followed)\s+(?:that|those|it|them|the\s+(?:steps|article|instructions))|"
    r"useless|made\s+no\s+difference)\b",
    re.IGNORECASE,
)


def clip(text: str, limit: int = MESSAGE_CHARS) -> str:
    """A message redacted of personal data and cut to `limit` characters (on a word where it can)."""
    redacted = redact(text.strip()).text
    if len(redacted) <= limit:
        return redacted
    cut = redacted[:limit].rsplit(" ", 1)[0]
    return cut + " …"


def turn_record(number: int, values: Mapping[str, Any]) -> Turn:
    """The record an ended turn leaves for the next, from the thread's state values at its end."""
    ticket = values.get("ticket") or {}
    classification = values.get("classification") or {}
    reply = values.get("reply") or {}
    findings = values.get("findings") or {}
    answered_with = findings.get("answered_with") or findings.get("article")
    record = Turn(
        turn=number,
        message=clip(f"{ticket.get('subject', '')}\n{ticket.get('body', '')}"),
        route=values.get("route"),
        intent=classification.get("intent"),
        status=values.get("status"),
        outcome=values.get("outcome"),
        reply_template=reply.get("template"),
        answered_with=answered_with if isinstance(answered_with, str) else None,
        requests=[a["receipt_id"] for a in values.get("actions") or [] if a.get("kind") in _REQUEST_KINDS],
    )
    if ticket.get("message_id"):
        record["message_id"] = ticket["message_id"]
    return record


def attached_id(conversation_id: str, message_id: str | None) -> str:
    """The `follow_up_id` of a message attached while the thread awaits a decision.

    Derived from the sender's message id when there is one, so the same message attached twice is one line.
    """
    if message_id is None:
        return f"fu_{uuid.uuid4().hex[:16]}"
    key = f"{conversation_id}\n{message_id}".encode()
    return f"fu_{hashlib.sha256(key).hexdigest()[:16]}"


def taken_in(values: Mapping[str, Any], conversation_id: str, message_id: str) -> bool:
    """Whether the conversation has taken in the message `message_id` already.

    As its current turn, an ended one, or a message attached while it awaited a decision. A turn older than the
    `MAX_TURNS` records kept is not known here: the app reads the thread's saved inputs for it.
    """
    if (values.get("ticket") or {}).get("message_id") == message_id:
        return True
    attached = attached_id(conversation_id, message_id)
    return any(
        turn.get("message_id") == message_id or turn.get("follow_up_id") == attached
        for turn in values.get("conversation") or []
    )


def with_turn(conversation: Sequence[Turn], record: Turn) -> list[Turn]:
    """The conversation with an ended turn's record added, keeping the last `MAX_TURNS` records."""
    return [*conversation, record][-MAX_TURNS:]


def attached_turn(number: int, follow_up_id: str, message: str) -> Turn:
    """The record of a message that arrived while the thread awaited a decision (it was not run on its own).

    `message` is already clipped and redacted (as the audit trail holds it).
    """
    return Turn(
        turn=number,
        follow_up_id=follow_up_id,
        message=message,
        route=None,
        intent=None,
        status="attached",
        outcome=None,
        reply_template=None,
        answered_with=None,
        requests=[],
    )


def history_text(conversation: Sequence[Turn], limit: int = HISTORY_CHARS) -> str:
    """The earlier customer messages, newest first, as much as fits in `limit` characters."""
    parts: list[str] = []
    used = 0
    for turn in reversed(conversation):
        message = turn["message"]
        if used + len(message) > limit:
            room = limit - used
            if room > 40:
                parts.append(message[:room])
            break
        parts.append(message)
        used += len(message)
    return "\n".join(parts)


def needs_history(text: str, confidence: float, min_confidence: float) -> bool:
    """Whether a follow-up should be read with the conversation: it is short, or unclear on its own."""
    return len(text.split()) <= SHORT_MESSAGE_WORDS or confidence < min_confidence


_WORKED = re.compile(
    r"\b(?:(?:that|this|it|which)\s+(?:worked|did\s+it|did\s+the\s+trick|helped|fixed\s+it|solved\s+it)|"
    r"(?:worked|works)\s+(?:now|again|perfectly|fine|great)|"
    r"\w+ing\s+(?:it|that|them)\s+(?:worked|helped|fixed\s+it|did\s+it|solved\s+it)|"
    r"(?:fixed|solved|resolved|sorted)\s+(?:it|now|the\s+(?:problem|issue))|problem\s+solved|all\s+good\s+now)\b",
    re.IGNORECASE,
)
_THANKS = re.compile(r"\b(?:thanks?|thank\s+you|thx|cheers|much\s+appreciated|great\s+support)\b", re.IGNORECASE)


def answer_worked(text: str, conversation: Sequence[Turn]) -> str | None:
    """The phrase in which the customer thanks us for an answer that worked ('thanks, that worked'), or None.

    Only after a turn that answered, only with thanks, and never when the message also says it did not help: such
    a message is feedback on the answer, and the problem's words in the history must not pull it back to the problem.
    """
    if last_answered(conversation) is None or did_not_help(text) is not None or not _THANKS.search(text):
        return None
    match = _WORKED.search(text)
    return match.group(0) if match else None


def thanked(own: Classification, phrase: str) -> Classification:
    """The reading of a follow-up that thanks us for an answer that worked: feedback, decided by this rule.

    The rule, not the classifier, decides the route and intent, so the confidence is the rule's (1.0); the
    urgency, sentiment and signals stay the classifier's, so a thank-you that also threatens still escalates.
    """
    return Classification(
        **{
            **own,
            "route": "general",
            "intent": "feedback",
            "confidence": 1.0,
            "evidence": [*own["evidence"], f"the customer says the earlier answer worked ('{phrase}')"],
        }
    )


def prefer_history(own: Classification, with_history: Classification, clear: float) -> bool:
    """Whether the reading with the conversation's earlier turns replaces the follow-up's own reading.

    Only when it is surer, and never when the follow-up alone is clear (at least `clear`: sure enough that its reply
    would go out without a person) about another route or intent: a short, clear message on a new topic ("could you
    also send me the invoice?") keeps its own reading, however sure the history's words make the earlier topic look.
    """
    if with_history["confidence"] <= own["confidence"]:
        return False
    if INJECTION_SIGNAL in with_history["signals"] and INJECTION_SIGNAL not in own["signals"]:
        return False  # an earlier turn's injected instructions were in what the model read: not a reading to trust
    if with_history["route"] == "escalation" and own["route"] != "escalation":
        return False  # what an earlier turn said to reach a person (a threat, say) was acted on in that turn
    same = (with_history["route"], with_history["intent"]) == (own["route"], own["intent"])
    return own["confidence"] < clear or same


def read_with_history(own: Classification, with_history: Classification) -> Classification:
    """The follow-up's reading when `prefer_history` takes the history's: its route, intent and confidence.

    The urgency, sentiment and signals stay the follow-up's own, as in `thanked`: they describe this message, and an
    earlier turn's (a legal threat, say) was acted on in its turn. Taken with the history's words, "and on
    weekends?" after a threat would go to a person again, and every short message after it.
    """
    return Classification(
        **{
            **with_history,
            "urgency": own["urgency"],
            "sentiment": own["sentiment"],
            "signals": own["signals"],
            "evidence": [*with_history["evidence"], "read with the conversation's earlier turns"],
        }
    )


def did_not_help(text: str) -> str | None:
    """The phrase in which the customer says the answer did not help ('still not fixed', ...), or None."""
    match = _DID_NOT_HELP.search(text)
    return match.group(0) if match else None


def last_answered(conversation: Sequence[Turn]) -> Turn | None:
    """The latest turn that ran (not one attached during an approval)."""
    return next((turn for turn in reversed(conversation) if turn["status"] != "attached"), None)


def reopen_reason(text: str, conversation: Sequence[Turn]) -> str | None:
    """Why a follow-up goes to a person: the last turn answered from the knowledge base and this says it failed.

    Sending the same article again would not help; a person gets the thread with its history instead.
    """
    previous = last_answered(conversation)
    if previous is None:
        return None
    from_kb = previous["answered_with"] is not None or str(previous["reply_template"] or "").endswith(".kb_answer")
    if not from_kb:
        return None
    phrase = did_not_help(text)
    if phrase is None:
        return None
    article = f" ({previous['answered_with']})" if previous["answered_with"] else ""
    return (
        f"reopened: the customer says the knowledge-base answer of turn {previous['turn']}{article} did not help "
        f"('{phrase}')"
    )


def history_lines(conversation: Sequence[Turn]) -> list[str]:
    """The conversation so far as lines for a person's queue ticket."""
    lines = []
    for turn in conversation:
        answered = f", answered with {turn['answered_with']}" if turn["answered_with"] else ""
        filed = f", filed {', '.join(turn['requests'])}" if turn["requests"] else ""
        how = (
            "arrived while awaiting approval"
            if turn["status"] == "attached"
            else f"{turn['route']}/{turn['intent']} -> {turn['status']}{answered}{filed}"
        )
        lines.append(f"Turn {turn['turn']} ({how}): {' '.join(turn['message'].split())[:300]}")
    return lines


MESSAGE_ID_PREFIX = "msg_"
"""Our replies' message ids (the outbox's ids); an email that answers one names it in In-Reply-To or References."""
MAX_REFERENCES = 50
"""References read from one email (a long thread lists every earlier message; the latest are at its end)."""
_ANGLED = re.compile(r"<([^<>\s]+)>")


def replied_message_ids(in_reply_to: str | None, references: str | Sequence[str] | None) -> list[str]:
    """Our message ids an email says it answers, most recent first: In-Reply-To, then References last to first.

    Header values may hold angle-bracketed ids (`<msg_1f3a@support.example>`) or bare ones; the domain part is
    dropped, ids that are not ours are skipped, and each id is listed once.
    """
    given = [references] if isinstance(references, str) else list(references or [])
    named = _ids(in_reply_to or "") + [i for value in reversed(given) for i in reversed(_ids(value))][:MAX_REFERENCES]
    found: list[str] = []
    for raw in named:
        local = raw.split("@", 1)[0]
        if local.startswith(MESSAGE_ID_PREFIX) and local not in found:
            found.append(local)
    return found


def _ids(header: str) -> list[str]:
    angled = _ANGLED.findall(header)
    return angled if angled else header.split()
