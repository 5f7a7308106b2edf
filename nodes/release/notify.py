"""Tell each customer, once per release, that what they reported is fixed."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, services_of, thread_id_of
from triage.models.templates import render
from triage.nodes.common import action_record
from triage.nodes.release.keys import notify_key
from triage.state import Draft, Recipient, ReleaseState, ReleaseTicket

NODE = "notify"
TOOLS = ("send_message",)
TEMPLATE = "release.fixed"
FOLLOW_UP_EVENT = "release_followup"
"""The audit line each reporting conversation gets: which release fixed it and which message told the customer."""


def notification(recipient: Recipient, tickets: list[ReleaseTicket], version: str, summary: str) -> Draft:
    """The message for one customer: the fixes that concern them and the summary of the notes."""
    mine = [t for t in tickets if t["id"] in recipient["tickets"]]
    fixes = "\n".join(
        f"- {t['subject']} (ticket {t['id']}"
        + (f", fixed by {', '.join(k for k in t['keys'] if k != t['id'])})" if set(t["keys"]) - {t["id"]} else ")")
        for t in mine
    )
    return Draft(
        template=TEMPLATE,
        facts={
            "customer_name": recipient["name"],
            "version": version,
            "fixes": fixes,
            "summary": summary,
            "ticket_subject": mine[0]["subject"] if len(mine) == 1 else f"Fixed in release {version}",
        },
    )


async def notify(state: ReleaseState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Queue one message per customer not told yet, and note the follow-up in each of their conversations."""
    services = await services_of(runtime)
    thread_id = thread_id_of(runtime)
    version = state["release"]["version"]
    summary = str(state.get("summary", {}).get("text", ""))
    actions = list(state.get("actions", []))
    notified: list[str] = []
    for recipient in state.get("recipients", []):
        key = notify_key(version, recipient["customer_id"])
        receipt = await services.journal.receipt(key)
        if receipt is None:
            reply = render(notification(recipient, state.get("tickets", []), version, summary))
            args = {
                "to_address": recipient["email"],
                "subject": reply["subject"],
                "body": reply["body"],
                "template": TEMPLATE,
                "customer_id": recipient["customer_id"],
            }
            sent = await services.gateway.call(NODE, "send_message", args, thread_id=thread_id, idempotency_key=key)
            receipt = await services.journal.record_effect(
                key,
                thread_id=thread_id,
                kind="release_notification",
                receipt=sent,
                policy_version=services.policy.version,
            )
            actions.append(action_record("message", "send_message", NODE, receipt, template=TEMPLATE, release=version))
        for conversation in recipient["threads"]:
            await services.journal.audit(
                conversation,
                FOLLOW_UP_EVENT,
                actor=NODE,
                details={
                    "version": version,
                    "release_thread": thread_id,
                    "tickets": recipient["tickets"],
                    "message_id": receipt["id"],
                },
                policy_version=services.policy.version,
                dedupe_key=f"{FOLLOW_UP_EVENT}:{key}:{conversation}",
            )
        notified.append(recipient["customer_id"])
    return {"notified": notified, "actions": actions}
