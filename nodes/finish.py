"""Give the run its terminal status, and close the conversation's turn."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from langgraph.runtime import Runtime

from triage.context import Context, meter_of, thread_id_of
from triage.policies.conversation import turn_record, with_turn
from triage.state import State, Turn
from triage.stores.memory import update_memory, updated_memory

if TYPE_CHECKING:
    from langgraph.store.base import BaseStore


async def finish(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Keep a status set earlier (a failed validation, a rolled-back change); else escalated or completed by the route.

    Also records what the run spent on models, and the turn's record in the conversation (what the next turn
    reads: the message, what was filed, how it was answered), whatever the status: a turn that ended escalated by
    a rollback or an expired approval is a turn the next one follows.
    """
    meter = meter_of(runtime)
    update: dict[str, Any] = {"usage": meter.spent()} if meter else {}
    if not state.get("status"):
        update.update(_ending(state))
    record = turn_record(state.get("turn", 1), {**state, **update})
    await _remember(state, record, runtime)
    return {**update, "conversation": with_turn(state.get("conversation", []), record)}


def _ending(state: State) -> dict[str, str]:
    """The status a turn that set none ends with: escalated when a person takes it, else completed."""
    if state.get("route") == "escalation":
        return {"status": "escalated", "status_reason": state.get("route_reason", "handed to a person")}
    outcome = state.get("outcome") or "resolved"
    reasons = {
        "resolved": "answered and acted on",
        "needs_info": "asked the customer for what is missing",
        "handed_off": "answered and handed to a team queue",
    }
    return {"status": "completed", "status_reason": reasons.get(outcome, outcome)}


async def _remember(state: State, record: Turn, runtime: Runtime[Context]) -> None:
    await remember_turn(runtime.store, state, record, thread_id_of(runtime))


async def remember_turn(
    store: BaseStore | None,
    state: Mapping[str, Any],
    record: Turn,
    thread_id: str,
    *,
    withdrawn: Collection[str] = (),
) -> None:
    """Update the customer's memory with the turn (not after their account was deleted: that memory is gone).

    `withdrawn` are requests the turn filed that were then withdrawn (a failed turn's refund requests, which the app
    releases): remembered as closed, not open.
    """
    customer = state.get("customer")
    if store is None or not customer:
        return
    actions = state.get("actions", [])
    if any(a["kind"] == "account_deletion" and a["node"] == "execute" for a in actions):
        return
    saga = state.get("saga")
    if saga is not None and saga["kind"] == "account_closure" and saga["status"] == "completed":
        return
    done = {a["kind"] for a in actions if a["node"] == "execute"}
    if saga is not None and saga["status"] == "completed":  # a plan change the saga carried out
        done.add(saga["kind"])
    closed = [p["args"]["request_id"] for p in state.get("proposed_actions", []) if p["kind"] in done]
    closed += withdrawn
    rejection = state.get("rejection")
    if rejection and "request_id" in rejection["args"]:
        closed.append(rejection["args"]["request_id"])
    customer_id = str(customer["id"])
    classification = state.get("classification")
    await update_memory(
        store,
        customer_id,
        lambda previous: updated_memory(
            previous,
            customer_id=customer_id,
            thread_id=thread_id,
            turn=record,
            language=classification.get("language") if classification else None,
            filed=record["requests"],
            closed=closed,
        ),
    )
