"""Every tool with an effect says how it is undone: the tool that compensates it, or why none can."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import pytest
from langchain_core.tools import BaseTool, InjectedToolArg
from pydantic import BaseModel

from triage.tools import ALL_TOOLS
from triage.tools.base import ToolContext, compensation_of, has_effect, helpdesk_tool, irreversible_reason

COMPENSATION_ARGS = {"customer_id", "receipt_id"}
"""What the saga executor hands a compensation: whose effect, and the receipt id the effect returned."""


def declaration_problems(tools: Mapping[str, BaseTool]) -> list[str]:
    """What is wrong with the tools' declarations of how their effects are undone (empty when nothing is)."""
    problems = []
    for name, made in tools.items():
        compensation, reason = compensation_of(made), irreversible_reason(made)
        if not has_effect(made):
            if compensation is not None or reason is not None:
                problems.append(f"{name} only reads but declares how it is undone")
            continue
        if compensation is None and reason is None:
            problems.append(f"{name} has an effect but declares neither its compensation nor why it has none")
        elif compensation is not None and reason is not None:
            problems.append(f"{name} declares both a compensation and why it has none")
        elif reason is not None and len(reason.split()) < 6:
            problems.append(f"{name} says why it has no compensation in too few words: {reason!r}")
        elif compensation is not None:
            undo = tools.get(compensation)
            if undo is None:
                problems.append(f"{name}'s compensation {compensation} is not a tool")
            elif not has_effect(undo) or irreversible_reason(undo) is None:
                problems.append(f"{name}'s compensation {compensation} must have an effect and no undo of its own")
            elif not isinstance(undo.args_schema, type) or not issubclass(undo.args_schema, BaseModel):
                problems.append(f"{name}'s compensation {compensation} has no argument schema")
            elif set(undo.args_schema.model_fields) != COMPENSATION_ARGS:
                problems.append(f"{name}'s compensation {compensation} does not take {sorted(COMPENSATION_ARGS)}")
    return problems


def test_every_effect_tool_declares_its_compensation_or_why_it_has_none() -> None:
    assert declaration_problems(ALL_TOOLS) == []


def test_the_declarations_are_the_ones_the_workflows_rely_on() -> None:
    compensated = {name: compensation_of(made) for name, made in ALL_TOOLS.items() if compensation_of(made)}
    assert compensated == {
        "request_refund": "withdraw_request",
        "create_account_request": "withdraw_request",
        "change_subscription": "revert_subscription_change",
        "post_account_credit": "void_account_credit",
        "adjust_seats": "revert_seat_change",
        "refund_unused_period": "cancel_period_refund",
        "schedule_data_jobs": "cancel_data_jobs",
    }
    reason = irreversible_reason(ALL_TOOLS["send_message"])
    assert reason is not None and "cannot be unsent" in reason
    assert not has_effect(ALL_TOOLS["find_tickets"]) and has_effect(ALL_TOOLS["note_ticket"])


class _Args(BaseModel):
    ticket_id: str


async def _effect(ticket_id: str, ctx: Annotated[ToolContext, InjectedToolArg]) -> dict[str, Any]:
    """A stand-in for a new tool."""
    return {"id": ticket_id}


def test_a_new_effect_tool_without_a_declaration_fails_the_check() -> None:
    undeclared = helpdesk_tool(scope="tickets:write", args_schema=_Args)(_effect)
    assert declaration_problems({**ALL_TOOLS, "reopen": undeclared}) == [
        "reopen has an effect but declares neither its compensation nor why it has none"
    ]
    terse = helpdesk_tool(scope="tickets:write", args_schema=_Args, irreversible="it cannot")(_effect)
    assert declaration_problems({"reopen": terse}) == [
        "reopen says why it has no compensation in too few words: 'it cannot'"
    ]
    dangling = helpdesk_tool(scope="tickets:write", args_schema=_Args, compensation="unreopen")(_effect)
    assert declaration_problems({"reopen": dangling}) == ["reopen's compensation unreopen is not a tool"]
    wrong_args = helpdesk_tool(scope="tickets:write", args_schema=_Args, compensation="close_ticket")(_effect)
    assert declaration_problems({**ALL_TOOLS, "reopen": wrong_args}) == [
        "reopen's compensation close_ticket does not take ['customer_id', 'receipt_id']"
    ]


def test_a_declaration_that_contradicts_itself_is_refused_where_the_tool_is_defined() -> None:
    with pytest.raises(TypeError, match="not both"):
        helpdesk_tool(scope="tickets:write", args_schema=_Args, compensation="x", irreversible="y")
    with pytest.raises(TypeError, match="read-only tool"):
        helpdesk_tool(scope="tickets:read", args_schema=_Args, irreversible="nothing to undo here at all")
