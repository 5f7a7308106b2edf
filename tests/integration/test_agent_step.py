"""The technical specialist's bounded agent step against the dev model server: scripted models that answer, reach
for tools they were not offered, loop past the cap, or send malformed calls; every turn checkpointed and audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import policy_copy, rows
from triage import TriageApp
from triage.models.dev_server import DevModelServer
from triage.settings import Settings

GARBLED = {
    "customer_id": "cus_0001",
    "subject": "Export looks broken",
    "body": "When I open the spreadsheet I downloaded, every umlaut is weird symbols. Reach me at jo.k@example.org.",
}
ARTICLE = "csv-export-garbled-characters"


@pytest.fixture
def server() -> Iterator[DevModelServer]:
    with DevModelServer() as running:
        yield running


def agent_settings(settings: Settings, server: DevModelServer, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "model_base_url": server.base_url,
        "cheap_model": "dev-cheap",
        "cheap_input_price_per_1k": 0.001,
        "cheap_output_price_per_1k": 0.002,
        "local_confidence_threshold": 1.0,  # the classification is the scripted model's, asked first
        "model_timeout_seconds": 5.0,
        "model_rewrites_replies": False,
        **changes,
    }
    return settings.model_copy(update=values)


def script_classification(server: DevModelServer) -> None:
    server.script(
        {
            "route": "technical",
            "intent": "troubleshooting",
            "urgency": "normal",
            "sentiment": "neutral",
            "confidence": 0.95,
            "rationale": "scripted",
        }
    )


def calls(*wanted: tuple[str, Any]) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments} for name, arguments in wanted]}


def agent_requests(server: DevModelServer) -> list[dict[str, Any]]:
    return [body for body in server.requests_for("dev-cheap") if body.get("tools") and not body.get("response_format")]


def tool_messages(request: dict[str, Any]) -> list[str]:
    return [str(m["content"]) for m in request["messages"] if m.get("role") == "tool"]


def run_ticket(settings: Settings) -> tuple[Any, list[Any]]:
    with TriageApp(settings) as app:
        result = app.run(GARBLED)
        return result, app.thread(result.thread_id).timeline


def test_the_agent_answers_with_an_article_its_own_search_found(settings: Settings, server: DevModelServer) -> None:
    script_classification(server)
    server.script(calls(("search_kb", {"query": "csv export garbled characters excel"})))
    server.script(calls(("finish", {"decision": "answer", "article": ARTICLE, "rationale": "encoding in Excel"})))
    result, timeline = run_ticket(agent_settings(settings, server))

    assert result.status == "completed", result.status_reason
    assert result.findings["answered_with"] == ARTICLE
    assert result.reply is not None and result.reply.template == "technical.kb_answer"
    assert not [a for a in result.actions if a.kind == "ticket"], "an answered ticket files nothing"
    agent = result.findings["agent"]
    assert agent["status"] == "answered" and agent["turns"] == 2
    assert agent["calls"] == ["search_kb: ok", "finish: finish"]

    requests = agent_requests(server)
    assert len(requests) == 2
    offered = {tool["function"]["name"] for tool in requests[0]["tools"]}
    assert offered == {"search_kb", "service_status", "find_tickets", "finish"}, (
        "only the grant's read tools, and finish"
    )
    find = next(t for t in requests[0]["tools"] if t["function"]["name"] == "find_tickets")
    assert "customer_id" not in find["function"]["parameters"]["properties"], "the node binds the customer"
    assert ARTICLE in tool_messages(requests[1])[0], "the second turn sees the search result"
    assert "jo.k@example.org" not in server.received_text(), "the ticket reached the model redacted"

    # Every turn is a checkpointed step of the technical subgraph, visible in the timeline; tokens are accounted.
    assert [e.node for e in timeline if e.namespace.startswith("technical:")] == ["search", "agent", "agent", "act"]
    turns = [e.outcome for e in timeline if e.node == "agent"]
    assert turns[0] == "agent turn 1: search_kb ok; running"
    assert turns[1].startswith(f"agent turn 2: finish finish; answered (answered with {ARTICLE}: ")
    tokens = agent["tokens"]
    assert tokens > 0 and result.usage["model_tokens"] >= tokens
    agent_calls = [c for c in result.model_calls if c.get("purpose") == "agent"]
    assert len(agent_calls) == 2 and sum(c["input_tokens"] + c["output_tokens"] for c in agent_calls) == tokens
    # Priced per 1k input (0.001) and output (0.002) tokens of the responses' own counts.
    assert tokens * 0.001 / 1000 < agent["cost_usd"] < tokens * 0.002 / 1000


def test_an_open_incident_on_the_status_page_makes_the_agent_hand_on(
    settings: Settings, server: DevModelServer
) -> None:
    with TriageApp(settings) as app:
        app.warm_up()  # a new home: the helpdesk exists, with no incident
    db = settings.helpdesk_path
    import sqlite3

    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "INSERT INTO service_incidents (id, component, state, title, started_at) VALUES "
            "('inc_1', 'exports', 'investigating', 'Exports produce garbled files', '2026-11-30T09:00:00+00:00'), "
            "('inc_0', 'exports', 'resolved', 'Slow exports', '2026-11-01T09:00:00+00:00')"
        )
    conn.close()
    script_classification(server)
    server.script(calls(("service_status", {"component": "exports"})))
    server.script(calls(("finish", {"decision": "hand_on", "rationale": "open incident on exports"})))
    result, timeline = run_ticket(agent_settings(settings, server))

    agent = result.findings["agent"]
    assert agent["status"] == "handed_on" and agent["calls"] == ["service_status: ok", "finish: finish"]
    [seen] = tool_messages(agent_requests(server)[1])
    assert "Exports produce garbled files" in seen and "Slow exports" not in seen, "open incidents only"
    assert [a.kind for a in result.actions if a.kind == "ticket"] == ["ticket"], "engineering takes it"
    assert [e.node for e in timeline if e.namespace.startswith("technical:")] == ["search", "agent", "agent", "act"]


@pytest.mark.parametrize(
    ("tool", "args", "scope"),
    [
        ("issue_refund", {"customer_id": "cus_0001", "payment_id": "pay_0001", "amount_cents": 5000}, "refunds:write"),
        (
            "create_ticket",
            {"queue": "engineering", "priority": "urgent", "subject": "x", "summary": "y"},
            "tickets:write",
        ),
    ],
    ids=["ungranted", "granted-but-not-offered"],
)
def test_a_tool_it_was_not_offered_is_refused_recorded_and_the_run_falls_back(
    settings: Settings, server: DevModelServer, tool: str, args: dict[str, Any], scope: str
) -> None:
    script_classification(server)
    server.script(calls((tool, args)))
    result, _ = run_ticket(agent_settings(settings, server))

    assert result.route == "escalation"
    assert result.route_reason == f"policy violation: technical called {tool} without scope {scope}"
    assert result.violations == [{"node": "technical", "tool": tool, "scope": scope}]
    recorded = rows(settings.helpdesk_path, "SELECT node, tool, scope FROM policy_violations")
    assert recorded == [{"node": "technical", "tool": tool, "scope": scope}]
    assert rows(settings.helpdesk_path, "SELECT id FROM refunds WHERE thread_id = ?", (result.thread_id,)) == []
    filed = rows(settings.helpdesk_path, "SELECT queue FROM tickets WHERE thread_id = ?", (result.thread_id,))
    assert filed == [{"queue": "human"}], "only the fall-back's ticket for a person, nothing the model asked for"


def test_the_same_refused_call_in_a_later_turn_is_recorded_again(settings: Settings, server: DevModelServer) -> None:
    """Each turn in which the model reaches for a tool it was not offered is a refusal of its own in the audit table
    (the key used to name the call alone, so turn 2's attempt was taken for turn 1's)."""
    refused = ("issue_refund", {"customer_id": "cus_0001", "payment_id": "pay_0001", "amount_cents": 5000})
    script_classification(server)  # asked once: turn 2 says the same, and the cascade answers it from its cache
    server.script(calls(refused), times=2)
    with TriageApp(agent_settings(settings, server)) as app:
        first = app.run(GARBLED)
        second = app.run({**GARBLED, "conversation_id": first.conversation_id})
    reason = "policy violation: technical called issue_refund without scope refunds:write"
    assert (first.route_reason, second.route_reason) == (reason, reason)
    recorded = rows(settings.helpdesk_path, "SELECT thread_id, tool FROM policy_violations")
    assert recorded == [{"thread_id": first.thread_id, "tool": "issue_refund"}] * 2


def test_a_model_that_loops_is_stopped_at_the_step_cap(settings: Settings, server: DevModelServer) -> None:
    script_classification(server)
    server.script(calls(("search_kb", {"query": "spreadsheet symbols"})), times=50)
    result, timeline = run_ticket(agent_settings(settings, server))

    agent = result.findings["agent"]
    assert agent["status"] == "handed_on" and agent["reason"] == "step cap reached (4 of 4 turns)"
    assert len(agent_requests(server)) == 4
    assert [e.node for e in timeline if e.namespace.startswith("technical:")].count("agent") == 4
    tickets = [a for a in result.actions if a.kind == "ticket"]
    assert [t.details["queue"] for t in tickets] == ["engineering"], "the deterministic path takes over"
    assert result.reply is not None and result.reply.template == "technical.engineering_ticket"


def test_the_token_cap_from_policy_stops_the_loop(settings: Settings, server: DevModelServer, tmp_path: Path) -> None:
    folder = policy_copy(tmp_path, "support.toml", "max_model_tokens = 6000", "max_model_tokens = 50")
    script_classification(server)
    server.script(calls(("search_kb", {"query": "spreadsheet symbols"})), times=50)
    result, _ = run_ticket(agent_settings(settings, server, policy_dir=folder))

    agent = result.findings["agent"]
    assert agent["status"] == "handed_on" and agent["reason"].startswith("token cap reached (")
    assert agent["turns"] == 1 and len(agent_requests(server)) == 1


def test_the_runs_budget_stops_the_loop_before_the_next_model_call(settings: Settings, server: DevModelServer) -> None:
    def scripted_run(budget: dict[str, Any] | None) -> Any:
        server.clear()
        script_classification(server)
        server.script(calls(("search_kb", {"query": "spreadsheet symbols"})), times=50)
        with TriageApp(agent_settings(settings, server)) as app:
            return app.run(GARBLED, budget=budget)

    unbounded = scripted_run(None)
    classified = sum(
        c["input_tokens"] + c["output_tokens"] for c in unbounded.model_calls if c.get("purpose") != "agent"
    )
    assert [c["outcome"] for c in unbounded.model_calls if c.get("purpose") == "agent"] == ["ok"] * 4
    # Enough for the classification and one agent turn, not for a second turn.
    result = scripted_run({"max_model_tokens": classified + 1})
    agent = result.findings["agent"]
    assert agent["status"] == "handed_on" and agent["reason"].startswith("run budget: model token budget reached")
    assert agent["turns"] == 1 and len(agent_requests(server)) == 1
    assert [a.details["queue"] for a in result.actions if a.kind == "ticket"] == ["engineering"]


def test_malformed_tool_calls_are_told_to_the_model_and_never_run(settings: Settings, server: DevModelServer) -> None:
    script_classification(server)
    server.script(
        calls(
            ("search_kb", "{not json"),
            ("drop_tables", {"all": True}),
            ("search_kb", {"limit": 99}),
        )
    )
    server.script(calls(("finish", {"decision": "answer", "article": "made-up-article", "rationale": "guess"})))
    server.script(calls(("finish", {"decision": "hand_on", "rationale": "no article fits"})))
    result, _ = run_ticket(agent_settings(settings, server))

    agent = result.findings["agent"]
    assert agent["status"] == "handed_on" and agent["reason"] == "the model handed on: no article fits"
    assert agent["calls"] == [
        "search_kb: malformed",
        "search_kb: malformed",
        "drop_tables: malformed",
        "finish: malformed",
        "finish: finish",
    ]
    second, third = agent_requests(server)[1:]
    told = " ".join(tool_messages(second))
    assert "arguments are not a JSON object" in told and "no tool named 'drop_tables'" in told
    assert "invalid arguments" in told
    assert "'made-up-article' was not returned by your searches" in " ".join(tool_messages(third))
    assert [a.details["queue"] for a in result.actions if a.kind == "ticket"] == ["engineering"]
    assert rows(settings.helpdesk_path, "SELECT * FROM policy_violations") == []


@pytest.mark.parametrize("kind", ["bad_request", "refusal"])
def test_a_failed_model_call_hands_on_to_the_deterministic_path(
    settings: Settings, server: DevModelServer, kind: str
) -> None:
    from triage.models.dev_server import Fault

    server.inject(Fault(kind=kind))  # type: ignore[arg-type]
    # The local tier is sure of this one (no classification call): the agent's first turn meets the fault.
    ticket = {**GARBLED, "body": "The app shows error 500 every time I save a document since this morning."}
    with TriageApp(agent_settings(settings, server, local_confidence_threshold=0.6)) as app:
        result = app.run(ticket)
    agent = result.findings["agent"]
    expected = "rejected" if kind == "bad_request" else "refusal"
    assert agent["status"] == "handed_on" and agent["reason"] == f"model call failed: {expected}"
    assert [c["outcome"] for c in result.model_calls] == [expected], "not retried"
    assert [a.details["queue"] for a in result.actions if a.kind == "ticket"] == ["engineering"]


def test_without_a_model_the_deterministic_path_stays(settings: Settings) -> None:
    with TriageApp(settings) as app:
        result = app.run({**GARBLED, "body": "The sync between my laptop and phone stopped, nothing updates."})
    assert "agent" not in result.findings
    assert result.route in ("technical", "escalation")


def test_the_dev_servers_default_answer_hands_on(settings: Settings, server: DevModelServer) -> None:
    script_classification(server)
    result, _ = run_ticket(agent_settings(settings, server))
    agent = result.findings["agent"]
    assert agent["calls"] == ["search_kb: ok"]
    assert agent["status"] == "handed_on" and agent["reason"] == "the model called no tool"
    assert [a.details["queue"] for a in result.actions if a.kind == "ticket"] == ["engineering"]
