"""The billing specialist: read the customer's invoices, payments and refunds, then act on what they show."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, services_of
from triage.nodes.common import (
    action_record,
    article_facts,
    call_tool,
    in_this_turn,
    specialist_update,
    ticket_text,
)
from triage.policies.billing import (
    find_duplicate_charges,
    format_money,
    latest_failed_payment,
    latest_refundable_payment,
    refundable_cents,
)
from triage.state import ActionRecord, Draft, ProposedAction, SpecialistState

NODE = "billing"
TOOLS = ("billing_overview", "request_refund", "search_kb")


async def lookup(state: SpecialistState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Read the billing history the decision needs (nothing for an anonymous ticket)."""
    customer = state["customer"]
    if customer is None:
        return {"findings": {"needs_customer_id": True}}
    overview = await call_tool(runtime, NODE, "billing_overview", customer_id=customer["id"])
    return {"findings": {key: overview[key] for key in ("invoices", "payments", "refunds")}}


async def act(state: SpecialistState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Recognise a duplicate charge, failed payment, refund or invoice request, act on it, draft the reply."""
    findings = state["findings"]
    intent = state["classification"]["intent"]
    actions: list[ActionRecord] = list(state.get("actions", []))
    if findings.get("needs_customer_id"):
        return specialist_update("needs_info", Draft(template="billing.needs_customer", facts={}), actions)

    customer_id = state["customer"]["id"] if state["customer"] else ""
    payments: list[dict[str, Any]] = findings["payments"]
    refunds: list[dict[str, Any]] = findings["refunds"]
    services = await services_of(runtime)
    requested = frozenset(r["payment_id"] for r in refunds)
    rules = services.policy.support.billing
    duplicates = find_duplicate_charges(payments, rules, already_requested=requested)
    open_requests = {r["payment_id"]: r for r in refunds if r["source"] == "request"}
    awaiting = [d for d in find_duplicate_charges(payments, rules) if d.duplicate_id in open_requests]
    if not duplicates and awaiting and intent in ("duplicate_charge", "refund_request"):
        # The duplicate is real, but a request for it (another ticket's) is open: say where it stands.
        request = open_requests[awaiting[0].duplicate_id]
        return _already_requested(request["payment_id"], int(request["amount_cents"]), request["created_at"], actions)

    if duplicates and intent in ("duplicate_charge", "refund_request", "billing_question", "failed_payment"):
        duplicate = duplicates[0]
        proposal = ProposedAction(
            kind="refund",
            args={
                "customer_id": customer_id,
                "payment_id": duplicate.duplicate_id,
                "amount_cents": duplicate.amount_cents,
            },
            reason=f"duplicate of {duplicate.original_id}",
        )
        request = {**proposal["args"], "reason": f"Duplicate charge: {proposal['reason']}"}
        receipt = await call_tool(runtime, NODE, "request_refund", key_from=in_this_turn(state, request), **request)
        if receipt.get("already_requested"):
            return _already_requested(receipt["payment_id"], receipt["amount_cents"], receipt["requested_at"], actions)
        proposal["args"]["request_id"] = receipt["id"]
        actions.append(
            action_record(
                "refund_request",
                "request_refund",
                NODE,
                receipt,
                amount_cents=duplicate.amount_cents,
                payment_id=duplicate.duplicate_id,
            )
        )
        facts = {
            "amount": format_money(duplicate.amount_cents),
            "payment_id": duplicate.duplicate_id,
            "original_id": duplicate.original_id,
            "paid_on": duplicate.paid_on,
            "request_id": receipt["id"],
        }
        findings = {**findings, "duplicate_charges": [d.__dict__ for d in duplicates]}
        return specialist_update(
            "resolved",
            Draft(template="billing.duplicate_refund_requested", facts=facts),
            actions,
            findings=findings,
            proposed=[proposal],
        )

    if intent == "duplicate_charge":
        handled = find_duplicate_charges(
            payments, services.policy.support.billing, already_requested=requested, settled=True
        )
        if handled:  # say what happened to it, rather than that there was none
            duplicate = handled[0]
            refund = next((r for r in refunds if r["payment_id"] == duplicate.duplicate_id), None)
            facts = {
                "amount": format_money(duplicate.amount_cents),
                "payment_id": duplicate.duplicate_id,
                "original_id": duplicate.original_id,
                "paid_on": duplicate.paid_on,
                "refund_status": _refund_status(refund) if refund else "complete",
            }
            return specialist_update(
                "resolved", Draft(template="billing.duplicate_already_handled", facts=facts), actions
            )
        return specialist_update(
            "resolved",
            Draft(template="billing.no_duplicate_found", facts={"payments": _payment_lines(payments)}),
            actions,
        )

    if intent == "failed_payment":
        failed = latest_failed_payment(payments)
        if failed is None:
            return specialist_update(
                "resolved",
                Draft(template="billing.payments_ok", facts={"payments": _payment_lines(payments)}),
                actions,
            )
        facts = {
            "amount": format_money(int(failed["amount_cents"]), str(failed["currency"])),
            "failed_on": str(failed["created_at"])[:10],
            "failure_reason": str(failed["failure_reason"] or "declined").replace("_", " "),
            "invoice_id": failed["invoice_id"] or "n/a",
        }
        return specialist_update("resolved", Draft(template="billing.failed_payment", facts=facts), actions)

    if intent == "refund_request":
        if refunds:
            latest = refunds[0]
            facts = {
                "amount": format_money(int(latest["amount_cents"])),
                "payment_id": latest["payment_id"],
                "refund_status": _refund_status(latest),
                "refunded_on": str(latest["created_at"])[:10],
            }
            return specialist_update("resolved", Draft(template="billing.refund_status", facts=facts), actions)
        payment = latest_refundable_payment(payments)
        if payment is not None:
            amount = refundable_cents(payment)
            proposal = ProposedAction(
                kind="refund",
                args={"customer_id": customer_id, "payment_id": payment["id"], "amount_cents": amount},
                reason="customer asked for a refund of their latest payment",
            )
            request = {**proposal["args"], "reason": "Customer requested a refund"}
            receipt = await call_tool(runtime, NODE, "request_refund", key_from=in_this_turn(state, request), **request)
            if receipt.get("already_requested"):
                return _already_requested(
                    receipt["payment_id"], receipt["amount_cents"], receipt["requested_at"], actions
                )
            proposal["args"]["request_id"] = receipt["id"]
            actions.append(
                action_record(
                    "refund_request",
                    "request_refund",
                    NODE,
                    receipt,
                    amount_cents=amount,
                    payment_id=payment["id"],
                )
            )
            facts = {
                "amount": format_money(amount, str(payment["currency"])),
                "payment_id": payment["id"],
                "paid_on": str(payment["created_at"])[:10],
                "request_id": receipt["id"],
            }
            return specialist_update(
                "resolved",
                Draft(template="billing.refund_requested", facts=facts),
                actions,
                proposed=[proposal],
            )

    if intent == "invoice_request" and findings["invoices"]:
        return specialist_update(
            "resolved",
            Draft(template="billing.invoices", facts={"invoices": _invoice_lines(findings["invoices"])}),
            actions,
        )

    articles = await call_tool(runtime, NODE, "search_kb", query=ticket_text(state), category="billing", limit=1)
    if articles:
        article = articles[0]
        return specialist_update(
            "resolved",
            Draft(template="billing.kb_answer", facts=article_facts(article)),
            actions,
            findings={**findings, "article": article["slug"]},
        )
    return specialist_update("resolved", Draft(template="general.fallback", facts={}), actions)


def _already_requested(
    payment_id: str, amount_cents: int, requested_at: str, actions: list[ActionRecord]
) -> dict[str, Any]:
    """Another thread holds the payment's open refund request: say where it stands, and ask for nothing more."""
    facts = {
        "amount": format_money(amount_cents),
        "payment_id": payment_id,
        "refund_status": "awaiting review by our billing team",
        "refunded_on": str(requested_at)[:10],
    }
    return specialist_update("resolved", Draft(template="billing.refund_status", facts=facts), actions)


def _refund_status(refund: dict[str, Any]) -> str:
    if refund["source"] == "request":
        return "awaiting review by our billing team"
    return {"succeeded": "complete", "pending": "being processed", "failed": "failed"}.get(
        str(refund["status"]), str(refund["status"])
    )


def _payment_lines(payments: list[dict[str, Any]], limit: int = 5) -> str:
    lines = [f"- {p['created_at'][:10]}: {_money(p)} ({p['id']}, {p['status']})" for p in payments[:limit]]
    return "\n".join(lines) or "- no payments yet"


def _invoice_lines(invoices: list[dict[str, Any]], limit: int = 6) -> str:
    return "\n".join(f"- {i['id']} ({i['issued_at'][:10]}): {_money(i)}, {i['status']}" for i in invoices[:limit])


def _money(row: dict[str, Any]) -> str:
    return format_money(int(row["amount_cents"]), str(row["currency"]))
