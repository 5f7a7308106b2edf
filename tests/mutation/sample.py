"""A fixed sample of mutants of the code that moves money, each with the tests that must kill it.

The first four are the bugs a reviewer planted by hand (issue 17) and the suite once let through. The rest are
small, plausible slips at each policy boundary and safeguard. test_mutation_sample applies every one of them and
fails if the tests named stop catching it; `make mutation` covers every mutant, slowly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    """One small change to one function, and the tests that must fail with it."""

    name: str
    module: str
    target: str
    """The function (`name`) or method (`Class.name`) the change is in."""
    old: str
    new: str
    tests: tuple[str, ...]


BOUNDARIES = "tests/unit/test_policy_boundaries.py"
BILLING = "tests/unit/test_billing_edge_cases.py"
GUARD = "tests/unit/test_guard.py"
SAFEGUARDS = "tests/integration/test_effect_safeguards.py"
FLOW = "tests/integration/test_approval_flow.py"
ACCOUNT = "tests/unit/test_account_change_rules.py"

MUTANTS = (
    Mutant(
        "planted: approval tier limits become strict",
        "triage.policies.approvals",
        "approval_tier",
        'if amount <= policy.refunds.no_approval_max_cents:\n            return "none"\n'
        "        if amount <= policy.refunds.single_approval_max_cents:",
        'if amount < policy.refunds.no_approval_max_cents:\n            return "none"\n'
        "        if amount < policy.refunds.single_approval_max_cents:",
        (f"{BOUNDARIES}::test_refund_tier_at_each_limit",),
    ),
    Mutant(
        "planted: failed payments are not filtered out before looking for duplicates",
        "triage.policies.billing",
        "find_duplicate_charges",
        '(p for p in payments if p["status"] != "failed")',
        "(p for p in payments)",
        (f"{BILLING}::test_failed_charge_then_successful_retry_on_the_same_invoice_is_not_a_duplicate",),
    ),
    Mutant(
        "planted: the guard redacts each fact with its own mapping",
        "triage.models.guard",
        "GuardedModelTier.compose",
        "redaction = redact(value, into=redaction)\n                value = redaction.text",
        "value = redact(value).text",
        (f"{GUARD}::test_reply_carries_the_real_email_not_a_placeholder",),
    ),
    Mutant(
        "planted: the executor skips the effects-ledger lookup",
        "triage.nodes.execute",
        "execute",
        "if receipt is None:",
        "if True:",
        (f"{SAFEGUARDS}::test_ledger_alone_prevents_a_second_refund",),
    ),
    Mutant(
        "reply approval threshold becomes inclusive",
        "triage.policies.approvals",
        "reply_needs_approval",
        "confidence < policy.actions.low_confidence_reply_below",
        "confidence <= policy.actions.low_confidence_reply_below",
        (f"{BOUNDARIES}::test_reply_approval_threshold",),
    ),
    Mutant(
        "one approver may give both approvals of a dual approval",
        "triage.policies.approvals",
        "approval_refusal",
        "if approver_id in received:",
        "if False:",
        (f"{BOUNDARIES}::test_approval_refusal",),
    ),
    Mutant(
        "routing confidence threshold becomes inclusive",
        "triage.policies.routing",
        "decide_route",
        'predicted != "escalation" and confidence < rules.min_confidence:',
        'predicted != "escalation" and confidence <= rules.min_confidence:',
        (f"{BOUNDARIES}::test_routing_confidence_threshold",),
    ),
    Mutant(
        "step budget allows one step too many",
        "triage.policies.budgets",
        "budget_exceeded",
        "usage.steps >= budget.max_steps",
        "usage.steps > budget.max_steps",
        (f"{BOUNDARIES}::test_budget_limits",),
    ),
    Mutant(
        "duplicate window excludes its own end",
        "triage.policies.billing",
        "find_duplicate_charges",
        "<= rules.duplicate_window_hours",
        "< rules.duplicate_window_hours",
        (f"{BILLING}::test_window_for_charges_without_an_invoice",),
    ),
    Mutant(
        "restore leaves placeholders in place",
        "triage.policies.pii",
        "restore",
        "return redaction.values.get(placeholder, placeholder)",
        "return placeholder",
        ("tests/unit/test_policies.py::test_redact",),
    ),
    Mutant(
        "the gateway skips the scope check",
        "triage.gateway",
        "ToolGateway.call",
        "if not self.permissions.allows(caller, scope) or (offered is not None and tool_name not in offered):",
        "if offered is not None and tool_name not in offered:",
        ("tests/integration/test_gateway_and_tools.py::test_out_of_scope_call_is_refused_and_recorded",),
    ),
    Mutant(
        "single-tier actions skip their approval",
        "triage.nodes.approve",
        "approve",
        'if tier == "none":',
        'if tier != "dual":',
        (f"{FLOW}::test_single_approval_request_payload_and_audit",),
    ),
    Mutant(
        "approval expiry ignores the policy",
        "triage.nodes.approve",
        "approve",
        "timedelta(hours=policy.sla.expiry_hours)",
        "timedelta(days=policy.sla.expiry_hours)",
        (f"{FLOW}::test_single_approval_request_payload_and_audit",),
    ),
    Mutant(
        "the longest IBANs slip through redaction",
        "triage.policies.pii",
        "iban_valid",
        "if not 15 <= len(compact) <= 34:",
        "if not 15 <= len(compact) < 34:",
        ("tests/unit/test_pii_and_injection_rules.py::test_iban",),
    ),
    Mutant(
        "a random key at exactly the entropy threshold slips through redaction",
        "triage.policies.pii",
        "_high_entropy",
        "return entropy >= 4.0",
        "return entropy > 4.0",
        ("tests/unit/test_pii_secrets.py::test_the_entropy_test_at_its_limits",),
    ),
    Mutant(
        "an edit may raise a refund",
        "triage.policies.approvals",
        "edit_refusal",
        'if amount > int(args["amount_cents"]):',
        "if False:",
        ("tests/unit/test_approve_rules.py::test_edit_refusal",),
    ),
    Mutant(
        "an account closure refunds from a payment whose money an open refund request is about to take",
        "triage.policies.account",
        "refund_source",
        'refundable_cents(p) - int(p.get("requested_cents") or 0) >= amount_cents',
        "refundable_cents(p) >= amount_cents",
        (f"{ACCOUNT}::test_what_a_payment_has_left_counts_its_refunds_and_its_open_refund_requests",),
    ),
    Mutant(
        "a renewal date months ahead prorates every month up to it (the bug mutation testing found)",
        "triage.policies.account",
        "unused_share",
        "while _add_months(end, step - 1) > as_of:",
        "while step > 0 and _add_months(end, step - 1) > as_of:",
        (f"{ACCOUNT}::test_a_renewal_months_ahead_leaves_at_most_one_period",),
    ),
)
