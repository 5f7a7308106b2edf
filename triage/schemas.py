"""Pydantic models at the boundary: the ticket that comes in and the result that goes out."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)

from triage.errors import InvalidDecisionError, InvalidReleaseError, InvalidTicketError
from triage.taxonomy import Route, Sentiment, Status, Urgency

MAX_SUBJECT_CHARS = 300
"""Longest subject accepted, in characters."""
MAX_BODY_CHARS = 20_000
"""Longest ticket body accepted, in characters (about eight pages of text)."""
CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"
CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"
MESSAGE_ID_PATTERN = r"^[!-~]{1,256}$"
"""A message id: 1-256 printable ASCII characters without spaces (an email's Message-ID fits)."""


class Ticket(BaseModel):
    """An incoming support ticket.

    `customer_id` is optional: anonymous questions are answered, and where an action needs an account the reply
    asks for it. Unknown fields are refused so that a typo (`cusotmer_id`) does not silently drop data. Invalid
    input raises `InvalidTicketError` (never pydantic's `ValidationError`), however the ticket is built.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    customer_id: str | None = Field(default=None, pattern=CUSTOMER_ID_PATTERN, description="Helpdesk customer id.")
    subject: str = Field(default="", max_length=MAX_SUBJECT_CHARS, description="Ticket subject line.")
    body: str = Field(max_length=MAX_BODY_CHARS, description="What the customer wrote.")
    channel: str = Field(default="email", pattern=r"^(email|chat|web|phone)$", description="Where it came from.")
    conversation_id: str | None = Field(
        default=None,
        pattern=CONVERSATION_ID_PATTERN,
        description="The conversation this message continues (a result's conversation_id); omit for a new one.",
    )
    message_id: str | None = Field(
        default=None,
        pattern=MESSAGE_ID_PATTERN,
        description="The sender's id for this message (an email's Message-ID, a webhook's event id): a follow-up "
        "whose message_id its conversation has taken in already is not run again.",
    )

    @field_validator("body")
    @classmethod
    def _body_has_text(cls, body: str) -> str:
        if not body.strip():
            raise ValueError("must contain text")
        return body

    @model_validator(mode="wrap")
    @classmethod
    def _typed_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Ticket]) -> Ticket:
        # `Ticket(...)`, `model_validate` and `parse` all refuse bad input with the same typed error.
        try:
            return handler(data)
        except ValidationError as exc:
            raise InvalidTicketError(describe_validation_error(exc, what="ticket")) from None

    @property
    def text(self) -> str:
        """Subject and body as one text, the way the classifier reads it."""
        return f"{self.subject}\n{self.body}".strip()

    @classmethod
    def parse(cls, data: Any) -> Ticket:
        """Validate a mapping (or a JSON string) into a ticket, raising `InvalidTicketError` with every problem."""
        try:
            if isinstance(data, str | bytes):
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidTicketError(describe_validation_error(exc, what="ticket")) from None


def describe_validation_error(exc: ValidationError, *, what: str) -> str:
    """Turn a pydantic error into one readable sentence per problem, ending with what to do."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"])
        if err["type"] == "json_invalid":
            problems.append(f"not valid JSON ({err['msg'].removeprefix('Invalid JSON: ')})")
        elif err["type"] == "extra_forbidden":
            problems.append(f"{field}: unknown field")
        elif err["type"] == "string_too_long":
            limit = err.get("ctx", {}).get("max_length")
            problems.append(f"{field}: too long ({limit} characters at most)")
        elif err["type"] == "string_pattern_mismatch" and field == "customer_id":
            problems.append(f"{field}: must be 1-64 letters, digits, '_' or '-'")
        elif err["type"] == "string_pattern_mismatch" and field == "message_id":
            problems.append(f"{field}: must be 1-256 printable ASCII characters without spaces (an email's Message-ID)")
        elif err["type"] == "string_pattern_mismatch" and field == "conversation_id":
            problems.append(f"{field}: must be 1-128 letters, digits, '_', '-', '.' or ':' (a conversation_id)")
        else:
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{field}: {message}" if field else message)
    return f"invalid {what}: " + "; ".join(problems) + f". {_SHAPES.get(what, '')}".rstrip()


_SHAPES = {
    "ticket": "A ticket has customer_id (optional), subject, body (required), channel (email|chat|web|phone), "
    "conversation_id (optional: the conversation it continues).",
    "release": "A release has version (e.g. 2.4.1), fixes (ticket ids or issue keys) and notes (optional).",
    "decision": "A decision has approver, decision (approve|reject|edit), reason (required to reject), "
    "args (for edit, e.g. {'amount_cents': 12000}).",
}


class ApprovalRequest(BaseModel):
    """The payload of an approval interrupt: stable fields, shaped so LangChain's Agent Inbox can show it too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approval_id: str
    thread_id: str
    action: str = Field(description="refund, account_deletion, data_export or reply.")
    args: dict[str, Any] = Field(description="The action's arguments (amount_cents, payment_id, ...).")
    tier: Literal["single", "dual"]
    approvals_required: int
    approvals_received: list[str]
    description: str = Field(description="What is asked, in a sentence a person can act on.")
    evidence: dict[str, Any] = Field(description="The facts the specialist found.")
    requested_at: str
    expires_at: str
    action_request: dict[str, Any] = Field(description="Agent Inbox: {action, args}.")
    config: dict[str, bool] = Field(
        description="Agent Inbox: allow_accept / allow_edit / allow_respond / allow_ignore."
    )
    refusal: str | None = Field(
        default=None, description="Why the last answer to this approval was refused (it stays pending)."
    )


class FollowUp(BaseModel):
    """A customer message attached to a conversation that awaits approval (it joins the conversation's next turn)."""

    follow_up_id: str
    at: str
    message: str = Field(description="The message, clipped and with personal data redacted.")


class PendingApproval(ApprovalRequest):
    """An approval waiting for a decision, read from the approval index (`triage approvals`)."""

    origin_id: str = Field(description="The approval this one descends from by edits (itself when never edited).")
    version: int = Field(description="Bumped by every decision; a decision is taken against one version.")
    overdue: bool = Field(description="Past its expiry: `triage sweep` escalates it.")
    follow_ups: list[FollowUp] = Field(
        default_factory=list, description="Messages the customer sent on this conversation while it waited."
    )


class PendingGroup(BaseModel):
    """How many approvals wait with one tier and action, overdue or not (`apending_counts`)."""

    tier: str
    action: str
    overdue: bool
    count: int


class Decision(BaseModel):
    """An approver's answer to a pending approval (the resume value of the approval interrupt)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approver: str = Field(min_length=1, max_length=64, description="The approver's id from the approval policy.")
    decision: Literal["approve", "reject", "edit", "timeout"]
    reason: str = Field(default="", max_length=2_000)
    approval_id: str | None = Field(
        default=None, description="The approval answered; None answers whichever is pending (stale ids are refused)."
    )
    args: dict[str, Any] | None = Field(default=None, description="For edit: the changed arguments.")

    @model_validator(mode="after")
    def _complete(self) -> Decision:
        if self.decision == "edit" and not self.args:
            raise ValueError("an edit needs args, e.g. {'amount_cents': 12000}")
        if self.decision == "reject" and not self.reason.strip():
            raise ValueError("a rejection needs a reason")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _typed_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Decision]) -> Decision:
        try:
            return handler(data)
        except ValidationError as exc:
            raise InvalidDecisionError(describe_validation_error(exc, what="decision")) from None


_INBOX_DECISIONS = {"accept": "approve", "edit": "edit", "response": "reject"}


def decision_from_resume(value: Any, *, approver: str | None = None) -> Decision:
    """Read a resume value: our `Decision` (a dict), or Agent Inbox's response list `[{"type": ..., "args": ...}]`.

    Agent Inbox answers `accept`, `edit` (args: the edited action request, or just the changed arguments),
    `response` (a person's text: taken as a rejection with that reason) or `ignore` (not allowed for approvals).
    Its responses name no one, so the approver comes from an `approver` key in the response or from `approver`
    (the run's context).

    Raises:
        InvalidDecisionError: the value is neither shape, or names no approver.
    """
    if isinstance(value, Decision):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, dict) and "type" in value:
        kind = value.get("type")
        if kind == "ignore":
            raise InvalidDecisionError("'ignore' is not allowed for an approval: accept, edit or respond (reject)")
        if kind not in _INBOX_DECISIONS:
            raise InvalidDecisionError(f"unknown response type {kind!r}: use accept, edit or response")
        args = value.get("args")
        decision: dict[str, Any] = {
            "approver": value.get("approver") or approver,
            "decision": _INBOX_DECISIONS[str(kind)],
        }
        if kind == "edit":
            changes = args.get("args", args) if isinstance(args, dict) else args
            decision["args"] = changes
            decision["reason"] = "edited in Agent Inbox"
        elif kind == "response":
            decision["reason"] = args if isinstance(args, str) else ""
        value = decision
    if isinstance(value, dict) and not value.get("approver") and approver:
        value = {**value, "approver": approver}
    if not isinstance(value, dict):
        raise InvalidDecisionError(
            "a decision is {'approver': ..., 'decision': 'approve'|'reject'|'edit', ...} or Agent Inbox's "
            "[{'type': 'accept'|'edit'|'response', 'args': ...}]"
        )
    if not value.get("approver"):
        raise InvalidDecisionError(
            "say who decides: an 'approver' in the decision, or the run's context {'approver': ...}"
        )
    try:
        return Decision.model_validate(value)
    except ValidationError as exc:
        raise InvalidDecisionError(describe_validation_error(exc, what="decision")) from None


class Reply(BaseModel):
    """The message composed for the customer."""

    subject: str
    body: str
    template: str = Field(description="The template it was rendered from, for audit and evaluation.")
    verdict: str | None = Field(
        default=None,
        description="With a model configured: verified, verified_after_retry or template_fallback; None: template.",
    )


class Action(BaseModel):
    """A side effect that a run performed against the helpdesk, with its receipt."""

    kind: str = Field(description="What happened: refund_request, ticket, message, account_request, ...")
    tool: str = Field(description="The tool that performed it.")
    receipt_id: str = Field(description="The id of the row it wrote (stable across re-runs).")
    node: str = Field(description="The graph node that called the tool.")
    details: dict[str, Any] = Field(default_factory=dict)
    amount_cents: int | None = None


class RunResult(BaseModel):
    """What a run (or a resume) of one ticket ended with."""

    thread_id: str
    conversation_id: str | None = Field(
        default=None, description="The conversation this run belongs to: give it as a follow-up's conversation_id."
    )
    turn: int = Field(default=1, description="Which turn of the conversation this result is (1 for a new ticket).")
    conversation: list[dict[str, Any]] = Field(
        default_factory=list, description="The conversation's earlier turns: message, route, intent, status, reply."
    )
    follow_ups: list[FollowUp] = Field(
        default_factory=list, description="Messages attached while the thread awaits approval (not yet answered)."
    )
    asks: list[dict[str, Any]] = Field(
        default_factory=list,
        description="A ticket that asks several things: each ask's index, text, route, intent and status "
        "(answered or handed_on, with the reason); empty for a single ask.",
    )
    status: Status
    status_reason: str | None = None
    route: Route | None = None
    route_reason: str | None = None
    intent: str | None = None
    urgency: Urgency | None = None
    sentiment: Sentiment | None = None
    confidence: float | None = None
    decided_by: str | None = Field(
        default=None, description="The tier that classified it: local, cheap, strong, person."
    )
    model_calls: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Every model call (classification, agent turns, reply): tier, outcome, tokens, cost.",
    )
    signals: list[str] = Field(default_factory=list)
    redactions: dict[str, int] = Field(
        default_factory=dict, description="Personal data kept from the model, by kind; counts only."
    )
    policy_version: str | None = Field(default=None, description="Hash of the policy bundle that governed the run.")
    model_version: str | None = Field(default=None, description="Fingerprint of the model that classified the ticket.")
    language: str | None = Field(default=None, description="The ticket's language (ISO 639-1) as identified.")
    evidence: list[str] = Field(
        default_factory=list, description="Why the classification is sure or unsure, and the phrases signals matched."
    )
    budget_exceeded: str | None = Field(default=None, description="The budget the run crossed, if any.")
    usage: dict[str, int | float] = Field(
        default_factory=dict, description="Model calls and tokens (ints), cost and wall seconds."
    )
    violations: list[dict[str, str]] = Field(
        default_factory=list, description="Tool calls the permission policy refused (node, tool, scope)."
    )
    reply: Reply | None = None
    actions: list[Action] = Field(default_factory=list)
    proposed_actions: list[dict[str, Any]] = Field(default_factory=list)
    findings: dict[str, Any] = Field(default_factory=dict)
    pending_approval: dict[str, Any] | None = Field(
        default=None, description="The approval request the thread is paused on (status awaiting_approval)."
    )
    rejection: dict[str, Any] | None = None
    saga: dict[str, Any] | None = Field(
        default=None,
        description="How a plan change or account closure ended: status (completed, rolled_back, "
        "rollback_failed, not_run), the steps completed and undone, the failed step and the hand-off ticket.",
    )
    failure_class: str | None = Field(
        default=None, description="Why a failed run failed: transient (`triage recover` retries it) or permanent."
    )
    retries: dict[str, int] = Field(
        default_factory=dict,
        description="Attempts beyond the first of each node that a transient failure made its retry policy start "
        "again in this invocation (`billing:lookup`); a resume after an approval is a new invocation, not a retry.",
    )
    duration_ms: float | None = None


class TimelineEntry(BaseModel):
    """One executed node of a thread, read back from the checkpoint store."""

    node: str
    namespace: str = Field(description="'' for the coordinator, 'billing:<task-id>' inside a specialist subgraph.")
    checkpoint_id: str = Field(description="The checkpoint written after the node ran.")
    started_at: datetime
    duration_ms: float
    outcome: str
    branch: str | None = Field(
        default=None, description="In the branch of one ask of several: the specialist (route) that handled it."
    )


class ThreadSummary(BaseModel):
    """A line of `triage threads`."""

    thread_id: str
    updated_at: datetime
    status: str
    route: str | None = None
    customer_id: str | None = None
    subject: str = ""


RELEASE_VERSION_PATTERN = r"^v?\d+(?:\.\d+){1,3}(?:-[0-9A-Za-z][0-9A-Za-z.]*)?$"
"""2.4, 2.4.1, v2.4.1 or 2.4.1-rc.1."""
FIX_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9]{0,15}[-_][A-Za-z0-9]{1,40}$"
"""An engineering ticket id (TCK_1f3a...) or an issue key (ENG-42)."""
MAX_NOTES_CHARS = 20_000


class Release(BaseModel):
    """A shipped release to follow up: its version, the keys it fixes, and its notes (optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(max_length=64, description="The release's version: 2.4, 2.4.1, v2.4.1 or 2.4.1-rc.1.")
    fixes: list[str] = Field(
        description="What it fixes: engineering ticket ids (TCK_...) or issue keys (ENG-42) named in tickets."
    )
    notes: str = Field(default="", max_length=MAX_NOTES_CHARS, description="The release notes, in plain text.")

    @field_validator("version")
    @classmethod
    def _version(cls, version: str) -> str:
        import re

        if not re.fullmatch(RELEASE_VERSION_PATTERN, version.strip()):
            raise ValueError(f"{version!r} is not a release version; use numbers like 2.4, 2.4.1 or v2.4.1-rc.1")
        return version.strip()

    @field_validator("fixes", mode="before")
    @classmethod
    def _fixes(cls, fixes: Any) -> Any:
        import re

        if isinstance(fixes, str):
            fixes = fixes.split(",")
        if not isinstance(fixes, list | tuple):
            return fixes
        keys = [key.strip() for key in fixes if not isinstance(key, str) or key.strip()]
        if not keys:
            raise ValueError("names no fix; give the keys it fixes, e.g. --fixes ENG-42,TCK_1f3a2b4c5d6e7f80")
        bad = [key for key in keys if not isinstance(key, str) or not re.fullmatch(FIX_KEY_PATTERN, key)]
        if bad:
            raise ValueError(
                f"{', '.join(map(repr, bad))} is not a ticket id or issue key (like TCK_1f3a2b4c5d6e7f80 or ENG-42)"
            )
        if len(keys) > 200:
            raise ValueError("200 keys at most per release")
        return list(dict.fromkeys(keys))

    @model_validator(mode="wrap")
    @classmethod
    def _typed_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Release]) -> Release:
        try:
            return handler(data)
        except ValidationError as exc:
            raise InvalidReleaseError(describe_validation_error(exc, what="release")) from None


class ReleaseResult(RunResult):
    """What a release follow-up ended with (or paused on): the fields of a run, and the release's own."""

    version: str
    fixes: list[str] = Field(default_factory=list)
    unknown_keys: list[str] = Field(default_factory=list, description="Fixed keys that name no engineering ticket.")
    tickets: list[dict[str, Any]] = Field(
        default_factory=list, description="The engineering tickets the release fixes (id, customer, keys, state)."
    )
    closed: list[str] = Field(default_factory=list, description="Tickets this release closed (in this run or before).")
    already_closed: list[str] = Field(
        default_factory=list, description="Tickets that were solved before this release; left alone."
    )
    notified: list[str] = Field(default_factory=list, description="Customers told about the fix (once per release).")
    summary: dict[str, Any] | None = Field(
        default=None, description="The customer-facing summary of the notes: text, by (local/cheap), verdict."
    )
