"""The run context handed to every node through `Runtime[Context]`, and helpers to read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from langgraph.runtime import Runtime

if TYPE_CHECKING:
    from triage.metering import Meter
    from triage.services import Services


@dataclass
class Context:
    """Per-run context (not checkpointed).

    `services` is set by `TriageApp`; when it is missing (a graph run by `langgraph dev`), nodes open the
    process's shared services for the default home.
    """

    services: Services | None = None
    meter: Meter | None = None
    """The run's budget and spend; without one (e.g. under `langgraph dev`) model use is not budgeted."""


async def services_of(runtime: Runtime[Context]) -> Services:
    """The services a node should use for this run."""
    context = runtime.context
    if context is not None and context.services is not None:
        return context.services
    from triage.services import shared_services

    return await shared_services()


def meter_of(runtime: Runtime[Context]) -> Meter | None:
    """The run's meter, if the caller gave one."""
    return runtime.context.meter if runtime.context is not None else None


def thread_id_of(runtime: Runtime[Context]) -> str:
    """The run's thread id (the same inside subgraphs)."""
    thread_id = runtime.execution_info.thread_id if runtime.execution_info else None
    if not thread_id:
        raise ValueError("the graph must be run with config={'configurable': {'thread_id': ...}}")
    return thread_id
