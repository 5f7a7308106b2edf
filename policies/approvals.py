"""Pure approval rules: which tier an action falls in, and whether an approver may give the next approval."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Tier = Literal["none", "single", "dual"]
Role = Literal["agent", "supervisor"]
REQUIRED_APPROVALS: dict[Tier, int] = {"none": 0, "single": 1, "dual": 2}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RefundTiers(_Strict):
    """Refund amounts by tier, in cents."""

    no_approval_max_cents: int = Field(ge=0)
    single_approval_max_cents: int = Field(ge=0)


class ActionTiers(_Strict):
    """Tiers of non-refund actions."""

    account_deletion: Tier
    data_export: Tier
    low_confidence_reply_below: float = Field(ge=0.0, le=1.0)
    low_confidence_reply: Tier
    plan_change: Tier = "none"
    """A plan change (its prorated charge or credit is part of the plan's price, not a refund)."""


class ReleaseTiers(_Strict):
    """When a release follow-up's notifications are a mass message that needs approval."""

    mass_notification_above: int = Field(default=10, ge=0)
    """More recipients than this in one release need `mass_notification` approval."""
    mass_notification: Tier = "single"


class Sla(_Strict):
    """How long a pending approval may wait."""

    expiry_hours: float = Field(gt=0.0)


class Approver(_Strict):
    """A person who may approve, with their role."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    role: Role
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    """Their email, if they may also be a customer: nobody decides on their own ticket."""


class ApprovalPolicy(_Strict):
    """The contents of approvals.toml."""

    refunds: RefundTiers
    actions: ActionTiers
    sla: Sla
    approvers: tuple[Approver, ...]
    release: ReleaseTiers = ReleaseTiers()

    @field_validator("approvers")
    @classmethod
    def _unique_ids(cls, approvers: tuple[Approver, ...]) -> tuple[Approver, ...]:
        ids = [a.id for a in approvers]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"approver ids must be unique: {', '.join(duplicates)}")
        return approvers

    def role_of(self, approver_id: str) -> Role | None:
        """The approver's role, or None for someone the policy does not name."""
        return next((a.role for a in self.approvers if a.id == approver_id), None)

    def approver(self, approver_id: str) -> Approver | None:
        """The approver with this id, or None for someone the policy does not name."""
        return next((a for a in self.approvers if a.id == approver_id), None)


def approval_tier(kind: str, args: Mapping[str, Any], policy: ApprovalPolicy) -> Tier:
    """The risk tier of an action: refunds by amount, other actions by kind, anything unknown needs two."""
    if kind == "refund":
        amount = int(args["amount_cents"])
        if amount <= policy.refunds.no_approval_max_cents:
            return "none"
        if amount <= policy.refunds.single_approval_max_cents:
            return "single"
        return "dual"
    if kind == "reply":
        return policy.actions.low_confidence_reply
    if kind in ("account_deletion", "data_export", "plan_change"):
        tier: Tier = getattr(policy.actions, kind)
        return tier
    if kind == "account_closure":  # a deletion, plus the refund of the unused period by its own tier
        refund = approval_tier("refund", {"amount_cents": args.get("refund_cents", 0)}, policy)
        return max(policy.actions.account_deletion, refund, key=REQUIRED_APPROVALS.__getitem__)
    return "dual"


def mass_notification_tier(recipients: int, policy: ApprovalPolicy) -> Tier:
    """The tier of a release follow-up that notifies `recipients` customers: none up to the policy's limit."""
    if recipients <= policy.release.mass_notification_above:
        return "none"
    return policy.release.mass_notification


def reply_needs_approval(confidence: float, policy: ApprovalPolicy) -> bool:
    """Whether a reply drafted from a classification this confident must be approved before it is sent."""
    return confidence < policy.actions.low_confidence_reply_below


def approval_refusal(approver_id: str, tier: Tier, received: Sequence[str], policy: ApprovalPolicy) -> str | None:
    """Why `approver_id` may not give the next approval of an action in `tier`, or None if they may.

    `received` lists the approvers who already approved. A dual approval needs two distinct approvers, at least
    one of them a supervisor; so the second approver must be a supervisor when the first was not.
    """
    role = policy.role_of(approver_id)
    if role is None:
        known = ", ".join(a.id for a in policy.approvers)
        return f"'{approver_id}' is not an approver in the approval policy (approvers: {known})"
    if approver_id in received:
        return f"'{approver_id}' has already approved this action; a dual approval needs a different approver"
    if tier == "dual" and len(received) == REQUIRED_APPROVALS["dual"] - 1:
        roles = {policy.role_of(a) for a in received} | {role}
        if "supervisor" not in roles:
            supervisors = ", ".join(a.id for a in policy.approvers if a.role == "supervisor")
            return f"a dual approval needs a supervisor; '{approver_id}' is an {role} (supervisors: {supervisors})"
    return None


SWEEP_ACTOR = "system:sweep"
"""Who `sweep` records as the decider of an expired approval; only it may answer with a timeout."""


def edit_refusal(kind: str, args: Mapping[str, Any], changes: Mapping[str, Any]) -> str | None:
    """Why an edit cannot be applied: only a refund's amount may change, and only downwards."""
    if kind != "refund" or set(changes) - {"amount_cents"}:
        return "only a refund's amount_cents can be edited"
    amount = changes.get("amount_cents")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        return "amount_cents must be a positive whole number of cents"
    if amount > int(args["amount_cents"]):
        return f"an edit may lower a refund, not raise it above {args['amount_cents']} cents"
    if amount == int(args["amount_cents"]):
        return "the edit does not change the amount; approve it instead"
    return None


def decision_refusal(
    approver_id: str,
    decision: str,
    *,
    tier: Tier,
    received: Sequence[str],
    kind: str,
    args: Mapping[str, Any],
    changes: Mapping[str, Any] | None,
    policy: ApprovalPolicy,
) -> str | None:
    """Why this decision may not be taken on a pending approval, or None: the one check every path applies."""
    if decision == "timeout":
        return None if approver_id == SWEEP_ACTOR else "a timeout is decided by `triage sweep`, not by an approver"
    if decision == "reject":
        if policy.role_of(approver_id) is None:
            return f"'{approver_id}' is not an approver in the approval policy"
        return None
    refusal = approval_refusal(approver_id, tier, received, policy)
    if refusal is None and decision == "edit":
        refusal = edit_refusal(kind, args, changes or {})
    return refusal
