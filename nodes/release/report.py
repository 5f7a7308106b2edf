"""Give the release follow-up its terminal status and a sentence that says what it did."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from triage.context import Context, meter_of
from triage.state import ReleaseState


async def report(state: ReleaseState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Keep a status set earlier (a rejected or expired approval); otherwise say what was closed and who was told."""
    meter = meter_of(runtime)
    spent = {"usage": meter.spent()} if meter else {}
    if "status" in state:
        return spent
    version = state["release"]["version"]
    tickets = state.get("tickets", [])
    unknown = state.get("unknown_keys", [])
    unknown_note = f"; no engineering ticket names {', '.join(unknown)}" if unknown and tickets else ""
    if not tickets:
        reason = (
            f"release {version} fixes nothing we know: no engineering ticket names {', '.join(unknown)}; "
            "nothing was closed or sent"
        )
        return {**spent, "status": "completed", "status_reason": reason}
    closed, notified = state.get("closed", []), state.get("notified", [])
    if not closed and not notified:
        earlier = [t["id"] for t in tickets if t["state"] == "solved_before"]
        done = [t["id"] for t in tickets if t["state"] == "closed_by_release"]
        why = (
            f"its tickets were closed and their customers told by an earlier run ({', '.join(done)})"
            if done
            else f"its tickets were solved before ({', '.join(earlier)})"
        )
        return {
            **spent,
            "status": "completed",
            "status_reason": f"release {version}: nothing left to do, {why}{unknown_note}",
        }
    performed = [a for a in state.get("actions", [])]
    new_closed = sum(1 for a in performed if a["kind"] == "ticket_closed")
    new_sent = sum(1 for a in performed if a["kind"] == "message")
    noted = sum(1 for a in performed if a["kind"] == "ticket_noted")
    reason = (
        f"release {version}: {len(closed)} ticket(s) closed, {len(notified)} customer(s) notified"
        + (
            f" ({new_closed} closed and {new_sent} notified by this run, the rest by an earlier one)"
            if (new_closed, new_sent) != (len(closed), len(notified))
            else ""
        )
        + (f"; noted on {noted} open ticket(s) in a person's queue about the same problem" if noted else "")
        + unknown_note
    )
    return {**spent, "status": "completed", "status_reason": reason}
