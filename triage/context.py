"""The run context handed to every node through `Runtime[Context]`, and helpers to read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langgraph.runtime import Runtime
from pydantic.json_schema import SkipJsonSchema

if TYPE_CHECKING:
    from triage.metering import Meter
    from triage.services import Services


@dataclass
class Context:
    """Per-run context (not checkpointed); LangGraph Studio shows its public fields as the run's context form.

    `services` and `meter` are set by `TriageApp` and hidden from the schema; when `services` is missing (a graph
    run by `langgraph dev`), nodes open the process's shared services for `$TRIAGE_HOME`.
    """

    approver: str | None = None
    """Who answers approvals in this run when the resume value does not say (Agent Inbox's responses name no one).
    Checked against the approval policy exactly like `triage approve --as`."""
    services: SkipJsonSchema[Any] = field(default=None, repr=False)
    """The process's `Services` (typed access: `services_of`)."""
    meter: SkipJsonSchema[Any] = field(default=None, repr=False)
    """The run's `Meter`: budget and spend; without one (e.g. under `langgraph dev`) model use is not budgeted."""


async def services_of(runtime: Runtime[Context]) -> Services:
    """The services a node should use for this run."""
    context = runtime.context
    if context is not None and context.services is not None:
        services: Services = context.services
        return services
    from triage.services import shared_services

    return await shared_services()


def meter_of(runtime: Runtime[Context]) -> Meter | None:
    """The run's meter, if the caller gave one."""
    meter: Meter | None = runtime.context.meter if runtime.context is not None else None
    return meter


def thread_id_of(runtime: Runtime[Context]) -> str:
    """The run's thread id (the same inside subgraphs)."""
    thread_id = runtime.execution_info.thread_id if runtime.execution_info else None
    if not thread_id:
        raise ValueError("the graph must be run with config={'configurable': {'thread_id': ...}}")
    return thread_id


def approver_of(runtime: Runtime[Context]) -> str | None:
    """Who answers approvals in this run when the resume value does not say: the context's `approver`."""
    return runtime.context.approver if runtime.context is not None else None
