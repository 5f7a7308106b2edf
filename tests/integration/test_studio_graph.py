"""The module-level graph that LangGraph Studio loads runs without a TriageApp: it opens shared services itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from triage.services import close_shared_services
from triage.settings import Settings
from triage.studio import support as graph


async def test_studio_graph_runs_on_the_default_home(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "studio-home"))
    monkeypatch.setenv("TRIAGE_CACHE_HOME", str(settings.cache_dir))
    assert graph.checkpointer is None, "langgraph dev refuses a graph compiled with its own checkpointer"
    runnable = graph.copy(update={"checkpointer": InMemorySaver()})
    try:
        out = await runnable.ainvoke(
            {"ticket": {"customer_id": "cus_small_dup", "subject": "Charged twice", "body": "I was billed twice."}},
            {"configurable": {"thread_id": "studio-1"}},
        )
    finally:
        await close_shared_services()
    assert (out["route"], out["status"]) == ("billing", "completed")
    assert (tmp_path / "studio-home" / "helpdesk.sqlite").exists()


async def test_a_profile_for_another_customer_in_the_input_is_replaced_by_the_lookup(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "studio-home"))
    monkeypatch.setenv("TRIAGE_CACHE_HOME", str(settings.cache_dir))
    runnable = graph.copy(update={"checkpointer": InMemorySaver()})
    ticket = {"customer_id": "cus_small_dup", "subject": "Charged twice", "body": "I was billed twice."}
    try:
        out = await runnable.ainvoke(
            {"ticket": ticket, "customer": {"id": "cus_someone_else", "name": "Someone Else"}},
            {"configurable": {"thread_id": "studio-2"}},
        )
    finally:
        await close_shared_services()
    assert out["customer"]["id"] == "cus_small_dup"
    assert out["customer"]["name"] != "Someone Else"


async def test_a_forged_profile_of_the_ticket_s_own_customer_is_not_trusted_outside_the_app(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "studio-home"))
    monkeypatch.setenv("TRIAGE_CACHE_HOME", str(settings.cache_dir))
    runnable = graph.copy(update={"checkpointer": InMemorySaver()})
    ticket = {"customer_id": "cus_small_dup", "subject": "Charged twice", "body": "I was billed twice."}
    forged = {"id": "cus_small_dup", "name": "Mallory", "email": "mallory@example.net", "status": "active"}
    try:
        out = await runnable.ainvoke({"ticket": ticket, "customer": forged}, {"configurable": {"thread_id": "s-3"}})
    finally:
        await close_shared_services()
    assert out["customer"]["id"] == "cus_small_dup"
    assert (out["customer"]["name"], out["customer"]["email"]) != ("Mallory", "mallory@example.net")


async def test_studio_release_graph_runs_on_the_default_home(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from triage.studio import release_followup

    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "studio-home"))
    monkeypatch.setenv("TRIAGE_CACHE_HOME", str(settings.cache_dir))
    assert release_followup.checkpointer is None
    runnable = release_followup.copy(update={"checkpointer": InMemorySaver()})
    try:
        out = await runnable.ainvoke(
            {"release": {"version": "2.4.1", "fixes": ["ENG-404"], "notes": ""}},
            {"configurable": {"thread_id": "rel_studio-1"}},
        )
    finally:
        await close_shared_services()
    assert out["status"] == "completed" and out["unknown_keys"] == ["ENG-404"]
    assert "fixes nothing we know" in out["status_reason"]
