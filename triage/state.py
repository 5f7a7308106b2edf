"""Graph state: what flows between nodes and is checkpointed after each of them.

Values are plain JSON-like data (TypedDicts, lists, strings) so that checkpoints stay readable and portable;
pydantic models live at the boundary (`triage.schemas`).
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

from typing_extensions import TypedDict

from triage.taxonomy import Route, Sentiment, Status, Urgency


class TicketData(TypedDict):
    """The validated ticket, as `Ticket.model_dump()` gives it."""

    customer_id: str | None
    subject: str
    body: str
    channel: str
    conversation_id: NotRequired[str | None]
    """The conversation (thread) this message continues, when it is a follow-up."""
    message_id: NotRequired[str | None]
    """The sender's id for the message, when it gave one (a follow-up with a known one is not run again)."""


class Turn(TypedDict):
    """One earlier turn of a conversation, as the next turn reads it: what was asked, known and answered.

    Kept short (the message clipped and redacted, the rows by id) because every later checkpoint carries it.
    """

    turn: int
    message: str
    """The customer's message (subject and body), personal data redacted, clipped to the policy's length."""
    route: str | None
    intent: str | None
    status: str | None
    """The turn's terminal status, or `attached` for a message that arrived while the thread awaited approval."""
    outcome: str | None
    reply_template: str | None
    """The template of the reply sent, e.g. technical.kb_answer."""
    answered_with: str | None
    """The knowledge-base article the reply was built from, if any."""
    requests: list[str]
    """Receipt ids of what the turn filed (refund and account requests, tickets): open until someone acts."""
    follow_up_id: NotRequired[str]
    """For an attached message: its id in the audit trail's `follow_up` line (so it is folded in once)."""
    message_id: NotRequired[str]
    """The sender's id for the message, when it gave one: the same message sent again is not run again."""


class Classification(TypedDict):
    """What the model tier read in the ticket."""

    route: Route
    """The predicted route (before escalation rules)."""
    intent: str
    """The most likely intent within `route`."""
    confidence: float
    """Calibrated probability that `route` is right, how familiar the ticket is considered."""
    route_scores: dict[str, float]
    """The classifier's distribution over routes (the confidence adds what it does not know: familiarity)."""
    urgency: Urgency
    sentiment: Sentiment
    signals: list[str]
    """Escalation-relevant flags: legal_threat, chargeback, security, repeat_contact, ..."""
    evidence: list[str]
    """The phrases the signals matched, for the audit trail."""
    model: str
    """Which model tier classified it (e.g. 'local')."""
    model_version: NotRequired[str]
    """The fingerprint of the model that decided (e.g. 'local-3f2a...'), like the policy version."""
    language: NotRequired[str]
    """The ticket's language (ISO 639-1), as the language identifier read it."""
    confidence_evidence: NotRequired[dict[str, Any]]
    """What the confidence rests on: familiar-word share, nearest-example similarity, agreement, language."""
    redactions: NotRequired[dict[str, int]]
    """Personal data kept from the model, by kind (EMAIL, CARD, ...): counts only, never values."""
    decided_by: NotRequired[str]
    """Which tier's judgment stands: local, cheap, strong, or person (no tier was sure)."""
    model_calls: NotRequired[list[dict[str, Any]]]
    """Each model call of the cascade: tier, model, outcome, tokens, cost, latency."""


class ActionRecord(TypedDict):
    """A side effect performed against the helpdesk (see `triage.schemas.Action`)."""

    kind: str
    tool: str
    receipt_id: str
    node: str
    details: dict[str, Any]
    amount_cents: int | None


class Violation(TypedDict):
    """A tool call the permission policy refused."""

    node: str
    tool: str
    scope: str


class ProposedAction(TypedDict):
    """An action a specialist recommends but does not perform itself (e.g. a refund)."""

    kind: str
    args: dict[str, Any]
    reason: str
    ask: NotRequired[int]
    """On a ticket with several asks: the ask that proposed it (its index, from 1)."""


class AskRecord(TypedDict):
    """One ask of a ticket that asks several things (`result.asks`)."""

    index: int
    text: str
    """The part of the ticket that asks it, clipped and redacted."""
    route: str
    intent: str
    status: str
    """answered (by its specialist) or handed_on (to a person, see `reason`)."""
    reason: str | None


class ApprovalRecord(TypedDict):
    """One action's approval round: who approved so far, and when it was asked for."""

    approval_id: str
    action: str
    tier: str
    approvers: list[str]
    requested_at: str
    expires_at: str
    refusal: NotRequired[str]
    """Why the last answer was refused (shown in the next interrupt); cleared once an approval is taken."""
    refusals: NotRequired[int]
    """How many answers were refused so far (absent: none); keys each refusal's audit line apart."""
    origin_id: NotRequired[str]
    """The approval this one replaced by an edit (absent when never edited); the effect is keyed by the origin, so
    one approval yields one effect whatever edits it went through."""


class Draft(TypedDict):
    """What the reply must say: a template id and the facts to fill it with."""

    template: str
    facts: dict[str, Any]


class ReplyData(TypedDict):
    """The composed customer reply."""

    subject: str
    body: str
    template: str
    verdict: NotRequired[str]
    """With a model configured: verified, verified_after_retry or template_fallback (the verifier's call)."""
    findings: NotRequired[list[str]]
    """Why the verifier refused the last rewrite (template_fallback)."""
    model_calls: NotRequired[list[dict[str, Any]]]
    """The rewrite calls: tier, model, outcome, tokens, cost, latency."""


def rows_by_id(_: dict[str, Any] | None, found: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer of the coordinator's `findings`: lists of helpdesk rows become their ids (an article's slug).

    Inside a specialist the rows are whole (its later steps decide on them); what it hands back to the coordinator
    is checkpointed after every later node, and the rows can be read again from the helpdesk by id. Other values
    (duplicate charges, the article answered with, an account's status) are kept as they are.
    """
    return {key: _ids(value) for key, value in (found or {}).items()}


def _ids(value: Any) -> Any:
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        keys = [row.get("id", row.get("slug")) for row in value]
        if all(isinstance(key, str) for key in keys):
            return keys
    return value


class SagaStep(TypedDict):
    """One step of a multi-step account change: the tool that performs it, with its arguments."""

    name: str
    tool: str
    args: dict[str, Any]


class SagaOutcome(TypedDict):
    """How a multi-step account change ended (see `triage.nodes.saga`)."""

    kind: str
    status: str
    """completed; rolled_back (a step failed for good, the completed ones were undone); rollback_failed (a
    compensation failed as well: a person must finish the undo); or not_run (no approval, or nothing to change)."""
    completed: list[str]
    """The steps that took effect, in order."""
    failed_step: str | None
    error: str | None
    undone: list[str]
    """The steps whose compensation ran, in the order it ran (the reverse of `completed`)."""
    not_undone: list[str]
    """The steps whose compensation failed: still in effect."""
    ticket_id: str | None
    """The ticket that hands a rolled-back change to a person."""


def ask_results(old: list[Any] | None, new: list[Any] | None) -> list[Any]:
    """Reducer of the asks' parallel branches: each adds its result; None (the merge, a new turn) clears them."""
    return [] if new is None else [*(old or []), *new]


class InputState(TypedDict):
    """What a caller hands the graph: the ticket, and the customer's profile if the caller already looked it up."""

    ticket: TicketData
    customer: NotRequired[dict[str, Any] | None]
    """The customer's profile from the helpdesk (None for anonymous tickets). `TriageApp` passes the one it found
    while checking the ticket, so `validate` does not look it up again; without it, `validate` looks it up."""


class State(InputState):
    """The coordinator's full state."""

    classification: NotRequired[Classification]
    route: NotRequired[Route]
    """The specialist that handled the ticket (after escalation rules)."""
    route_reason: NotRequired[str]
    findings: NotRequired[Annotated[dict[str, Any], rows_by_id]]
    """Facts the specialist found (payments, articles, ...): the evidence behind its actions. The helpdesk rows it
    read are kept by id (`rows_by_id`), so they are not copied into every later checkpoint."""
    proposed_actions: NotRequired[list[ProposedAction]]
    actions: NotRequired[list[ActionRecord]]
    """Effects performed so far, in order. Each writer returns the whole list (no reducer: see the notes on
    subgraphs that share reducer keys)."""
    outcome: NotRequired[str]
    """The specialist's verdict: resolved, needs_info, handed_off, escalated or policy_violation."""
    violations: NotRequired[list[Violation]]
    """Tool calls refused by the permission policy (the run then falls back to escalation)."""
    draft: NotRequired[Draft]
    approvals: NotRequired[dict[str, ApprovalRecord]]
    """Approval rounds by approval id (see `policies/approvals.py`)."""
    rejection: NotRequired[dict[str, Any]]
    """Set when an approver rejected an action: who, why, which action. Nothing was executed."""
    reply: NotRequired[ReplyData]
    status: NotRequired[Status]
    """Terminal status, set by `finish` (or `failed` by validation or the app on an error)."""
    status_reason: NotRequired[str]
    failure_class: NotRequired[str]
    """Why a failed run failed, by class: `transient` (worth `triage recover`), `permanent` or `policy`."""
    policy_version: NotRequired[str]
    """Hash of the policy bundle that governed the run."""
    budget_exceeded: NotRequired[str]
    """Why the run stopped using models (a budget it crossed), if it did."""
    usage: NotRequired[dict[str, int | float]]
    """What the run spent: model calls, tokens, cost, wall seconds."""
    saga: NotRequired[SagaOutcome]
    """How a multi-step account change (plan change, closure) ended, when the run carried one out."""
    conversation: NotRequired[list[Turn]]
    """The earlier turns of this conversation, oldest first (absent on a conversation's first turn)."""
    asks: NotRequired[list[AskRecord] | None]
    """A ticket that asks several things: each ask, its route, intent and status (absent for a single ask)."""
    ask_results: NotRequired[Annotated[list[dict[str, Any]], ask_results]]
    """The asks' branches as they finish (cleared by the merge)."""
    turn: NotRequired[int]
    """Which turn of the conversation this run is (absent on the first)."""
    turn_step: NotRequired[int]
    """The coordinator step this turn began at (the step budget counts from it; 0 on the first turn)."""


class AgentCallRecord(TypedDict):
    """One tool call of an agent turn, as checkpointed: what was asked, how it ended, what came back."""

    id: str
    tool: str
    args: dict[str, Any]
    outcome: str
    """ok, malformed (bad arguments, unknown tool, a finish that fails its check), refused, or finish."""
    detail: str
    result: Any


class AgentStep(TypedDict):
    """One turn of the agent loop: the model call (tier, tokens, cost, outcome) and the tool calls it asked for."""

    turn: int
    calls: list[AgentCallRecord]
    model_call: dict[str, Any]
    text: str


class AgentTrace(TypedDict):
    """The technical specialist's agent loop (see `triage.nodes.technical`)."""

    status: str
    """running, answered, handed_on or refused."""
    steps: list[AgentStep]
    reason: str
    """Why the loop ended."""
    article: dict[str, Any] | None
    """The article it answered with, as its own search returned it."""


class SpecialistState(TypedDict):
    """What a specialist subgraph reads and writes."""

    ticket: TicketData
    customer: dict[str, Any] | None
    classification: Classification
    route_reason: NotRequired[str]
    findings: NotRequired[dict[str, Any]]
    proposed_actions: NotRequired[list[ProposedAction]]
    actions: NotRequired[list[ActionRecord]]
    outcome: NotRequired[str]
    draft: NotRequired[Draft]
    violations: NotRequired[list[Violation]]
    agent: NotRequired[AgentTrace]
    """The agent loop of the technical specialist, when it ran (checkpointed in the subgraph, turn by turn)."""
    conversation: NotRequired[list[Turn]]
    """Read only: the conversation's earlier turns (see `State.conversation`)."""
    turn_step: NotRequired[int]
    """Read only: the coordinator step this turn began at (absent on a first turn; see `State.turn_step`)."""


class SpecialistOutput(TypedDict):
    """What a specialist hands back to the coordinator."""

    findings: dict[str, Any]
    proposed_actions: list[ProposedAction]
    actions: list[ActionRecord]
    outcome: str
    draft: Draft
    violations: list[Violation]


class AccountChangeState(TypedDict):
    """What the `account_change` graph reads and writes: the approved change, its steps and how it ended."""

    proposed_actions: list[ProposedAction]
    """The change to carry out: the first action whose kind is a plan change or an account closure."""
    approvals: NotRequired[dict[str, ApprovalRecord]]
    """The approvals taken so far (by the support graph's `approve`); a change whose tier needs more is not run."""
    rejection: NotRequired[dict[str, Any]]
    actions: NotRequired[list[ActionRecord]]
    draft: NotRequired[Draft]
    steps: NotRequired[list[SagaStep]]
    saga: NotRequired[SagaOutcome]
    status: NotRequired[Status]
    status_reason: NotRequired[str]
    turn_step: NotRequired[int]
    """Read only: the coordinator step this turn began at (absent on a first turn; see `State.turn_step`)."""


class AccountChangeOutput(TypedDict):
    """What the `account_change` graph hands back to the support graph."""

    actions: list[ActionRecord]
    draft: Draft
    saga: SagaOutcome
    status: NotRequired[Status]
    status_reason: NotRequired[str]


class ReleaseTicket(TypedDict):
    """An engineering ticket a release fixes."""

    id: str
    customer_id: str | None
    subject: str
    thread_id: str
    """The conversation it was opened from."""
    keys: list[str]
    """The fixed keys that name it (its id, or issue keys its subject or summary mentions)."""
    state: str
    """to_close; closed_by_release (an earlier run of this release closed it); solved_before (left alone)."""


class RelatedTicket(TypedDict):
    """A reporting customer's other open ticket about a problem the release fixes (often in another conversation)."""

    id: str
    queue: str
    subject: str
    thread_id: str
    """The conversation it belongs to (the follow-up is noted there too)."""
    because: list[str]
    """What ties it to the fix: the fixed keys or ticket ids it names, or `subject: <the report's subject>`."""


class Recipient(TypedDict):
    """A customer to tell about a release: the fixes that concern them and where they reported them."""

    customer_id: str
    name: str
    email: str
    tickets: list[str]
    threads: list[str]
    """Their conversations the fixed tickets came from (the follow-up is noted in each one's audit trail)."""
    notified_earlier: bool
    """An earlier run of this release already told them; nobody is told twice."""
    related: NotRequired[list[RelatedTicket]]
    """Their other open tickets about the same problems: an engineering one (the bug reported again) is closed with
    the fixed ones; one in a person's queue stays open and gets a note that the customer was told, so the person
    does not tell them again. Looked up only for a customer this release has not told yet."""


RELEASE_THREAD_PREFIX = "rel_"
"""Release follow-up threads are named `rel_...`, so the app knows which graph a thread belongs to."""


class ReleaseInput(TypedDict):
    """What a caller hands the release follow-up graph."""

    release: dict[str, Any]
    """`triage.schemas.Release` as a dict: version, fixes, notes."""


class ReleaseState(ReleaseInput):
    """The release follow-up graph's state."""

    tickets: NotRequired[list[ReleaseTicket]]
    unknown_keys: NotRequired[list[str]]
    """Fixed keys that name no engineering ticket."""
    recipients: NotRequired[list[Recipient]]
    summary: NotRequired[dict[str, Any]]
    """The customer-facing summary of the notes: text, by (local, cheap), verdict, findings, model_calls."""
    approvals: NotRequired[dict[str, ApprovalRecord]]
    """The mass notification's approval rounds, by approval id."""
    rejection: NotRequired[dict[str, Any]]
    closed: NotRequired[list[str]]
    """Tickets this release has closed (in this run or an earlier one)."""
    notified: NotRequired[list[str]]
    """Customers this release has told (in this run or an earlier one)."""
    actions: NotRequired[list[ActionRecord]]
    """Effects performed by this run."""
    status: NotRequired[Status]
    status_reason: NotRequired[str]
    failure_class: NotRequired[str]
    policy_version: NotRequired[str]
    usage: NotRequired[dict[str, int | float]]
