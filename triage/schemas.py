"""Pydantic models at the boundary: the ticket that comes in and the result that goes out."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from triage.errors import InvalidTicketError
from triage.taxonomy import Route, Sentiment, Status, Urgency

MAX_SUBJECT_CHARS = 300
"""Longest subject accepted, in characters."""
MAX_BODY_CHARS = 20_000
"""Longest ticket body accepted, in characters (about eight pages of text)."""
CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"


class Ticket(BaseModel):
    """An incoming support ticket.

    `customer_id` is optional: anonymous questions are answered, and where an action needs an account the reply
    asks for it. Unknown fields are refused so that a typo (`cusotmer_id`) does not silently drop data.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    customer_id: str | None = Field(default=None, pattern=CUSTOMER_ID_PATTERN, description="Helpdesk customer id.")
    subject: str = Field(default="", max_length=MAX_SUBJECT_CHARS, description="Ticket subject line.")
    body: str = Field(max_length=MAX_BODY_CHARS, description="What the customer wrote.")
    channel: str = Field(default="email", pattern=r"^(email|chat|web|phone)$", description="Where it came from.")

    @field_validator("body")
    @classmethod
    def _body_has_text(cls, body: str) -> str:
        if not body.strip():
            raise ValueError("must contain text")
        return body

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
        field = ".".join(str(part) for part in err["loc"]) or what
        if err["type"] == "json_invalid":
            problems.append(f"not valid JSON ({err['msg'].removeprefix('Invalid JSON: ')})")
        elif err["type"] == "extra_forbidden":
            problems.append(f"{field}: unknown field")
        elif err["type"] == "string_too_long":
            limit = err.get("ctx", {}).get("max_length")
            problems.append(f"{field}: too long ({limit} characters at most)")
        elif err["type"] == "string_pattern_mismatch" and field == "customer_id":
            problems.append(f"{field}: must be 1-64 letters, digits, '_' or '-'")
        else:
            problems.append(f"{field}: {err['msg'].removeprefix('Value error, ')}")
    fields = "customer_id (optional), subject, body (required), channel (email|chat|web|phone)"
    return f"invalid {what}: " + "; ".join(problems) + f". A ticket has {fields}."


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
        default_factory=list, description="Every model call (classification and reply): tier, outcome, tokens, cost."
    )
    signals: list[str] = Field(default_factory=list)
    redactions: dict[str, int] = Field(
        default_factory=dict, description="Personal data kept from the model, by kind; counts only."
    )
    policy_version: str | None = Field(default=None, description="Hash of the policy bundle that governed the run.")
    budget_exceeded: str | None = Field(default=None, description="The budget the run crossed, if any.")
    usage: dict[str, float] = Field(default_factory=dict, description="Model calls, tokens, cost, wall seconds.")
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
    duration_ms: float | None = None


class TimelineEntry(BaseModel):
    """One executed node of a thread, read back from the checkpoint store."""

    node: str
    namespace: str = Field(description="'' for the coordinator, 'billing:<task-id>' inside a specialist subgraph.")
    checkpoint_id: str = Field(description="The checkpoint written after the node ran.")
    started_at: datetime
    duration_ms: float
    outcome: str


class ThreadSummary(BaseModel):
    """A line of `triage threads`."""

    thread_id: str
    updated_at: datetime
    status: str
    route: str | None = None
    customer_id: str | None = None
    subject: str = ""
