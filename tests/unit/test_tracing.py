"""With LangSmith tracing on, what the client uploads is redacted; with it off, nothing is configured."""

from __future__ import annotations

import functools

import pytest

from triage import tracing


def test_redact_tree_walks_nested_values() -> None:
    run_inputs = {"ticket": {"body": "card 4242 4242 4242 4242, mail a@example.com", "n": 3}, "tags": ["a@example.com"]}
    assert tracing.redact_tree(run_inputs) == {
        "ticket": {"body": "card [CARD_1], mail [EMAIL_1]", "n": 3},
        "tags": ["[EMAIL_1]"],
    }


def test_no_tracing_no_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LANGSMITH_TRACING", raising=False)
    monkeypatch.delenv("LANGCHAIN_TRACING_V2", raising=False)
    assert tracing.install_trace_redaction() is False


def test_tracing_client_hides_personal_data(monkeypatch: pytest.MonkeyPatch) -> None:
    import langsmith
    from langsmith import run_trees, utils

    monkeypatch.setenv("LANGSMITH_TRACING", "true")
    monkeypatch.setenv("LANGSMITH_API_KEY", "offline")
    monkeypatch.setenv("LANGSMITH_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(tracing, "_installed", False)
    monkeypatch.setattr(langsmith, "Client", functools.partial(langsmith.Client, auto_batch_tracing=False))
    utils.get_env_var.cache_clear()  # langsmith caches environment reads
    try:
        assert tracing.install_trace_redaction() is True
        client = run_trees.get_cached_client()
        assert client._hide_inputs({"body": "call +44 20 7946 0958"}) == {"body": "call [PHONE_1]"}
        assert client._hide_outputs({"reply": "sent to a@example.com"}) == {"reply": "sent to [EMAIL_1]"}
    finally:
        langsmith.configure(client=None)
        monkeypatch.undo()
        utils.get_env_var.cache_clear()
