"""The account specialist: password resets, unlocks, email and profile changes, plan changes, deletion, export."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, meter_of, services_of
from triage.nodes.common import (
    action_record,
    article_facts,
    call_tool,
    find_emails,
    in_this_turn,
    mask_email,
    specialist_update,
    ticket_text,
)
from triage.policies.account import billing_moment, closure_args, explicitly_requested, plan_change_args
from triage.policies.billing import format_money
from triage.policies.routing import priority_for
from triage.state import ActionRecord, Draft, ProposedAction, SpecialistState

NODE = "account"
TOOLS = ("list_plans", "list_payments", "search_kb", "create_account_request", "create_ticket")
_ACTIVE = ("active", "trialing", "past_due")

# Intent -> the account request it files and the template that confirms it.
_REQUESTS = {
    "account_deletion": ("account_deletion", "account.deletion_requested"),
    "data_export": ("data_export", "account.data_export_requested"),
}


async def lookup(state: SpecialistState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Gather what the request needs: the plans for a plan change, an article for self-service requests."""
    intent = state["classification"]["intent"]
    findings: dict[str, Any] = {"account_status": (state["customer"] or {}).get("status")}
    if intent == "plan_change":
        findings["plans"] = await call_tool(runtime, NODE, "list_plans")
    customer = state["customer"]
    if intent == "account_deletion" and customer is not None and customer.get("subscription_status") in _ACTIVE:
        findings["payments"] = await call_tool(runtime, NODE, "list_payments", customer_id=customer["id"], limit=12)
    if intent in ("profile_update", "signup_help") or state["customer"] is None:
        findings["articles"] = await call_tool(
            runtime, NODE, "search_kb", query=ticket_text(state), category="account", limit=1
        )
    return {"findings": findings}


async def act(state: SpecialistState, runtime: Runtime[Context]) -> dict[str, Any]:
    """File the account request the ticket asks for and draft the confirmation."""
    intent = state["classification"]["intent"]
    customer = state["customer"]
    findings = state["findings"]
    actions: list[ActionRecord] = list(state.get("actions", []))
    articles: list[dict[str, Any]] = findings.get("articles", [])

    if intent == "signup_help" and articles:
        return specialist_update(
            "resolved", Draft(template="account.kb_answer", facts=article_facts(articles[0])), actions
        )
    if customer is None:
        return specialist_update("needs_info", Draft(template="account.needs_customer", facts={}), actions)

    async def file_request(kind: str, **details: str) -> dict[str, Any]:
        request = {"customer_id": customer["id"], "kind": kind, "details": details}
        # A later turn that asks again files again (a second reset link, a deletion asked for after a rejected
        # one): turn 1's request may be withdrawn or done by then.
        receipt: dict[str, Any] = await call_tool(
            runtime, NODE, "create_account_request", key_from=in_this_turn(state, request), **request
        )
        record = action_record("account_request", "create_account_request", NODE, receipt, request=kind)
        record["details"].update(details)
        actions.append(record)
        return receipt

    email = {"masked_email": mask_email(str(customer["email"]))}
    status = customer["status"]
    if intent in ("password_reset", "account_locked", "signup_help"):
        if status == "suspended":
            services = await services_of(runtime)
            priority = priority_for(state["classification"]["urgency"], services.policy.support)
            receipt = await call_tool(
                runtime,
                NODE,
                "create_ticket",
                # Keyed by the message in this turn: the summary is a model's words with a model tier.
                key_from=in_this_turn(state, {"queue": "account", "priority": priority, "message": state["ticket"]}),
                queue="account",
                priority=priority,
                subject=f"Suspended account {customer['id']} asks for access",
                summary=await services.models.summarise(state["ticket"]["body"], meter=meter_of(runtime)),
                customer_id=customer["id"],
            )
            actions.append(action_record("ticket", "create_ticket", NODE, receipt, queue="account", priority=priority))
            return specialist_update(
                "handed_off", Draft(template="account.suspended", facts={"ticket_id": receipt["id"]}), actions
            )
        if status == "locked":
            receipt = await file_request("account_unlock")
            return specialist_update(
                "resolved",
                Draft(template="account.unlock", facts={**email, "request_id": receipt["id"]}),
                actions,
            )
        if intent == "account_locked":
            return specialist_update("resolved", Draft(template="account.account_ok", facts=email), actions)
        receipt = await file_request("password_reset")
        return specialist_update(
            "resolved",
            Draft(template="account.password_reset", facts={**email, "request_id": receipt["id"]}),
            actions,
        )

    if intent == "email_change":
        new_emails = [e for e in find_emails(ticket_text(state)) if e != str(customer["email"]).lower()]
        if not new_emails:
            return specialist_update(
                "needs_info", Draft(template="account.email_change_needs_address", facts={}), actions
            )
        receipt = await file_request("email_change", new_email=new_emails[-1])
        facts = {**email, "new_email": new_emails[-1], "request_id": receipt["id"]}
        return specialist_update("resolved", Draft(template="account.email_change", facts=facts), actions)

    if intent == "plan_change":
        plans: list[dict[str, Any]] = findings["plans"]
        current = str(customer.get("plan_name") or "no plan")
        target = _mentioned_plan(ticket_text(state), plans, exclude=customer.get("plan_id"))
        if target is None:
            lines = "\n".join(
                f"- {p['name']}: {format_money(int(p['monthly_price_cents']))}/month, {p['description']}" for p in plans
            )
            return specialist_update(
                "needs_info",
                Draft(template="account.plan_options", facts={"current_plan": current, "plans": lines}),
                actions,
            )
        receipt = await file_request("plan_change", from_plan=str(customer.get("plan_id")), to_plan=target["id"])
        facts = {
            "current_plan": current,
            "target_plan": target["name"],
            "target_price": format_money(int(target["monthly_price_cents"])),
            "request_id": receipt["id"],
        }
        proposed = []
        if customer.get("subscription_id") and customer.get("subscription_status") in _ACTIVE:
            args = plan_change_args(customer, target, receipt["id"], as_of=await _billing_as_of(runtime))
            proposed.append(
                ProposedAction(kind="plan_change", args=args, reason=f"the customer asked for {target['name']}")
            )
        return specialist_update(
            "resolved", Draft(template="account.plan_change", facts=facts), actions, proposed=proposed
        )

    if intent in _REQUESTS:
        kind, template = _REQUESTS[intent]
        if not explicitly_requested(kind, ticket_text(state)):
            return specialist_update("needs_info", Draft(template="account.clarify", facts={}), actions)
        receipt = await file_request(kind)
        proposal = ProposedAction(
            kind=kind,
            args={"customer_id": customer["id"], "request_id": receipt["id"]},
            reason=f"the customer asked for {kind.replace('_', ' ')}",
        )
        if kind == "account_deletion" and "payments" in findings:  # an active subscription: close it step by step
            args = closure_args(customer, findings["payments"], receipt["id"], as_of=await _billing_as_of(runtime))
            proposal = ProposedAction(
                kind="account_closure", args=args, reason="the customer asked to close the account"
            )
        return specialist_update(
            "resolved",
            Draft(template=template, facts={**email, "request_id": receipt["id"]}),
            actions,
            proposed=[proposal],
        )

    receipt = await file_request("profile_update", note=state["ticket"]["body"][:500])
    hint = f"You can also change this yourself: {articles[0]['title']}." if articles else ""
    return specialist_update(
        "resolved",
        Draft(template="account.profile_update", facts={"request_id": receipt["id"], "article_hint": hint}),
        actions,
    )


def _mentioned_plan(text: str, plans: list[dict[str, Any]], *, exclude: Any) -> dict[str, Any] | None:
    """The plan named in the text (other than the current one); the last one mentioned wins ('from X to Y')."""
    lowered = text.lower()
    best: tuple[int, dict[str, Any]] | None = None
    for plan in plans:
        if plan["id"] == exclude:
            continue
        for match in re.finditer(
            rf"\b({re.escape(str(plan['id']))}|{re.escape(str(plan['name']).lower())})\b", lowered
        ):
            if best is None or match.start() > best[0]:
                best = (match.start(), plan)
    return best[1] if best else None


async def _billing_as_of(runtime: Runtime[Context]) -> datetime:
    """The instant the run's billing arithmetic is done as of: `Settings.billing_date` at noon UTC, or now."""
    return billing_moment((await services_of(runtime)).settings.billing_date)
