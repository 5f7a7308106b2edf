"""Idempotency keys of a release's effects: scoped to the release version, not to the run's thread.

So running the same release again (a new thread, a crash and recover, two runs at once) closes no ticket twice and
tells no customer twice: the effects ledger and the helpdesk both refuse a second effect under one key.
"""

from __future__ import annotations

from triage.tools.base import idempotency_key


def close_key(version: str, ticket_id: str) -> str:
    """The key of closing `ticket_id` for release `version`."""
    return idempotency_key(f"release:{version}", "close_tickets", "close_ticket", {"ticket_id": ticket_id})


def notify_key(version: str, customer_id: str) -> str:
    """The key of telling `customer_id` about release `version` (one message per customer and release)."""
    return idempotency_key(f"release:{version}", "notify", "send_message", {"customer_id": customer_id})


def note_key(version: str, ticket_id: str) -> str:
    """The key of noting on `ticket_id` that release `version` fixed what it asks about and the customer was told."""
    return idempotency_key(f"release:{version}", "notify", "note_ticket", {"ticket_id": ticket_id})
