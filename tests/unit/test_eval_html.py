from __future__ import annotations

import re
from typing import Any

from triage.evals.html_report import render_html


def _report() -> dict[str, Any]:
    labels = ["billing", "general"]
    return {
        "schema_version": 1,
        "generated_at": "2026-11-21T00:00:00+00:00",
        "dataset": {"source": "cases.jsonl", "cases": 2, "fingerprint": "abc123"},
        "policy_version": "1df5649e5921",
        "model": {"tier": "local", "tokens": 0, "cost_usd": 0.0},
        "wall_time_s": 1.5,
        "run": {
            "cases": 2,
            "task_successes": 1,
            "task_success_rate": 0.5,
            "route_accuracy": 0.5,
            "intent_accuracy": None,
            "action_accuracy": 1.0,
            "escalation_rate": 0.0,
            "expected_escalation_rate": 0.0,
            "error_rate": 0.0,
            "policy_violations": 0,
            "unexpected_refund_requests": 0,
            "tokens": 0,
            "cost_usd": 0.0,
            "latency_ms": {"p50": 10.0, "p95": 20.0},
        },
        "nodes": {
            "classify": {
                "executions": 2,
                "success_rate": 0.5,
                "errors": 0,
                "retries": None,
                "latency_ms": {"p50": 3.0, "p95": 4.0},
            },
        },
        "routes": {
            "labels": labels,
            "confusion": {"billing": {"billing": 1, "general": 0}, "general": {"billing": 1, "general": 0}},
            "per_route": {r: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 1} for r in labels},
            "macro_f1": 0.5,
        },
        "tags": {"vague": {"cases": 1, "task_success_rate": 0.0, "route_accuracy": 0.0}},
        "gate": {
            "status": "failed",
            "baseline": "b.json",
            "threshold": 0.02,
            "regressions": [{"message": "node classify: success_rate regressed from 1 to 0.5"}],
        },
        "cases": [
            {
                "id": "ok-1",
                "tags": [],
                "passed": True,
                "expected_route": "billing",
                "route": "billing",
                "latency_ms": 10.0,
                "failures": [],
                "failed_nodes": {},
            },
            {
                "id": "bad-1",
                "tags": ["vague"],
                "passed": False,
                "expected_route": "general",
                "route": "billing",
                "expected_status": "completed",
                "status": "completed",
                "latency_ms": 20.0,
                "failures": ['route billing != expected general (<script>alert("x")</script>)'],
                "failed_nodes": {"classify": "predicted billing & not general"},
            },
        ],
    }


def test_html_report_is_self_contained_and_escaped() -> None:
    page = render_html(_report())
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page, "report text is escaped, and the page has no scripts"
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "predicted billing &amp; not general" in page
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", page), "nothing is fetched"
    assert page.count("<svg") == 3, "success, latency and histogram charts"
    assert "gate failed" in page and "node classify: success_rate regressed from 1 to 0.5" in page
    assert "Failing cases (1)" in page and "bad-1" in page
    assert "1df5649e5921" in page
