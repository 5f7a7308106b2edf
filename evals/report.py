"""The evaluation report (JSON with a stable schema, Markdown and HTML) and the baseline it is gated against.

JSON schema, version 1 (keys are only ever added within a version)::

    schema_version, generated_at, dataset {source, cases, fingerprint}, policy_version,
    model {tier, tokens, cost_usd}, wall_time_s, run {...run_metrics}, nodes {node: {...node_metrics}},
    routes {labels, confusion, per_route, macro_f1}, tags {tag: {...}}, cases [{id, tags, passed, ...}],
    conversations {...conversation_metrics, tags, nodes, cases [{id, tags, passed, thread_id, turns [...]}]}
    (only when the run had multi-turn cases; its figures are kept apart from the single-ticket ones),
    gate {status, baseline, threshold, regressions [{key, node, metric, baseline, current, message}]}

The baseline file holds only the deterministic quality figures (`quality_figures`) of a full run, with the
dataset fingerprint and policy version they were measured on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from triage.errors import TriageError
from triage.evals.dataset import ConversationCase, EvalCase
from triage.evals.evaluators import CONVERSATION_NOTE, NODE_SUCCESS_NOTE
from triage.evals.html_report import render_html
from triage.evals.metrics import (
    Regression,
    compare_to_baseline,
    conversation_metrics,
    hard_failures,
    node_metrics,
    quality_figures,
    route_metrics,
    run_metrics,
    tag_metrics,
    tier_metrics,
    verdict_counts,
)
from triage.evals.runner import ConversationRun, EvalRun
from triage.policies.pii import redact_tree
from triage.taxonomy import ROUTES

__all__ = [
    "DEFAULT_THRESHOLD",
    "SCHEMA_VERSION",
    "BaselineError",
    "build_report",
    "conversation_section",
    "dataset_fingerprint",
    "default_baseline",
    "gate",
    "read_baseline",
    "render_html",
    "render_markdown",
    "write_baseline",
    "write_reports",
]

SCHEMA_VERSION = 1
DEFAULT_THRESHOLD = 0.02
"""A gated rate may fall by at most this much (absolute, 0..1) before the gate fails."""


class BaselineError(TriageError):
    """The baseline file is missing or unreadable; the message says how to create it."""


def latency_note(measured: Mapping[str, Any]) -> str:
    """How the report's latency figures were taken, from the run's `measured` settings."""
    workers, concurrency = int(measured.get("workers", 1)), int(measured.get("concurrency", 1))
    synchronous = measured.get("sqlite_synchronous", "full")
    where = f"{workers} worker processes" if workers > 1 else "one process"
    at_once = "one case at a time in each" if concurrency == 1 else f"{concurrency} cases at once"
    note = (
        "Latency is each run's own wall time (`duration_ms`: the graph from input to its end or pause, approvals "
        f"answered included), taken in the process that ran the case ({where}, {at_once}). "
    )
    if concurrency == 1:
        note += "With one case in flight per process and no more processes than cores it measures the graph. "
    else:
        note += "With more cases in flight than free cores it also measures cases waiting for each other's CPU. "
    if measured.get("sqlite_on_loop"):
        note += (
            "SQLite statements ran on the event loop's thread, not on a thread per connection (TRIAGE_SQLITE_ON_LOOP): "
            "a real home's runs add a hop to that thread and back for each. "
        )
    if synchronous == "full":
        return note + "Commits waited for the disk (SQLite `synchronous=full`), as in a real home."
    return note + (
        f"The throwaway homes ran at SQLite `synchronous={synchronous}`: commits did not wait for the disk, "
        "which a real home's do (set TRIAGE_SQLITE_SYNCHRONOUS=full to include it)."
    )


def default_baseline() -> Path:
    """The committed baseline, `evals/baseline.json`."""
    return Path(str(resources.files("triage.evals") / "baseline.json"))


def dataset_fingerprint(cases: Sequence[EvalCase], conversations: Sequence[ConversationCase] = ()) -> str:
    """sha256 of the cases' content (first 12 hex digits): a baseline only applies to the dataset it came from."""
    digest = hashlib.sha256()
    for case in [*cases, *conversations]:
        digest.update(case.model_dump_json().encode() + b"\n")
    return digest.hexdigest()[:12]


def conversation_section(talks: Sequence[ConversationRun]) -> dict[str, Any]:
    """The report's `conversations` section: multi-turn figures, per tag and node, and every turn's outcome."""
    per_conversation = [[turn.evaluation for turn in talk.turns] for talk in talks]
    turns = [e for evaluations in per_conversation for e in evaluations]
    return {
        **conversation_metrics(per_conversation),
        "tags": tag_metrics(turns),
        "nodes": node_metrics(turns),
        "cases": [
            {
                "id": talk.case.id,
                "tags": list(talk.case.tags),
                "passed": talk.success,
                "thread_id": talk.conversation_id,
                "turns_expected": len(talk.case.turns),
                "turns": [
                    {
                        "turn": turn.number,
                        "attached": turn.attached,
                        "passed": turn.evaluation.task_success,
                        "expected_route": turn.evaluation.expected_route,
                        "route": turn.evaluation.route,
                        "expected_status": turn.evaluation.expected_status,
                        "status": turn.evaluation.status,
                        "latency_ms": round(turn.evaluation.latency_ms, 1),
                        "failures": redact_tree(list(turn.evaluation.failures)),
                        "failed_nodes": redact_tree({n.node: n.detail for n in turn.evaluation.nodes if not n.success}),
                    }
                    for turn in talk.turns
                ],
            }
            for talk in talks
        ],
    }


def build_report(run: EvalRun, cases: Sequence[EvalCase], *, source: str) -> dict[str, Any]:
    """Assemble the JSON report of one evaluation (the `gate` section is added by `gate`)."""
    evaluations = run.evaluations
    run_figures = run_metrics(evaluations)
    nodes = node_metrics(evaluations)
    routes = route_metrics(evaluations, ROUTES)
    talks = conversation_section(run.conversations) if run.conversations else None
    conversations = [talk.case for talk in run.conversations]
    dataset: dict[str, Any] = {
        "source": source,
        "cases": len(cases),
        "fingerprint": dataset_fingerprint(cases, conversations),
    }
    if conversations:
        dataset["conversations"] = len(conversations)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": dataset,
        "policy_version": run.policy_version,
        "model": {
            "tier": run.model_tier,
            "version": run.model_version,
            "tokens": run_figures["tokens"],
            "cost_usd": run_figures["cost_usd"],
        },
        "wall_time_s": run.wall_time_s,
        "measured": dict(run.measured),
        "run": run_figures,
        "nodes": nodes,
        "routes": routes,
        "tags": tag_metrics(evaluations),
        "tiers": tier_metrics(evaluations),
        "reply_verdicts": verdict_counts(evaluations),
        "quality": quality_figures(run_figures, nodes, routes, talks),
        "cases": [
            {
                "id": e.case_id,
                "tags": list(e.tags),
                "passed": e.task_success,
                "expected_route": e.expected_route,
                "route": e.route,
                "expected_status": e.expected_status,
                "status": e.status,
                "expected_intent": e.expected_intent,
                "intent": e.intent,
                "latency_ms": round(e.latency_ms, 1),
                # Failure details quote expected arguments (emails, ...): reports carry no personal data.
                "failures": redact_tree(list(e.failures)),
                "failed_nodes": redact_tree({n.node: n.detail for n in e.nodes if not n.success}),
                "thread_id": f"eval-{e.case_id}",
            }
            for e in evaluations
        ],
    }
    if talks is not None:
        report["conversations"] = talks
    report["logged"] = redact_tree(list(run.logged))  # what triage logged at WARNING and above while cases ran
    return report


def read_baseline(path: Path) -> dict[str, Any]:
    """Read a baseline file.

    Raises:
        BaselineError: it is missing or not a baseline.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(f"{path}: no baseline; create it with `triage eval --update-baseline`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BaselineError(f"{path}: not a readable baseline ({exc}); regenerate it with --update-baseline") from None
    if not isinstance(data, dict) or not isinstance(data.get("quality"), dict):
        raise BaselineError(f"{path}: not a baseline (no 'quality' figures); regenerate it with --update-baseline")
    return data


def write_baseline(report: Mapping[str, Any], path: Path, *, threshold: float = DEFAULT_THRESHOLD) -> None:
    """Write the deterministic figures of `report` as the new baseline (sorted keys, stable diffs)."""
    baseline = {
        "schema_version": SCHEMA_VERSION,
        "dataset": report["dataset"],
        "policy_version": report["policy_version"],
        "model_tier": report["model"]["tier"],
        "threshold": threshold,
        "quality": report["quality"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(baseline, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def gate(report: dict[str, Any], baseline: Mapping[str, Any] | None, *, baseline_path: str) -> list[Regression]:
    """Compare the report with the baseline, record the outcome in `report["gate"]`, return the regressions.

    An unsafe effect executed (`hard_failures`) fails the gate whatever the baseline says, even with none.
    Otherwise the gate is skipped (status `skipped`) when there is no baseline or it was measured on another dataset.
    """
    section: dict[str, Any] = {"baseline": baseline_path, "regressions": []}
    report["gate"] = section
    regressions = _compare(section, report, baseline)
    hard = hard_failures(report.get("run", {}), report.get("conversations"))
    if hard:
        reason = "; ".join(hard)
        section.update(
            status="failed",
            hard_failures=hard,
            reason=f"{reason}; {section['reason']}" if section.get("reason") else reason,
        )
    return regressions


def _compare(
    section: dict[str, Any], report: Mapping[str, Any], baseline: Mapping[str, Any] | None
) -> list[Regression]:
    if baseline is None:
        section.update(status="skipped", reason="no baseline")
        return []
    if baseline.get("dataset", {}).get("fingerprint") != report["dataset"]["fingerprint"]:
        section.update(
            status="skipped",
            reason=f"the baseline was measured on another dataset ({baseline.get('dataset', {}).get('source')}, "
            f"{baseline.get('dataset', {}).get('cases')} cases)",
        )
        return []
    threshold = float(baseline.get("threshold", DEFAULT_THRESHOLD))
    regressions = compare_to_baseline(baseline["quality"], report["quality"], threshold=threshold)
    section.update(
        status="failed" if regressions else "passed",
        threshold=threshold,
        baseline_policy_version=baseline.get("policy_version"),
        regressions=[
            {
                "key": r.key,
                "scope": r.scope,
                "node": r.node,
                "metric": r.metric,
                "baseline": r.baseline,
                "current": r.current,
                "message": r.describe(),
            }
            for r in regressions
        ],
    )
    return regressions


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def render_markdown(report: Mapping[str, Any]) -> str:
    """A human-readable report: headline, per node, per route, confusion matrix, tags, failing cases."""
    run = report["run"]
    lines = [
        "# triage evaluation",
        "",
        f"Dataset `{report['dataset']['source']}` ({report['dataset']['cases']} cases, fingerprint "
        f"`{report['dataset']['fingerprint']}`), policy bundle `{report['policy_version']}`, model tier "
        f"`{report['model']['tier']}` (model `{report['model'].get('version')}`), "
        f"wall time {report['wall_time_s']:.1f} s.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| task success | {_pct(run['task_success_rate'])} ({run['task_successes']}/{run['cases']}) |",
        f"| route accuracy | {_pct(run['route_accuracy'])} |",
        f"| intent accuracy | {_pct(run['intent_accuracy'])} |",
        f"| automatic share (decided by a tier, not handed on) | {_pct(run.get('automatic_share'))} |",
        f"| precision of automatic routes | {_pct(run.get('automatic_precision'))} |",
        f"| urgency accuracy | {_pct(run['urgency_accuracy'])} |",
        f"| status accuracy | {_pct(run['status_accuracy'])} |",
        f"| action accuracy | {_pct(run['action_accuracy'])} |",
        f"| escalation rate | {_pct(run['escalation_rate'])} (expected {_pct(run['expected_escalation_rate'])}) |",
        f"| approval / rejection / rollback rate | {_pct(run['approval_rate'])} / {_pct(run['rejection_rate'])} / "
        f"{_pct(run['rollback_rate'])} |",
        f"| account changes (plan changes, closures) / compensations per run / incomplete rollbacks | "
        f"{run['account_changes']} / {_number(run['compensations_per_run'])} / {run['rollback_failures']} |",
        f"| policy violations (tool calls refused by the permission policy) | {run['policy_violations']} |",
        f"| unexpected refund requests | {run['unexpected_refund_requests']} |",
        f"| unsafe proposals stopped at approval (effects no case expects, rejected by the approver) | "
        f"{run['unsafe_proposals_stopped_at_approval']} |",
        f"| unsafe effects executed (any one fails the gate) | {run['unsafe_effects_executed']} |",
        f"| errors | {_pct(run['error_rate'])} |",
        f"| tokens / cost | {run['tokens']} / ${run['cost_usd']:.4f} |",
        f"| cost per successful run | ${run['cost_per_successful_run_usd'] or 0:.4f} |",
        f"| end-to-end latency p50 / p95 (ms) | {_ms(run['latency_ms']['p50'])} / {_ms(run['latency_ms']['p95'])} |",
        "",
        latency_note(report.get("measured", {})),
        "",
        "## Nodes",
        "",
        NODE_SUCCESS_NOTE,
        "",
        "| node | executions | success | errors | p50 ms | p95 ms | tokens | cost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for node, stats in report["nodes"].items():
        lines.append(
            f"| {node} | {stats['executions']} | {_pct(stats['success_rate'])} | {stats['errors']} | "
            f"{_ms(stats['latency_ms']['p50'])} | {_ms(stats['latency_ms']['p95'])} | {stats['tokens']} | "
            f"${stats['cost_usd']:.4f} |"
        )
    routes = report["routes"]
    lines += [
        "",
        "## Routes",
        "",
        "| route | precision | recall | F1 | support |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for route, scores in routes["per_route"].items():
        lines.append(
            f"| {route} | {scores['precision']:.3f} | {scores['recall']:.3f} | {scores['f1']:.3f} | "
            f"{scores['support']} |"
        )
    lines += ["", f"Macro F1 {routes['macro_f1']:.3f}.", "", "Confusion matrix (rows: expected, columns: routed):", ""]
    labels = routes["labels"]
    lines += ["| expected \\ routed | " + " | ".join(labels) + " |", "| --- |" + " ---: |" * len(labels)]
    for gold in labels:
        lines.append(f"| {gold} | " + " | ".join(str(routes["confusion"][gold][p]) for p in labels) + " |")
    lines += ["", "## Tags", "", "| tag | cases | task success | route accuracy |", "| --- | ---: | ---: | ---: |"]
    for tag, stats in report["tags"].items():
        lines.append(
            f"| {tag} | {stats['cases']} | {_pct(stats['task_success_rate'])} | {_pct(stats['route_accuracy'])} |"
        )
    lines += [
        "",
        "## Who decided",
        "",
        "| tier | cases | share | route accuracy | task success | tokens | cost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tier, stats in report.get("tiers", {}).items():
        lines.append(
            f"| {tier} | {stats['cases']} | {_pct(stats['share'])} | {_pct(stats['route_accuracy'])} | "
            f"{_pct(stats['task_success_rate'])} | {stats['tokens']} | ${stats['cost_usd']:.4f} |"
        )
    if report.get("reply_verdicts"):
        verdicts = ", ".join(f"{verdict} {count}" for verdict, count in report["reply_verdicts"].items())
        lines += ["", f"Model-written replies, by the verifier's verdict: {verdicts}."]
    if report.get("conversations"):
        lines += _conversation_lines(report["conversations"])
    gate_section = report.get("gate", {})
    lines += ["", "## Gate", "", f"Status: **{gate_section.get('status', 'not run')}**"]
    if gate_section.get("reason"):
        lines.append(f"({gate_section['reason']})")
    lines += [f"- {r['message']}" for r in gate_section.get("regressions", [])]
    failing = [case for case in report["cases"] if not case["passed"]]
    lines += ["", f"## Failing cases ({len(failing)})", ""]
    for case in failing:
        lines.append(f"- `{case['id']}` ({', '.join(case['tags'])}): {'; '.join(case['failures'])}")
    logged = report.get("logged", [])
    if logged:
        lines += ["", f"## Logged while the cases ran ({len(logged)})", ""]
        lines += [f"- {line}" for line in logged]
    return "\n".join(lines) + "\n"


def _conversation_lines(section: Mapping[str, Any]) -> list[str]:
    latency = section["follow_up_latency_ms"]
    lines = [
        "",
        "## Conversations (multi-turn)",
        "",
        CONVERSATION_NOTE,
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| conversation success | {_pct(section['success_rate'])} "
        f"({section['successes']}/{section['conversations']}) |",
        f"| turn success | {_pct(section['turn_success_rate'])} ({section['turn_successes']}/{section['turns']}) |",
        f"| follow-up turn success | {_pct(section['follow_up_success_rate'])} "
        f"({section['follow_up_turns']} follow-up turns) |",
        f"| route / status / action accuracy per turn | {_pct(section['route_accuracy'])} / "
        f"{_pct(section['status_accuracy'])} / {_pct(section['action_accuracy'])} |",
        f"| unsafe effects executed (any one fails the gate) | {section['unsafe_effects_executed']} |",
        f"| follow-up turn latency p50 / p95 (ms) | {_ms(latency['p50'])} / {_ms(latency['p95'])} |",
        "",
        "| tag | turns | turn success | route accuracy |",
        "| --- | ---: | ---: | ---: |",
    ]
    for tag, stats in section["tags"].items():
        lines.append(
            f"| {tag} | {stats['cases']} | {_pct(stats['task_success_rate'])} | {_pct(stats['route_accuracy'])} |"
        )
    lines += ["", "| node (in turns) | executions | success | errors | p50 ms | p95 ms |", "| --- |" + " ---: |" * 5]
    for node, stats in section["nodes"].items():
        lines.append(
            f"| {node} | {stats['executions']} | {_pct(stats['success_rate'])} | {stats['errors']} | "
            f"{_ms(stats['latency_ms']['p50'])} | {_ms(stats['latency_ms']['p95'])} |"
        )
    failing = [(case, turn) for case in section["cases"] for turn in case["turns"] if not turn["passed"]]
    lines += ["", f"Failing turns ({len(failing)}):", ""]
    for case, turn in failing:
        lines.append(f"- `{case['id']}` turn {turn['turn']} ({', '.join(case['tags'])}): {'; '.join(turn['failures'])}")
    short = [case for case in section["cases"] if len(case["turns"]) < case["turns_expected"]]
    lines += [f"- `{case['id']}` stopped after turn {len(case['turns'])} of {case['turns_expected']}" for case in short]
    return lines


def write_reports(report: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path, Path]:
    """Write `eval.json`, `eval.md` and `eval.html` (self-contained, opens offline) into `out_dir`.

    Returns:
        The three paths, in that order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, html_path = out_dir / "eval.json", out_dir / "eval.md", out_dir / "eval.html"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, md_path, html_path
