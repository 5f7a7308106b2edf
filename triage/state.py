"""Graph state: what flows between nodes and is checkpointed after each of them.

Values are plain JSON-like data (TypedDicts, lists, strings) so that checkpoints stay readable and portable;
pydantic models live at the boundary (`triage.schemas`).
"""

from __future__ import annotations

from typing import Any, NotRequired

from typing_extensions import TypedDict

from triage.taxonomy import Route, Sentiment, Status, Urgency


class TicketData(TypedDict):
    """The validated ticket, as `Ticket.model_dump()` gives it."""

    customer_id: str | None
    subject: str
    body: str
    channel: str


class Classification(TypedDict):
    """What the model tier read in the ticket."""

    route: Route
    """The predicted route (before escalation rules)."""
    intent: str
    """The most likely intent within `route`."""
    confidence: float
    """Calibrated probability of `route`."""
    route_scores: dict[str, float]
    """Probability of every route."""
    urgency: Urgency
    sentiment: Sentiment
    signals: list[str]
    """Escalation-relevant flags: legal_threat, chargeback, security, repeat_contact, ..."""
    evidence: list[str]
    """The phrases the signals matched, for the audit trail."""
    model: str
    """Which model tier classified it (e.g. 'local')."""
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


class ApprovalRecord(TypedDict):
    """One action's approval round: who approved so far, and when it was asked for."""

    approval_id: str
    action: str
    tier: str
    approvers: list[str]
    requested_at: str
    expires_at: str


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


class InputState(TypedDict):
    """What a caller hands the graph: just the ticket."""

    ticket: TicketData


class State(InputState):
    """The coordinator's full state."""

    customer: NotRequired[dict[str, Any] | None]
    """The customer's profile from the helpdesk (None for anonymous tickets)."""
    classification: NotRequired[Classification]
    route: NotRequired[Route]
    """The specialist that handled the ticket (after escalation rules)."""
    route_reason: NotRequired[str]
    findings: NotRequired[dict[str, Any]]
    """Facts the specialist found (payments, articles, ...): the evidence behind its actions."""
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
    policy_version: NotRequired[str]
    """Hash of the policy bundle that governed the run."""
    budget_exceeded: NotRequired[str]
    """Why the run stopped using models (a budget it crossed), if it did."""
    usage: NotRequired[dict[str, float]]
    """What the run spent: model calls, tokens, cost, wall seconds."""


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


class SpecialistOutput(TypedDict):
    """What a specialist hands back to the coordinator."""

    findings: dict[str, Any]
    proposed_actions: list[ProposedAction]
    actions: list[ActionRecord]
    outcome: str
    draft: Draft
    violations: list[Violation]
