"""Summarise the release notes for customers: the one judgment in the release follow-up."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, meter_of, services_of
from triage.state import ReleaseState


async def summarise(state: ReleaseState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Extractive by the local tier; a configured model's summary only when the verifier passed it.

    Without notes there is nothing to summarise: the notification says the release fixes what they reported.
    """
    release = state["release"]
    notes = str(release.get("notes") or "").strip()
    if not notes:
        text = f"Release {release['version']} includes the fix for the problem above."
        return {"summary": {"text": text, "by": "template", "verdict": "no_notes"}}
    services = await services_of(runtime)
    return {"summary": await services.models.summarise_release(notes, meter=meter_of(runtime))}
