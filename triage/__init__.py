"""Support-ticket triage on LangGraph.

>>> from triage import TriageApp, Ticket
>>> app = TriageApp.open()
>>> result = app.run(Ticket(customer_id="cus_small_dup", subject="Charged twice", body="I was billed twice."))

The names below are imported on first use, so that `triage --help` (which imports this package) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "triage.app": ("ThreadView", "TriageApp"),
    "triage.errors": (
        "InvalidTicketError",
        "PermanentToolError",
        "PolicyFileError",
        "ScopeDeniedError",
        "ThreadNotFoundError",
        "ToolError",
        "TransientToolError",
        "TriageError",
        "UnknownCustomerError",
    ),
    "triage.schemas": ("Action", "Reply", "RunResult", "ThreadSummary", "Ticket", "TimelineEntry"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

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


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'triage' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
