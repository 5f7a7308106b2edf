"""The bounded agent step, model side: the messages of one tool-calling turn and the typed reading of its answer.

The technical specialist's `agent` node runs the loop (`triage.nodes.technical`): each turn the model is shown the
ticket (redacted, between `<ticket>` delimiters), the tools it is offered and every earlier call with its result,
and answers with tool calls. What it answers is read here into typed values and nothing is trusted: a call with
arguments that are not JSON, an unknown tool or a `finish` that fails its schema is a `MalformedCall` the model is
told about; a known tool it was not offered is the gateway's to refuse (and record). A turn that calls no tool ends
the loop as a hand-on.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from triage.models.llm import ModelCall
from triage.state import AgentStep

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.tools import BaseTool

__all__ = [
    "FINISH_TOOL",
    "AgentFinish",
    "AgentTurn",
    "MalformedCall",
    "ToolRequest",
    "agent_messages",
    "describe_result",
    "finish_spec",
    "read_turn",
    "tool_spec",
]

FINISH_TOOL = "finish"
"""The tool the model calls to end the loop; never a helpdesk tool."""
_RESULT_CHARS = 4000


class AgentFinish(BaseModel):
    """How the agent ends its loop: an answer from an article its searches found, or a hand-on."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["answer", "hand_on"] = Field(
        description="answer: an article your searches returned solves the problem; hand_on: none does."
    )
    article: str | None = Field(default=None, description="The slug of that article (decision answer).")
    rationale: str = Field(default="", max_length=300, description="One short sentence.")


@dataclass(frozen=True)
class ToolRequest:
    """A well-formed call of a tool other than `finish` (whether it is offered is the gateway's call)."""

    id: str
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class MalformedCall:
    """A call that cannot be made: arguments that are not a JSON object, or a `finish` that fails its schema."""

    id: str
    name: str
    problem: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class AgentTurn:
    """The model's answer in one turn, read into typed values."""

    call: ModelCall
    requests: list[ToolRequest] = field(default_factory=list)
    malformed: list[MalformedCall] = field(default_factory=list)
    finish: AgentFinish | None = None
    finish_id: str = ""
    text: str = ""


def tool_spec(made: BaseTool, *, bound: Collection[str] = ()) -> dict[str, Any]:
    """The OpenAI function spec of a helpdesk tool, without the arguments the node fills in itself (`bound`)."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    spec = convert_to_openai_tool(made)
    parameters = spec["function"].get("parameters", {})
    for name in bound:
        parameters.get("properties", {}).pop(name, None)
        if name in parameters.get("required", []):
            parameters["required"].remove(name)
    return spec


def finish_spec() -> dict[str, Any]:
    """The OpenAI function spec of `finish`."""
    return {
        "type": "function",
        "function": {
            "name": FINISH_TOOL,
            "description": "End the investigation: answer with an article your searches found, or hand on.",
            "parameters": AgentFinish.model_json_schema(),
        },
    }


def read_turn(message: AIMessage, call: ModelCall, *, known_tools: Collection[str]) -> AgentTurn:
    """Read a model's message into a typed turn (see the module docstring)."""
    turn = AgentTurn(call=call, text=message.content if isinstance(message.content, str) else "")
    for invalid in message.invalid_tool_calls:
        turn.malformed.append(
            MalformedCall(
                id=str(invalid.get("id") or f"invalid-{len(turn.malformed)}"),
                name=str(invalid.get("name") or ""),
                problem=f"arguments are not a JSON object ({str(invalid.get('error') or 'unparsable')[:120]})",
            )
        )
    for tool_call in message.tool_calls:
        call_id, name, args = str(tool_call.get("id") or ""), tool_call["name"], dict(tool_call["args"])
        if name == FINISH_TOOL:
            if len(message.tool_calls) > 1:
                turn.malformed.append(MalformedCall(call_id, name, "call finish alone, after your other calls", args))
                continue
            try:
                turn.finish = AgentFinish.model_validate(args)
                turn.finish_id = call_id
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                turn.malformed.append(MalformedCall(call_id, name, f"invalid finish: {problems}", args))
        elif name not in known_tools:
            turn.malformed.append(MalformedCall(call_id, name, f"no tool named {name!r}", args))
        else:
            turn.requests.append(ToolRequest(call_id, name, args))
    return turn


def agent_messages(system: str, ticket: str, steps: Sequence[AgentStep]) -> list[BaseMessage]:
    """The conversation of the next turn: the instructions, the quoted ticket, then every earlier call and result."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    from triage.models.cascade import quote_data

    messages: list[BaseMessage] = [
        SystemMessage(system),
        HumanMessage(f"<ticket>\n{quote_data(ticket, 'ticket')}\n</ticket>"),
    ]
    for step in steps:
        calls = step["calls"]
        if not calls:
            continue
        messages.append(
            AIMessage(
                content=step["text"],
                tool_calls=[{"id": c["id"], "name": c["tool"], "args": c["args"]} for c in calls],
            )
        )
        for record in calls:
            messages.append(ToolMessage(content=describe_result(record), tool_call_id=record["id"]))
    return messages


def describe_result(record: Mapping[str, Any]) -> str:
    """What the model is told a call returned: the result as JSON, or why there is none."""
    if record["outcome"] == "ok":
        result = record["result"]
        text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
        return text[:_RESULT_CHARS]
    return f"error ({record['outcome']}): {record['detail']}"
