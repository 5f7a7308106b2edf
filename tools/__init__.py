"""Tools: adapters to the systems tickets touch, one domain per file, each declaring the scope it needs."""

from langchain_core.tools import BaseTool

from triage.tools.account_changes import (
    adjust_seats,
    cancel_data_jobs,
    cancel_period_refund,
    change_subscription,
    confirm_account_change,
    post_account_credit,
    refund_unused_period,
    revert_seat_change,
    revert_subscription_change,
    schedule_data_jobs,
    void_account_credit,
)
from triage.tools.accounts import (
    complete_account_request,
    create_account_request,
    decline_request,
    list_plans,
    withdraw_request,
)
from triage.tools.base import ToolContext, tool_scope
from triage.tools.customers import get_customer
from triage.tools.kb import search_kb
from triage.tools.outbox import send_message
from triage.tools.payments import billing_overview, list_invoices, list_payments, list_refunds
from triage.tools.refunds import issue_refund, request_refund
from triage.tools.status import service_status
from triage.tools.tickets import (
    close_ticket,
    create_ticket,
    find_engineering_tickets,
    find_related_tickets,
    find_tickets,
    note_ticket,
)

ALL_TOOLS: dict[str, BaseTool] = {
    made.name: made
    for made in (
        get_customer,
        list_invoices,
        list_payments,
        list_refunds,
        billing_overview,
        request_refund,
        search_kb,
        service_status,
        create_ticket,
        find_engineering_tickets,
        close_ticket,
        find_tickets,
        find_related_tickets,
        note_ticket,
        send_message,
        create_account_request,
        list_plans,
        issue_refund,
        complete_account_request,
        decline_request,
        withdraw_request,
        change_subscription,
        revert_subscription_change,
        post_account_credit,
        void_account_credit,
        adjust_seats,
        revert_seat_change,
        refund_unused_period,
        cancel_period_refund,
        schedule_data_jobs,
        cancel_data_jobs,
        confirm_account_change,
    )
}
"""Every tool by name; the gateway is the only caller."""

ALL_SCOPES: frozenset[str] = frozenset(tool_scope(made) for made in ALL_TOOLS.values())
"""Every scope a tool declares: the only scopes a permissions policy may grant."""

__all__ = ["ALL_SCOPES", "ALL_TOOLS", "ToolContext", "tool_scope"]
