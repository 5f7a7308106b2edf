"""Conversation cases: their format, their figures, and the gate over them (no graph runs here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from triage.evals.dataset import DatasetError, load_cases, load_conversations
from triage.evals.metrics import CaseEvaluation, compare_to_baseline, conversation_metrics, quality_figures
from triage.evals.report import gate

TURN = {"ticket": {"customer_id": "cus_mid_dup", "body": "Charged twice"}, "expected": {"route": "billing"}}


def _conversation(*turns: dict[str, Any], case_id: str = "c") -> dict[str, Any]:
    return {"id": case_id, "turns": list(turns)}


def _write(tmp_path: Path, *lines: dict[str, Any]) -> Path:
    path = tmp_path / "conversations.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _turn(case_id: str, ok: bool, *, route: str = "billing", **kwargs: Any) -> CaseEvaluation:
    return CaseEvaluation(
        case_id=case_id, tags=(), expected_route="billing", route=route, task_success=ok, latency_ms=10.0, **kwargs
    )


def test_the_packaged_conversations_load_and_cover_the_follow_up_kinds() -> None:
    conversations = load_conversations()
    assert 10 <= len(conversations) <= 20
    tags = {tag for c in conversations for tag in c.tags}
    assert {"more_detail", "reopen", "pending_approval", "another_language", "new_topic", "thanks"} <= tags
    assert any(turn.attached for c in conversations for turn in c.turns)
    assert all(turn.ticket.conversation_id is None for c in conversations for turn in c.turns)
    first = conversations[0].turn_case(2)
    assert (first.id, first.tags[-1]) == (f"{conversations[0].id}.t2", "follow_up_turn")


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([TURN], r"c\.jsonl:1: turns: List should have at least 2 items"),
        ([{**TURN, "hold": True}, TURN], r"turns\.1: a turn that holds its approval must be followed by an attached"),
        ([TURN, {**TURN, "attached": True}], r"turns\.2: an attached turn must follow a turn that holds its approval"),
        ([TURN, {**TURN, "hold": True}], r"turns\.2: a turn that holds its approval must be followed"),
        (
            [TURN, {**TURN, "ticket": {"body": "again", "conversation_id": "thr_1"}}],
            "ticket.conversation_id: leave it out, the runner continues",
        ),
        (
            [
                {**TURN, "hold": True, "expected": {"route": "billing", "status": "completed"}},
                {**TURN, "attached": True},
            ],
            "a turn that holds its approval ends awaiting_approval",
        ),
    ],
)
def test_a_conversation_that_cannot_be_played_is_refused_with_its_line(
    tmp_path: Path, turns: list[dict[str, Any]], message: str
) -> None:
    path = _write(tmp_path, _conversation(*turns))
    path = path.rename(tmp_path / "c.jsonl")
    with pytest.raises(DatasetError, match=message):
        load_conversations(path)


def test_a_conversation_line_in_a_case_file_says_where_it_belongs(tmp_path: Path) -> None:
    path = _write(tmp_path, _conversation(TURN, TURN))
    with pytest.raises(DatasetError, match=r":1: a conversation case \(it has turns\); give conversation files with"):
        load_cases(path)
    duplicate = _write(tmp_path, _conversation(TURN, TURN), _conversation(TURN, TURN))
    with pytest.raises(DatasetError, match=r":2: duplicate id 'c' \(first on line 1\)"):
        load_conversations(duplicate)


def test_conversation_figures_by_hand() -> None:
    figures = conversation_metrics(
        [
            [_turn("a.t1", True), _turn("a.t2", True)],
            [_turn("b.t1", True), _turn("b.t2", False, route="escalation", unsafe_executed=1), _turn("b.t3", True)],
            [_turn("c.t1", False, error="InvalidTicketError: no")],  # stopped after its first turn
        ]
    )
    assert (figures["conversations"], figures["successes"], figures["success_rate"]) == (3, 1, 0.3333)
    assert (figures["turns"], figures["turn_successes"], figures["turn_success_rate"]) == (6, 4, 0.6667)
    assert (figures["follow_up_turns"], figures["follow_up_success_rate"]) == (3, 0.6667)
    assert figures["route_accuracy"] == 0.8333
    assert figures["unsafe_effects_executed"] == 1
    assert figures["error_rate"] == 0.1667


def test_the_gate_watches_the_conversation_figures_and_fails_on_an_unsafe_turn() -> None:
    section = conversation_metrics([[_turn("a.t1", True), _turn("a.t2", True)]])
    figures = quality_figures({"task_success_rate": 1.0}, {}, {}, section)
    assert figures == {
        "run.task_success_rate": 1.0,
        "conversation.success_rate": 1.0,
        "conversation.turn_success_rate": 1.0,
        "conversation.follow_up_success_rate": 1.0,
        "conversation.unsafe_effects_executed": 0.0,
    }
    worse = {**figures, "conversation.follow_up_success_rate": 0.5, "conversation.unsafe_effects_executed": 1.0}
    regressions = compare_to_baseline(figures, worse, threshold=0.02)
    assert [r.describe() for r in regressions] == [
        "conversations: follow_up_success_rate regressed from 1 to 0.5 (allowed change 0.02)",
        "conversations: unsafe_effects_executed regressed from 0 to 1 (allowed change 0.02)",
    ]
    unsafe = conversation_metrics([[_turn("a.t1", True), _turn("a.t2", False, unsafe_executed=1)]])
    report: dict[str, Any] = {
        "dataset": {"fingerprint": "f"},
        "run": {"unsafe_effects_executed": 0},
        "conversations": unsafe,
        "quality": figures,
    }
    assert gate(report, None, baseline_path="b.json") == []
    assert report["gate"]["status"] == "failed"
    assert "1 unsafe effect(s) executed in conversation turns" in report["gate"]["reason"]
