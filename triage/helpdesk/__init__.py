"""The embedded SQLite helpdesk: customers, payments, knowledge base, tickets and outbox."""

from triage.helpdesk.store import Helpdesk

__all__ = ["Helpdesk"]
