"""Tell each customer, once per release, that what they reported is fixed."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, services_of, thread_id_of
from triage.models.templates import render
from triage.nodes.common import action_record
from triage.nodes.release.keys import note_key, notify_key
from triage.state import Draft, Recipient, RelatedTicket, ReleaseState, ReleaseTicket

NODE = "notify"
TOOLS = ("send_message", "note_ticket")
TEMPLATE = "release.fixed"
FOLLOW_UP_EVENT = "release_followup"
"""The audit line each of the customer's conversations gets, the reporting ones and those with another open ticket
about the same problem: which release fixed it, which message told the customer, which of its tickets it concerns."""


def notification(recipient: Recipient, tickets: list[ReleaseTicket], version: str, summary: str) -> Draft:
    """The message for one customer: the fixes that concern them and the summary of the notes.

    Their other tickets about the same problems are named too: those closed with the fixed ones, and those a person
    still has open.
    """
    mine = [t for t in tickets if t["id"] in recipient["tickets"]]
    related = recipient.get("related", [])
    lines = [
        f"- {t['subject']} (ticket {t['id']}"
        + (f", fixed by {', '.join(k for k in t['keys'] if k != t['id'])})" if set(t["keys"]) - {t["id"]} else ")")
        for t in mine
    ]
    lines += [f"- {r['subject']} (ticket {r['id']}, the same problem)" for r in related if r["queue"] == "engineering"]
    still_open = [r for r in related if r["queue"] != "engineering"]
    open_note = (
        "\n\nYour other open request(s) about this problem stay with our team for anything else they ask: "
        + "; ".join(f"{r['subject']} (ticket {r['id']})" for r in still_open)
        + ". The team can see this message, so nobody will tell you about this fix again."
        if still_open
        else ""
    )
    return Draft(
        template=TEMPLATE,
        facts={
            "customer_name": recipient["name"],
            "version": version,
            "fixes": "\n".join(lines),
            "summary": summary,
            "open_elsewhere": open_note,
            "ticket_subject": mine[0]["subject"] if len(mine) == 1 else f"Fixed in release {version}",
        },
    )


def ticket_note(version: str, message_id: str, recipient: Recipient, related: RelatedTicket) -> str:
    """The note a person's open ticket gets: the release fixed what it asks about, and the customer was told."""
    return (
        f"Release {version} fixes what this ticket asks about ({', '.join(related['because'])}). The customer was "
        f"told in message {message_id} (fixed tickets: {', '.join(recipient['tickets'])}): do not tell them again; "
        "answer only what else this ticket asks, or close it."
    )


async def notify(state: ReleaseState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Queue one message per customer not told yet, and note the follow-up where the customer waits on it.

    Each of their conversations concerned gets an audit line, and each open ticket in a person's queue about the same
    problem a note, so nobody tells them twice.
    """
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
        for conversation, concerns in conversations(recipient).items():
            await services.journal.audit(
                conversation,
                FOLLOW_UP_EVENT,
                actor=NODE,
                details={
                    "version": version,
                    "release_thread": thread_id,
                    "tickets": recipient["tickets"],
                    "message_id": receipt["id"],
                    **({"open_tickets": concerns} if concerns else {}),
                },
                policy_version=services.policy.version,
                dedupe_key=f"{FOLLOW_UP_EVENT}:{key}:{conversation}",
            )
        for related in recipient.get("related", []):
            if related["queue"] == "engineering":
                continue  # closed with the fixed tickets
            note = note_key(version, related["id"])
            if await services.journal.receipt(note) is None:
                args = {"ticket_id": related["id"], "note": ticket_note(version, receipt["id"], recipient, related)}
                noted = await services.gateway.call(
                    NODE, "note_ticket", args, thread_id=thread_id, idempotency_key=note
                )
                noted = await services.journal.record_effect(
                    note,
                    thread_id=thread_id,
                    kind="ticket_noted",
                    receipt=noted,
                    policy_version=services.policy.version,
                )
                actions.append(action_record("ticket_noted", "note_ticket", NODE, noted, release=version))
        notified.append(recipient["customer_id"])
    return {"notified": notified, "actions": actions}


def conversations(recipient: Recipient) -> dict[str, list[str]]:
    """The customer's conversations the follow-up concerns, each with its open tickets about the same problem.

    The reporting ones first, then those where they wrote to us about it again.
    """
    concerned: dict[str, list[str]] = {thread: [] for thread in recipient["threads"]}
    for related in recipient.get("related", []):
        concerned.setdefault(related["thread_id"], []).append(related["id"])
    return concerned
