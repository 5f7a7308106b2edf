"""Support-ticket triage on LangGraph.

>>> from triage import TriageApp, Ticket
>>> app = TriageApp.open()
>>> result = app.run(Ticket(customer_id="cus_small_dup", subject="Charged twice", body="I was billed twice."))
"""

from triage.app import ThreadView, TriageApp
from triage.errors import (
    InvalidTicketError,
    PermanentToolError,
    PolicyFileError,
    ScopeDeniedError,
    ThreadNotFoundError,
    ToolError,
    TransientToolError,
    TriageError,
    UnknownCustomerError,
)
from triage.schemas import Action, Reply, RunResult, ThreadSummary, Ticket, TimelineEntry

__all__ = [
    "Action",
    "InvalidTicketError",
    "PermanentToolError",
    "PolicyFileError",
    "Reply",
    "RunResult",
    "ScopeDeniedError",
    "ThreadNotFoundError",
    "ThreadSummary",
    "ThreadView",
    "Ticket",
    "TimelineEntry",
    "ToolError",
    "TransientToolError",
    "TriageApp",
    "TriageError",
    "UnknownCustomerError",
]
