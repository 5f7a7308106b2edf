"""Validate the incoming ticket and look up its customer."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Command

from triage.context import Context, services_of, thread_id_of
from triage.errors import InvalidTicketError, UnknownCustomerError
from triage.gateway import ToolGateway
from triage.schemas import Ticket
from triage.state import State

NODE = "validate"
TOOLS = ("get_customer",)


async def check_ticket(data: Any, gateway: ToolGateway, *, thread_id: str) -> tuple[Ticket, dict[str, Any] | None]:
    """Validate a ticket and return it with its customer's profile (None when anonymous).

    Raises:
        InvalidTicketError: the ticket is malformed.
        UnknownCustomerError: it names a customer the helpdesk does not know.
    """
    ticket = Ticket.parse(data)
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
    """Refuse a malformed ticket with a failed status; otherwise attach the customer and go on to classify."""
    services = await services_of(runtime)
    data = state.get("ticket")
    try:
        if _looked_up(state) and _run_by_the_app(runtime):
            # `TriageApp` looked the customer up while checking the ticket, before the run began. A profile in the
            # input of a run from elsewhere (Studio, the server's API) is never trusted: it is looked up again.
            ticket, customer = Ticket.parse(data), state.get("customer")
        else:
            ticket, customer = await check_ticket(data, services.gateway, thread_id=thread_id_of(runtime))
    except InvalidTicketError as exc:
        return Command(goto="finish", update={"status": "failed", "status_reason": str(exc)})
    return Command(
        goto="classify",
        update={
            "ticket": ticket.model_dump(),
            "customer": customer,
            "policy_version": services.policy.version,
        },
    )


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
