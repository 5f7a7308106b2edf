"""The service status page: incidents that are open now."""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.tools import InjectedToolArg
from pydantic import BaseModel, Field

from triage.tools.base import ToolContext, fetch_all, helpdesk_tool


class ServiceStatusArgs(BaseModel):
    """Arguments of `service_status`."""

    component: str | None = Field(
        default=None, max_length=64, description="Only this component (e.g. sync, api, exports); all when omitted."
    )


@helpdesk_tool(scope="kb:read", args_schema=ServiceStatusArgs)
async def service_status(ctx: Annotated[ToolContext, InjectedToolArg], component: str | None = None) -> dict[str, Any]:
    """The incidents open now (not resolved), newest first; `operational` is True when there are none."""
    clause, params = ("AND lower(component) = lower(?) ", (component,)) if component else ("", ())
    async with ctx.helpdesk.read() as conn:
        incidents = await fetch_all(
            conn,
            "SELECT id, component, state, title, started_at FROM service_incidents "
            f"WHERE state != 'resolved' {clause}ORDER BY started_at DESC, id LIMIT 10",
            params,
        )
    return {"operational": not incidents, "incidents": incidents}
