"""Validate the incoming ticket and look up its customer."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.config import get_config
from langgraph.runtime import Runtime
from langgraph.types import Command

from triage.context import Context, services_of, thread_id_of
from triage.errors import InvalidTicketError, UnknownCustomerError
from triage.gateway import ToolGateway
from triage.policies.conversation import FOLLOW_UP_EVENT, MAX_TURNS, attached_turn
from triage.schemas import Ticket
from triage.state import State

NODE = "validate"
TOOLS = ("get_customer",)


async def check_ticket(
    data: Ticket | Any, gateway: ToolGateway, *, thread_id: str
) -> tuple[Ticket, dict[str, Any] | None]:
    """Validate a ticket and return it with its customer's profile (None when anonymous).

    A `Ticket` is taken as it is (validated when it was made); anything else is validated here.

    Raises:
        InvalidTicketError: the ticket is malformed.
        UnknownCustomerError: it names a customer the helpdesk does not know.
    """
    ticket = data if isinstance(data, Ticket) else Ticket.parse(data)
    if ticket.customer_id is None:
        return ticket, None
    customer = await gateway.call(NODE, "get_customer", {"customer_id": ticket.customer_id}, thread_id=thread_id)
    if customer is None:
        raise UnknownCustomerError(
            f"unknown customer_id {ticket.customer_id!r}: use an id from the helpdesk (`triage customers` lists "
            "them), or leave customer_id out for an anonymous question"
        )
    return ticket, customer


async def validate(state: State, runtime: Runtime[Context]) -> Command[Literal["classify", "finish"]]:
    """Refuse a malformed ticket with a failed status; otherwise attach the customer and go on to classify.

    On a follow-up (the thread has ended a turn before), the new turn starts clean: what the last turn decided and
    did is cleared (its record is in `conversation`), messages attached while it awaited approval join the
    conversation, and an anonymous follow-up keeps the conversation's customer.
    """
    services = await services_of(runtime)
    data = state.get("ticket")
    turn: dict[str, Any] = {}
    if is_follow_up(state):
        turn = await _new_turn(state, runtime)
        previous = (state.get("customer") or {}).get("id")
        if isinstance(data, dict) and data.get("customer_id") is None and previous:
            data = {**data, "customer_id": previous}
    in_process = _looked_up(state) and _run_by_the_app(runtime)
    if in_process and not turn:
        # `TriageApp` checked the ticket and looked the customer up before the run began, and its input holds both
        # as they are kept: nothing to check or write again. A profile in the input of a run from elsewhere
        # (Studio, the server's API) is never trusted: it is looked up again.
        return Command(goto="classify", update={"policy_version": services.policy.version})
    try:
        if in_process:
            ticket, customer = Ticket.parse(data), state.get("customer")
        else:
            ticket, customer = await check_ticket(data, services.gateway, thread_id=thread_id_of(runtime))
    except InvalidTicketError as exc:
        return Command(goto="finish", update={**turn, "status": "failed", "status_reason": str(exc)})
    return Command(
        goto="classify",
        update={
            **turn,
            "ticket": ticket.model_dump(),
            "customer": customer,
            "policy_version": services.policy.version,
        },
    )


TURN_KEYS = (
    "classification",
    "outcome",
    "rejection",
    "reply",
    "status",
    "status_reason",
    "failure_class",
    "budget_exceeded",
    "asks",
    "ask_results",
    "saga",
    "usage",
)
"""What one turn decides that the next must not inherit (cleared to None; the next turn writes its own)."""


def is_follow_up(state: State) -> bool:
    """Whether this run continues a thread that has ended a turn before."""
    return "status" in state or bool(state.get("conversation"))


async def _new_turn(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """The update that starts a follow-up turn: the last turn's decisions cleared, attached messages folded in."""
    services = await services_of(runtime)
    conversation = list(state.get("conversation", []))
    previous = state.get("turn", 1)
    # Numbers go on from the last one used, past the `MAX_TURNS` records kept: a number names one turn for good
    # (the messages attached to it, the customer's memory of it).
    number = max([previous, *(turn["turn"] for turn in conversation)])
    folded = {turn.get("follow_up_id") for turn in conversation}
    for line in await services.journal.trail(thread_id_of(runtime)):
        details = line["details"]
        attached = line["event"] == FOLLOW_UP_EVENT and details.get("turn") == previous
        if attached and details["follow_up_id"] not in folded:
            number += 1
            conversation.append(attached_turn(number, details["follow_up_id"], details["message"]))
    step = int(get_config().get("metadata", {}).get("langgraph_step", 0))
    return {
        **dict.fromkeys(TURN_KEYS),
        "actions": [],
        "violations": [],
        "proposed_actions": [],
        "conversation": conversation[-MAX_TURNS:],
        "turn": number + 1,
        "turn_step": step,
    }


def _looked_up(state: State) -> bool:
    """Whether the input carries the customer profile of the ticket's own customer (or none for an anonymous one)."""
    if "customer" not in state:
        return False
    customer, ticket = state["customer"], state.get("ticket") or {}
    expected = ticket.get("customer_id") if isinstance(ticket, dict) else None
    return customer.get("id") == expected if customer is not None else expected is None


def _run_by_the_app(runtime: Runtime[Context]) -> bool:
    """Whether `TriageApp` started this run in-process (it hands its services over; a server's client cannot)."""
    from triage.services import Services

    return runtime.context is not None and isinstance(runtime.context.services, Services)
