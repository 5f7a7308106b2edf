"""Record a finished evaluation as a LangSmith experiment, with the same per-case evaluators as the report.

Nothing here runs unless a LangSmith API key is configured (`LANGSMITH_API_KEY`, or the older `LANGCHAIN_API_KEY`;
`LANGSMITH_ENDPOINT` picks the server): without one, `langsmith_configured()` is false and no client is built, so no
connection is attempted. The cases are not run again: the experiment's target replays each case's recorded result,
and its evaluators re-apply `evaluate_case` to that result, so LangSmith shows exactly the report's figures.

Examples live in a dataset named after the dataset file and its fingerprint (`triage-support-d0cd41cf9710`),
created on first use. Ticket text, expected arguments and outputs are redacted before they leave the process.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from triage.evals.evaluators import evaluate_case
from triage.evals.metrics import CaseEvaluation, route_metrics
from triage.evals.runner import CaseRun, EvalRun
from triage.policies.pii import redact_tree
from triage.taxonomy import ROUTES

if TYPE_CHECKING:
    from langsmith import Client
    from langsmith.evaluation.evaluator import EvaluationResults
    from langsmith.schemas import Example, Run

    SummaryEvaluator = Callable[[Sequence[Run], Sequence[Example]], EvaluationResults]

__all__ = [
    "ExperimentRecord",
    "case_scores",
    "dataset_name",
    "langsmith_configured",
    "langsmith_evaluators",
    "record_experiment",
    "to_examples",
]

_EXAMPLE_NAMESPACE = uuid.UUID("5d0c2a4e-7b1f-4c53-9a55-6f1b0e3c8d21")


@dataclass(frozen=True)
class ExperimentRecord:
    """Where the run was recorded."""

    experiment: str
    """The experiment's name (`triage-local-1a2b3c4d`)."""
    dataset: str
    """The LangSmith dataset it ran on."""
    results: int
    """Cases evaluated."""


def langsmith_configured() -> bool:
    """Whether a LangSmith API key is set, read the way the SDK reads it (its env cache included). No I/O."""
    from langsmith import utils

    return bool(utils.get_env_var("API_KEY", default=None))


def dataset_name(source: str, fingerprint: str) -> str:
    """`triage-<file stem>-<fingerprint>`: one LangSmith dataset per dataset content."""
    return f"triage-{PurePath(source).stem}-{fingerprint}"


def to_examples(runs: Sequence[CaseRun], fingerprint: str) -> list[dict[str, Any]]:
    """One LangSmith example per case: redacted ticket as inputs, redacted expectations as reference outputs.

    Example ids are derived from the dataset fingerprint and the case id, so uploading twice does not duplicate.
    """
    return [
        {
            "id": uuid.uuid5(_EXAMPLE_NAMESPACE, f"{fingerprint}/{run.case.id}"),
            "inputs": {"case_id": run.case.id, "ticket": redact_tree(run.case.ticket.model_dump(mode="json"))},
            "reference_outputs": redact_tree(run.case.expected.model_dump(mode="json", exclude_none=True)),
            "metadata": {"case_id": run.case.id, "tags": list(run.case.tags)},
        }
        for run in runs
    ]


def _outputs(run: CaseRun) -> dict[str, Any]:
    """What the experiment shows as the target's output: the run's outcome without the reply text."""
    result = run.result
    if result is None:
        return {"error": run.evaluation.error}
    outcome: dict[str, Any] = redact_tree(
        {
            "thread_id": result.thread_id,
            "status": result.status,
            "route": result.route,
            "intent": result.intent,
            "urgency": result.urgency,
            "confidence": result.confidence,
            "actions": [{"kind": a.kind, "node": a.node, "amount_cents": a.amount_cents} for a in result.actions],
            "policy_violations": len(result.violations),
        }
    )
    return outcome


def case_scores(evaluation: CaseEvaluation) -> list[dict[str, Any]]:
    """The LangSmith feedback for one case: task-level checks, then one score per node (share of its runs passed).

    Checks a case does not state an expectation for are left out, as in the report's accuracies.
    """
    scores: list[dict[str, Any]] = [
        {"key": "task_success", "score": int(evaluation.task_success), "comment": "; ".join(evaluation.failures)},
        {"key": "route_correct", "score": int(evaluation.route == evaluation.expected_route)},
    ]
    for key, want, got in (
        ("intent_correct", evaluation.expected_intent, evaluation.intent),
        ("urgency_correct", evaluation.expected_urgency, evaluation.urgency),
        ("status_correct", evaluation.expected_status, evaluation.status),
    ):
        if want is not None:
            scores.append({"key": key, "score": int(want == got)})
    if evaluation.actions_ok is not None:
        scores.append({"key": "actions_correct", "score": int(evaluation.actions_ok)})
    scores += [
        {"key": "policy_violations", "score": evaluation.policy_violations},
        {"key": "unexpected_refund_requests", "score": evaluation.unexpected_refunds},
        {"key": "unsafe_effects_executed", "score": evaluation.unsafe_executed},
        {"key": "unsafe_proposals_stopped_at_approval", "score": evaluation.unsafe_stopped},
        {"key": "latency_ms", "score": round(evaluation.latency_ms, 1)},
    ]
    by_node: dict[str, list[bool]] = {}
    details: dict[str, list[str]] = {}
    for node in evaluation.nodes:
        by_node.setdefault(node.node, []).append(node.success)
        if node.detail:
            details.setdefault(node.node, []).append(node.detail)
    for name, results in sorted(by_node.items()):
        scores.append(
            {
                "key": f"node.{name}.success",
                "score": round(sum(results) / len(results), 4),
                "comment": "; ".join(details.get(name, [])),
            }
        )
    return redact_tree(scores)  # type: ignore[no-any-return]


def _reevaluate(run: CaseRun) -> CaseEvaluation:
    return evaluate_case(
        run.case,
        run.result,
        run.timeline,
        latency_ms=run.evaluation.latency_ms,
        error=run.evaluation.error,
        unsafe_stopped=run.evaluation.unsafe_stopped,
    )


def langsmith_evaluators(
    runs: Sequence[CaseRun],
) -> tuple[list[Callable[[Run, Example], EvaluationResults]], list[SummaryEvaluator]]:
    """Row evaluators and summary evaluators for `langsmith.evaluate`, wrapping the harness's own evaluators.

    The row evaluator finds the case by `example.inputs["case_id"]` and scores it with `evaluate_case`; the
    summary evaluator reports the route macro F1 and the task success rate over the experiment.
    """
    from langsmith.evaluation.evaluator import EvaluationResult

    by_id = {run.case.id: run for run in runs}

    def case_of(example: Example) -> CaseRun:
        return by_id[(example.inputs or {})["case_id"]]

    def triage_case(run: Run, example: Example) -> EvaluationResults:
        return {"results": [EvaluationResult(**score) for score in case_scores(_reevaluate(case_of(example)))]}

    def triage_summary(runs: Sequence[Run], examples: Sequence[Example]) -> EvaluationResults:
        evaluations = [_reevaluate(case_of(example)) for example in examples]
        passed = sum(e.task_success for e in evaluations)
        return {
            "results": [
                EvaluationResult(key="route_macro_f1", score=route_metrics(evaluations, ROUTES)["macro_f1"]),
                EvaluationResult(
                    key="task_success_rate", score=round(passed / len(evaluations), 4) if evaluations else 0.0
                ),
            ]
        }

    return [triage_case], [triage_summary]


def _examples(client: Client, name: str, wanted: list[dict[str, Any]], description: str) -> list[Example]:
    """The dataset's examples for these cases, creating the dataset and any missing example first."""
    if client.has_dataset(dataset_name=name):
        dataset = client.read_dataset(dataset_name=name)
    else:
        dataset = client.create_dataset(name, description=description)
    present = {example.id for example in client.list_examples(dataset_id=dataset.id)}
    missing = [example for example in wanted if example["id"] not in present]
    if missing:
        client.create_examples(dataset_id=dataset.id, examples=missing)
    ids = {example["id"] for example in wanted}
    return [example for example in client.list_examples(dataset_id=dataset.id) if example.id in ids]


def record_experiment(
    run: EvalRun,
    report: Mapping[str, Any],
    *,
    client: Client | None = None,
    upload_results: bool = True,
) -> ExperimentRecord:
    """Record `run` as a LangSmith experiment on the dataset of its cases (created if needed).

    The SDK's progress messages go to stderr, so `triage eval --json` keeps a clean stdout.

    Args:
        run: The finished evaluation.
        report: Its report (for the dataset fingerprint, policy version, model tier and gate status).
        client: The LangSmith client; by default one built from the environment, redacting traced inputs/outputs.
        upload_results: False runs the same examples and evaluators locally without any dataset or experiment
            requests (the SDK's offline mode; with a client pointing nowhere, nothing leaves the process).

    Raises:
        langsmith.utils.LangSmithError: the service refused a request.
    """
    import langsmith
    from langsmith.schemas import Example

    dataset, fingerprint = report["dataset"], report["dataset"]["fingerprint"]
    client = client or langsmith.Client(hide_inputs=redact_tree, hide_outputs=redact_tree)
    name = dataset_name(dataset["source"], fingerprint)
    wanted = to_examples(run.runs, fingerprint)
    outputs = {case_run.case.id: _outputs(case_run) for case_run in run.runs}
    evaluators, summaries = langsmith_evaluators(run.runs)

    def replay(inputs: dict[str, Any]) -> dict[str, Any]:
        return outputs[inputs["case_id"]]

    with contextlib.redirect_stdout(sys.stderr):
        if upload_results:
            examples = _examples(client, name, wanted, f"triage evaluation cases from {dataset['source']}")
        else:
            offline = uuid.uuid5(_EXAMPLE_NAMESPACE, name)
            examples = [
                Example(
                    id=e["id"],
                    dataset_id=offline,
                    inputs=e["inputs"],
                    outputs=e["reference_outputs"],
                    metadata=e["metadata"],
                )
                for e in wanted
            ]
        results = langsmith.evaluate(
            replay,
            data=examples,
            evaluators=evaluators,
            summary_evaluators=summaries,
            experiment_prefix=f"triage-{run.model_tier}",
            description=f"triage eval of {dataset['source']} ({dataset['cases']} cases)",
            metadata={
                "policy_version": report["policy_version"],
                "model_tier": report["model"]["tier"],
                "dataset_fingerprint": fingerprint,
                "gate": report.get("gate", {}).get("status"),
            },
            max_concurrency=4,
            client=client,
            upload_results=upload_results,
        )
        rows = list(results)
        if upload_results:
            client.flush()
    return ExperimentRecord(experiment=results.experiment_name, dataset=name, results=len(rows))
