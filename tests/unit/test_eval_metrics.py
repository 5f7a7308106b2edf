from __future__ import annotations

import json
from pathlib import Path

import pytest

from triage.evals.dataset import DatasetError, EvalCase, ExpectedAction, default_dataset, load_cases, load_labelled
from triage.evals.evaluators import evaluate_case, match_actions
from triage.evals.metrics import (
    CaseEvaluation,
    NodeResult,
    compare_to_baseline,
    confusion_matrix,
    node_metrics,
    per_label_scores,
    percentile,
    quality_figures,
    route_metrics,
    run_metrics,
)
from triage.evals.report import gate
from triage.schemas import Action, RunResult, TimelineEntry
from triage.taxonomy import ROUTES


def _evaluation(case_id: str, expected: str, routed: str | None, *, ok: bool, **kwargs: object) -> CaseEvaluation:
    return CaseEvaluation(
        case_id=case_id, tags=(), expected_route=expected, route=routed, task_success=ok, latency_ms=10.0, **kwargs
    )  # type: ignore[arg-type]


# -- percentile ----------------------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [15, 20, 35, 40, 50]
    # rank = ceil(q/100 * n): p30 -> rank 2, p40 -> rank 2, p50 -> rank 3, p95 -> rank 5, p100 -> rank 5.
    assert percentile(values, 30) == 20
    assert percentile(values, 40) == 20
    assert percentile(values, 50) == 35
    assert percentile(values, 95) == 50
    assert percentile(values, 100) == 50
    assert percentile(values, 0) == 15
    assert percentile(reversed(values), 50) == 35, "input order does not matter"


def test_percentile_of_ten_values_and_edge_cases() -> None:
    values = list(range(1, 11))
    assert percentile(values, 50) == 5
    assert percentile(values, 95) == 10
    assert percentile(values, 90) == 9
    assert percentile([7.5], 95) == 7.5
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile(values, 101)


# -- confusion matrix, precision/recall/F1 --------------------------------------------------------------------


def test_confusion_matrix_rows_are_gold_columns_are_predicted() -> None:
    gold = ["billing", "billing", "account", "escalation"]
    pred = ["billing", "escalation", "account", "escalation"]
    matrix = confusion_matrix(gold, pred, ["billing", "account", "escalation"])
    assert matrix == {
        "billing": {"billing": 1, "account": 0, "escalation": 1},
        "account": {"billing": 0, "account": 1, "escalation": 0},
        "escalation": {"billing": 0, "account": 0, "escalation": 1},
    }


def test_per_route_precision_recall_f1_by_hand() -> None:
    gold = ["billing", "billing", "billing", "general", "general", "escalation"]
    pred = ["billing", "billing", "general", "general", "escalation", "escalation"]
    scores = per_label_scores(gold, pred, ["billing", "general", "escalation"])
    # billing: tp 2, predicted 2, support 3 -> P 1, R 2/3, F1 0.8
    assert scores["billing"] == pytest.approx((1.0, 2 / 3, 0.8, 3))
    # general: tp 1, predicted 2, support 2 -> P 0.5, R 0.5, F1 0.5
    assert scores["general"] == pytest.approx((0.5, 0.5, 0.5, 2))
    # escalation: tp 1, predicted 2, support 1 -> P 0.5, R 1, F1 2/3
    assert scores["escalation"] == pytest.approx((0.5, 1.0, 2 / 3, 1))


def test_route_metrics_count_a_run_without_a_route() -> None:
    evaluations = [
        _evaluation("a", "billing", "billing", ok=True),
        _evaluation("b", "billing", None, ok=False),
        _evaluation("c", "account", "billing", ok=False),
    ]
    routes = route_metrics(evaluations, ROUTES)
    assert routes["labels"][-1] == "(none)"
    assert routes["confusion"]["billing"] == {**dict.fromkeys(routes["labels"], 0), "billing": 1, "(none)": 1}
    assert routes["per_route"]["billing"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert routes["per_route"]["account"]["recall"] == 0.0


# -- per node and per run ----------------------------------------------------------------------------------------


def test_node_metrics_success_rate_and_latency() -> None:
    evaluations = [
        _evaluation("a", "billing", "billing", ok=True, nodes=(NodeResult("classify", True, duration_ms=10),)),
        _evaluation("b", "billing", "billing", ok=True, nodes=(NodeResult("classify", True, duration_ms=30),)),
        _evaluation(
            "c",
            "billing",
            "general",
            ok=False,
            nodes=(NodeResult("classify", False, duration_ms=20), NodeResult("general", False, error=True)),
        ),
    ]
    nodes = node_metrics(evaluations)
    assert nodes["classify"]["executions"] == 3
    assert nodes["classify"]["success_rate"] == pytest.approx(0.6667)
    assert nodes["classify"]["latency_ms"] == {"p50": 20, "p95": 30}
    assert (nodes["general"]["errors"], nodes["general"]["success_rate"]) == (1, 0.0)
    assert nodes["classify"]["tokens"] == 0 and nodes["classify"]["cost_usd"] == 0.0


def test_run_metrics_task_success_escalation_and_cost() -> None:
    evaluations = [
        _evaluation("a", "billing", "billing", ok=True, status="completed", expected_status="completed"),
        _evaluation("b", "escalation", "escalation", ok=True, status="escalated", expected_status="escalated"),
        _evaluation(
            "c",
            "billing",
            "escalation",
            ok=False,
            status="escalated",
            expected_status="completed",
            unexpected_refunds=1,
        ),
        _evaluation("d", "general", "general", ok=False, intent="other", expected_intent="feedback"),
    ]
    run = run_metrics(evaluations)
    assert run["task_success_rate"] == 0.5
    assert run["route_accuracy"] == 0.75
    assert run["status_accuracy"] == pytest.approx(0.6667), "only cases that expect a status count"
    assert run["intent_accuracy"] == 0.0
    assert run["escalation_rate"] == 0.5
    assert run["unexpected_refund_requests"] == 1
    assert run["policy_violations"] == 0
    assert (run["tokens"], run["cost_usd"], run["cost_per_successful_run_usd"]) == (0, 0.0, 0.0)
    assert run["approval_rate"] == 0.0


# -- evaluators ----------------------------------------------------------------------------------------------------


def _case(actions: list[dict[str, object]], route: str = "billing", status: str = "completed") -> EvalCase:
    return EvalCase.model_validate(
        {
            "id": "c-1",
            "ticket": {"customer_id": "cus_small_dup", "subject": "s", "body": "b"},
            "expected": {"route": route, "status": status, "actions": actions},
        }
    )


def _action(kind: str, node: str, amount: int | None = None, **details: object) -> Action:
    return Action(kind=kind, tool="t", receipt_id="r", node=node, amount_cents=amount, details=details)


def _entry(node: str, outcome: str = "ok", namespace: str = "") -> TimelineEntry:
    return TimelineEntry(
        node=node,
        namespace=namespace,
        checkpoint_id="x",
        started_at="2026-09-01T00:00:00+00:00",  # type: ignore[arg-type]
        duration_ms=1.0,
        outcome=outcome,
    )


def test_match_actions_checks_key_arguments_only() -> None:
    expected = [ExpectedAction(kind="refund_request", amount_cents=1900), ExpectedAction(kind="message")]
    actual = [_action("refund_request", "billing", 1900, payment_id="p"), _action("message", "send_reply")]
    assert match_actions(expected, actual) == ([], [])
    missing, unexpected = match_actions(expected, [_action("refund_request", "billing", 500000)])
    assert missing == ["refund_request(amount_cents=1900)", "message()"]
    assert unexpected == ["refund_request(amount_cents=500000)"]


def test_specialist_evaluator_and_task_success() -> None:
    case = _case([{"kind": "refund_request", "amount_cents": 1900}, {"kind": "message"}])
    result = RunResult(
        thread_id="t",
        status="completed",
        route="billing",
        intent="duplicate_charge",
        actions=[_action("refund_request", "billing", 1900), _action("message", "send_reply")],
    )
    timeline = [_entry("classify"), _entry("route"), _entry("billing"), _entry("act", namespace="billing:1")]
    evaluation = evaluate_case(case, result, timeline, latency_ms=5.0)
    assert evaluation.task_success
    assert {n.node: n.success for n in evaluation.nodes} == {
        "classify": True,
        "route": True,
        "billing": True,
        "billing:act": True,
    }

    wrong = result.model_copy(update={"actions": [_action("message", "send_reply")]})
    evaluation = evaluate_case(case, wrong, [*timeline, _entry("send_reply")], latency_ms=5.0)
    assert not evaluation.task_success
    billing = next(n for n in evaluation.nodes if n.node == "billing")
    assert (billing.success, billing.detail) == (False, "missing refund_request(amount_cents=1900)")
    assert next(n for n in evaluation.nodes if n.node == "send_reply").success


def test_misrouted_run_blames_classify_and_route_not_the_specialist() -> None:
    case = _case([{"kind": "ticket", "queue": "human"}, {"kind": "message"}], route="escalation", status="escalated")
    result = RunResult(
        thread_id="t",
        status="completed",
        route="billing",
        intent="refund_request",
        actions=[_action("refund_request", "billing", 500000), _action("message", "send_reply")],
    )
    evaluation = evaluate_case(case, result, [_entry("classify"), _entry("route"), _entry("billing")], latency_ms=1)
    nodes = {n.node: n.success for n in evaluation.nodes}
    assert nodes == {"classify": False, "route": False, "billing": True}
    assert evaluation.unexpected_refunds == 1
    assert "unexpected action refund_request(amount_cents=500000)" in evaluation.failures


def test_a_node_error_fails_that_node() -> None:
    case = _case([{"kind": "message"}])
    result = RunResult(thread_id="t", status="failed", status_reason="RuntimeError: boom", route="billing")
    evaluation = evaluate_case(
        case, result, [_entry("act", "error: RuntimeError('boom')", namespace="billing:1")], latency_ms=1
    )
    [node] = evaluation.nodes
    assert (node.node, node.success, node.error) == ("billing:act", False, True)
    assert not evaluation.task_success


# -- the gate ------------------------------------------------------------------------------------------------------


def test_gate_names_node_and_metric_beyond_threshold() -> None:
    baseline = {"node.billing.success_rate": 0.95, "run.task_success_rate": 0.8, "run.error_rate": 0.0}
    current = {"node.billing.success_rate": 0.90, "run.task_success_rate": 0.79, "run.error_rate": 0.01}
    [regression] = compare_to_baseline(baseline, current, threshold=0.02)
    assert (regression.node, regression.metric) == ("billing", "success_rate")
    assert regression.describe() == "node billing: success_rate regressed from 0.95 to 0.9 (allowed change 0.02)"


def test_gate_lower_is_better_metrics_and_missing_nodes() -> None:
    baseline = {"run.error_rate": 0.0, "node.technical:act.success_rate": 1.0, "route.general.f1": 0.5}
    current = {"run.error_rate": 0.5, "route.general.f1": 0.9}
    regressions = compare_to_baseline(baseline, current, threshold=0.02)
    assert [r.key for r in regressions] == ["node.technical:act.success_rate", "run.error_rate"]
    assert "node technical:act: success_rate missing" in regressions[0].describe()
    assert regressions[1].describe().startswith("run: error_rate regressed from 0 to 0.5")
    assert compare_to_baseline(baseline, {**baseline, "node.new.success_rate": 0.0}, threshold=0.02) == []


def test_quality_figures_and_report_gate_section() -> None:
    run = {"task_success_rate": 0.5, "route_accuracy": 1.0, "intent_accuracy": None, "error_rate": 0.0}
    nodes = {"classify": {"success_rate": 1.0}, "billing": {"success_rate": 0.5}}
    routes = {"per_route": {"billing": {"f1": 1.0, "support": 2}, "general": {"f1": 0.0, "support": 0}}}
    figures = quality_figures(run, nodes, routes)
    assert figures == {
        "run.task_success_rate": 0.5,
        "run.route_accuracy": 1.0,
        "run.error_rate": 0.0,
        "node.classify.success_rate": 1.0,
        "node.billing.success_rate": 0.5,
        "route.billing.f1": 1.0,
    }
    report: dict[str, object] = {"dataset": {"fingerprint": "abc"}, "quality": figures}
    worse = {**figures, "node.billing.success_rate": 0.0}
    baseline = {"dataset": {"fingerprint": "abc"}, "threshold": 0.02, "quality": {**figures}}
    assert gate(report, baseline, baseline_path="b.json") == []
    assert report["gate"]["status"] == "passed"  # type: ignore[index]
    report["quality"] = worse
    [regression] = gate(report, baseline, baseline_path="b.json")
    assert report["gate"]["regressions"][0]["node"] == "billing"  # type: ignore[index]
    assert regression.metric == "success_rate"
    assert gate(report, {**baseline, "dataset": {"fingerprint": "other"}}, baseline_path="b.json") == []
    assert report["gate"]["status"] == "skipped"  # type: ignore[index]


# -- datasets ---------------------------------------------------------------------------------------------------------


def test_packaged_dataset_is_valid_and_covers_every_route_and_hard_slice() -> None:
    cases = load_cases()
    assert len(cases) >= 300
    assert {c.expected.route for c in cases} == set(ROUTES)
    tags = {tag for c in cases for tag in c.tags}
    assert {"multi_intent", "prompt_injection", "angry", "vague", "pii", "short", "long"} <= tags
    assert all(c.expected.status is not None and c.expected.actions is not None for c in cases)
    injections = [c for c in cases if "prompt_injection" in c.tags]
    assert injections and all(not any(a.kind == "refund_request" for a in c.expected.actions or []) for c in injections)
    assert default_dataset().name == "support.jsonl"


def test_a_bad_case_is_reported_with_file_and_line(tmp_path: Path) -> None:
    good = {"id": "a", "ticket": {"subject": "s", "body": "b"}, "expected": {"route": "general"}}
    path = tmp_path / "cases.jsonl"
    bad = {
        **good,
        "id": "b",
        "expected": {"route": "billing", "actions": [{"kind": "wire_transfer", "amount_cents": 1}]},
    }
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DatasetError, match=r"cases\.jsonl:3: expected\.actions\.0\.kind"):
        load_cases(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(DatasetError, match=r":2: duplicate id 'a' \(first on line 1\)"):
        load_cases(path)
    path.write_text("{not json\n")
    with pytest.raises(DatasetError, match=r":1: not valid JSON"):
        load_cases(path)
    wrong_intent = {**good, "expected": {"route": "general", "intent": "duplicate_charge"}}
    path.write_text(json.dumps(wrong_intent) + "\n")
    with pytest.raises(DatasetError, match="belongs to route 'billing'"):
        load_cases(path)


def test_labelled_csv_maps_columns_and_names_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "ext.csv"
    path.write_text("utterance,label\nwhere is my refund,billing\nhello,general\n")
    cases = load_labelled(path, text_col="utterance", route_col="label")
    assert [(c.ticket.body, c.expected.route, c.expected.status) for c in cases] == [
        ("where is my refund", "billing", None),
        ("hello", "general", None),
    ]
    with pytest.raises(DatasetError, match=r"ext\.csv:2: no column 'text'.*--text-col"):
        load_labelled(path)
    path.write_text("text,route\nhi,sales\n")
    with pytest.raises(DatasetError, match=r"ext\.csv:2: route 'sales' is not one of"):
        load_labelled(path)


def test_labelled_file_with_intents_checks_them_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    path = tmp_path / "team.csv"
    path.write_text("text,route,intent\nwhere is my refund,billing,refund_request\nhello,general,\n")
    cases = load_labelled(path)
    assert [(c.expected.route, c.expected.intent) for c in cases] == [("billing", "refund_request"), ("general", None)]
    path.write_text("msg,queue,topic\nwhere is my refund,billing,refund_request\n")
    cases = load_labelled(path, text_col="msg", route_col="queue", intent_col="topic")
    assert cases[0].expected.intent == "refund_request"
    with pytest.raises(DatasetError, match=r"no column 'intent'.*--intent-col"):
        load_labelled(path, text_col="msg", route_col="queue", intent_col="intent")
    path.write_text("text,route,intent\nwhere is my refund,general,refund_request\n")
    with pytest.raises(DatasetError, match=r"team\.csv:2: .*belongs to route 'billing'"):
        load_labelled(path)


def test_automatic_share_and_precision_count_what_no_person_was_handed() -> None:
    evaluations = [
        _evaluation("a", "billing", "billing", ok=True, extra={"handed_on": False}),
        _evaluation("b", "technical", "billing", ok=False, extra={"handed_on": False}),
        _evaluation("c", "general", "general", ok=True, extra={"handed_on": False}),
        _evaluation("d", "account", "escalation", ok=False, extra={"handed_on": True}),
        _evaluation("e", "account", None, ok=False),  # the run raised: nobody decided it automatically
    ]
    run = run_metrics(evaluations)
    assert run["automatic_share"] == 0.6
    assert run["automatic_precision"] == pytest.approx(0.6667)
    assert run["route_accuracy"] == 0.4
    assert run_metrics([evaluations[3]])["automatic_precision"] is None


def test_a_run_no_tier_was_sure_of_is_handed_on() -> None:
    from triage.evals.evaluators import handed_on

    def result(**fields: object) -> RunResult:
        return RunResult.model_validate({"thread_id": "t", "status": "completed", **fields})

    assert handed_on(result(decided_by="person", route="escalation"))
    assert handed_on(result(decided_by=None))
    assert handed_on(result(decided_by="local", route="escalation", route_reason="budget: step budget reached"))
    assert not handed_on(result(decided_by="local", route="billing", route_reason="classified as billing (0.93)"))
    assert not handed_on(result(decided_by="cheap", route="escalation", route_reason="escalation signal: legal"))


# -- the oracle approver, unsafe effects, the approve node -------------------------------------------------------


def _pending(action: str, **args: object) -> dict[str, object]:
    return {"approval_id": "apr_1", "action": action, "args": args, "tier": "single", "approvals_received": []}


def test_oracle_approves_only_what_the_case_expects() -> None:
    from triage.evals.runner import oracle_decision

    refund = _case([{"kind": "refund_request", "amount_cents": 24000}, {"kind": "refund", "amount_cents": 24000}])
    assert oracle_decision(refund, _pending("refund", amount_cents=24000))[0] == "approve"
    decision, reason = oracle_decision(refund, _pending("refund", amount_cents=120000))
    assert decision == "reject" and "refund(amount_cents=120000)" in reason
    bug = _case([{"kind": "ticket", "queue": "engineering"}, {"kind": "message"}], route="technical")
    assert oracle_decision(bug, _pending("refund", amount_cents=24000))[0] == "reject"
    assert oracle_decision(bug, _pending("account_deletion", customer_id="c"))[0] == "reject"
    assert oracle_decision(bug, _pending("reply"))[0] == "approve", "the case expects a message"
    silent = _case([{"kind": "ticket", "queue": "human"}], route="escalation", status="escalated")
    assert oracle_decision(silent, _pending("reply"))[0] == "reject"


def test_an_unexpected_executed_effect_fails_the_task_and_the_gate_whatever_the_baseline() -> None:
    case = _case([{"kind": "ticket", "queue": "engineering"}, {"kind": "message"}], route="technical")
    result = RunResult(
        thread_id="t",
        status="completed",
        route="technical",
        actions=[
            _action("ticket", "technical", queue="engineering"),
            _action("refund", "execute", 24000),
            _action("message", "send_reply"),
        ],
    )
    evaluation = evaluate_case(case, result, [_entry("execute")], latency_ms=1, unsafe_stopped=1)
    assert (evaluation.unsafe_executed, evaluation.unsafe_stopped) == (1, 1)
    assert not evaluation.task_success
    assert "unsafe effect executed: refund(amount_cents=24000)" in evaluation.failures
    run = run_metrics([evaluation])
    assert (run["unsafe_effects_executed"], run["unsafe_proposals_stopped_at_approval"]) == (1, 1)

    figures = {"run.task_success_rate": 0.0}
    report: dict[str, object] = {"run": run, "quality": figures, "dataset": {"fingerprint": "f"}}
    baseline = {"dataset": {"fingerprint": "f"}, "quality": figures}
    assert gate(report, baseline, baseline_path="b.json") == []  # no figure regressed ...
    assert report["gate"]["status"] == "failed"  # type: ignore[index]  # ... and still it fails
    assert "1 unsafe effect(s) executed" in report["gate"]["reason"]  # type: ignore[index]
    gate(report, None, baseline_path="none.json")
    assert report["gate"]["status"] == "failed"  # type: ignore[index]


def test_approve_is_judged_once_per_run_on_the_tier_it_asked_for() -> None:
    case = _case(
        [{"kind": "refund_request", "amount_cents": 24000}, {"kind": "refund", "amount_cents": 24000}],
    ).model_copy(update={"expected": _case([]).expected.model_copy(update={"approval_tier": "single"})})
    result = RunResult(thread_id="t", status="completed", route="billing")
    passes = [_entry("approve"), _entry("approve"), _entry("execute")]
    evaluation = evaluate_case(case, result, passes, latency_ms=1, approval_tiers=("single",))
    [approve] = [n for n in evaluation.nodes if n.node == "approve"]
    assert approve.success and approve.duration_ms == 2.0
    evaluation = evaluate_case(case, result, passes, latency_ms=1, approval_tiers=())
    [approve] = [n for n in evaluation.nodes if n.node == "approve"]
    assert (approve.success, approve.detail) == (False, "approval tier none, expected single")
