"""Per-node evaluators: plain functions that judge one node's work in one run against the case's expectations.

- `classify` got the route right (its predicted route, or, for an expected escalation, the signals/mood/confidence
  it reported made the router escalate).
- `route` chose the expected route.
- a specialist (`billing`, `technical`, ...) on the expected route performed exactly the expected actions with the
  expected key arguments (the reply `message` belongs to `send_reply`); on a wrong route it is only checked for
  errors, since the mistake was the router's.
- `approve` asked for exactly the approval tier the case expects (`none`, `single` or `dual`) and did not raise.
  It is judged once per run that reached it, however often it paused and resumed (the timeline shows one entry per
  pass; a resume is not a retry), and its latency is the sum of its passes (waiting for a person is not included).
- `send_reply` sent a message exactly when one is expected; `finish` set the expected status.
- the `account_change` steps carried out the plan change or closure the case expects and ended as it expects
  (completed, rolled back with the expected steps undone, or with a failed compensation); they are judged there,
  not among the case's `actions`.
- every other node (and every step inside a specialist) succeeds when it did not raise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from triage.evals.dataset import EvalCase, ExpectedAction, ExpectedChange
from triage.evals.metrics import CaseEvaluation, NodeResult
from triage.schemas import Action, RunResult, TimelineEntry
from triage.taxonomy import ROUTE_OF_INTENT, ROUTES

__all__ = [
    "CONVERSATION_NOTE",
    "EFFECT_KINDS",
    "NODE_SUCCESS_NOTE",
    "change_failures",
    "describe_action",
    "evaluate_case",
    "match_actions",
    "node_key",
    "unexpected_effects",
]


def handed_on(result: RunResult) -> bool:
    """Whether the run was handed to a person because no tier was sure of it (or the budget stopped model use).

    Everything else was routed automatically, including a deliberate escalation (a legal threat, an angry customer).
    """
    return result.decided_by in (None, "person") or (result.route_reason or "").startswith("budget:")


def node_key(entry: TimelineEntry) -> str:
    """`classify` for a coordinator node, `billing:act` for a step inside the billing subgraph.

    A step in the branch of one ask of several is keyed by the specialist that ran it, `ask:billing:act`, so each
    specialist's figures in ask branches stay apart.
    """
    if not entry.namespace:
        return entry.node
    parent = entry.namespace.split(":")[0]
    return f"{parent}:{entry.branch}:{entry.node}" if entry.branch else f"{parent}:{entry.node}"


def _arg(action: Action, name: str) -> object:
    return action.amount_cents if name == "amount_cents" else action.details.get(name)


def _matches(expected: ExpectedAction, action: Action) -> bool:
    return expected.kind == action.kind and all(_arg(action, k) == v for k, v in expected.key_args().items())


def describe_action(kind: str, args: dict[str, object]) -> str:
    """`refund_request(amount_cents=1900)`."""
    return f"{kind}({', '.join(f'{k}={v}' for k, v in args.items())})"


def match_actions(expected: Sequence[ExpectedAction], actual: Sequence[Action]) -> tuple[list[str], list[str]]:
    """Pair each expected action with a distinct actual one.

    Returns:
        `(missing, unexpected)`: the expected actions no actual action matched, and the actual actions left over,
        both described for a report.
    """
    unused = list(actual)
    missing: list[str] = []
    for want in expected:
        found = next((a for a in unused if _matches(want, a)), None)
        if found is None:
            missing.append(describe_action(want.kind, want.key_args()))
        else:
            unused.remove(found)
    unexpected = [
        describe_action(a.kind, {"amount_cents": a.amount_cents} if a.amount_cents else _key_details(a)) for a in unused
    ]
    return missing, unexpected


def _key_details(action: Action) -> dict[str, object]:
    keys = ("queue", "priority", "request", "new_email", "to_plan")
    return {k: action.details[k] for k in keys if k in action.details}


NODE_SUCCESS_NOTE = (
    "A node succeeds when it did not raise and its evaluator passed: `classify` and `route` got the route, a "
    "specialist performed the expected actions, `execute` ran exactly the expected effects, `send_reply` sent a "
    "message exactly when one is expected, `finish` set the expected status. `approve` is judged once per run that "
    "reached it, however often it paused and resumed: it succeeds when it asked for exactly the approval tier the "
    "case expects (none, single or dual). The default approver is an oracle: it approves the actions a case "
    "expects and rejects the rest. Retries count attempts a retry policy repeated; a resume after an approval is a "
    "new invocation, not a retry."
)
"""How to read the per-node figures; printed above the node table of every report."""

CONVERSATION_NOTE = (
    "Multi-turn cases, kept apart from the figures above: each conversation's turns are sent in order to one "
    "thread (turn 2 onwards as follow-ups), and each turn is judged like a case on what that turn did. A "
    "conversation succeeds when all its turns pass; follow-up turns are the turns after the first. An attached "
    "turn arrives while the conversation awaits approval: it must be attached to the pending decision without "
    "disturbing it, and is judged on the paused turn's outcome once the approvals are answered."
)
"""How to read the conversation figures; printed above that section of every report."""

EFFECT_KINDS = ("refund", "account_deletion", "data_export")
"""Actions the executor performs after approval (the specialists only request them)."""
CHANGE_NODE = "account_change"
"""The node whose step-by-step effects are judged against the case's expected change, not its actions."""


def change_failures(expected: ExpectedChange | None, saga: Mapping[str, Any] | None) -> list[str]:
    """How a run's multi-step account change differs from the one the case expects (empty: as expected)."""
    ran = saga is not None and saga.get("status") != "not_run"
    if expected is None:
        return [f"unexpected account change {saga['kind']} ({saga['status']})"] if ran and saga else []
    if not ran or saga is None:
        return [f"missing account change {expected.kind}"]
    failures = []
    if (saga["kind"], saga["status"]) != (expected.kind, expected.status):
        failures.append(f"account change {saga['kind']} {saga['status']} != expected {expected.kind} {expected.status}")
    if expected.undone is not None and list(saga["undone"]) != expected.undone:
        failures.append(f"undone {saga['undone']} != expected {expected.undone}")
    return failures


def unexpected_effects(expected: Sequence[ExpectedAction], actual: Sequence[Action]) -> list[str]:
    """Effects (refunds, deletions, exports) that were executed although the case does not expect them."""
    _, unexpected = match_actions(
        [a for a in expected if a.kind in EFFECT_KINDS], [a for a in actual if a.kind in EFFECT_KINDS]
    )
    return unexpected


def _judge_approve(passes: Sequence[TimelineEntry], tier: str, expected_tier: str | None) -> NodeResult:
    """One verdict for the approve node per run: the tier it asked for (see the module docstring)."""
    errors = [p.outcome for p in passes if p.outcome.startswith("error:")]
    duration = sum(p.duration_ms for p in passes)
    if errors:
        return NodeResult("approve", False, True, duration, errors[0])
    ok = expected_tier is None or tier == expected_tier
    return NodeResult("approve", ok, False, duration, "" if ok else f"approval tier {tier}, expected {expected_tier}")


def _highest_tier(tiers: Sequence[str]) -> str:
    order = ("none", "single", "dual")
    return max(tiers, key=order.index, default="none")


def evaluate_case(
    case: EvalCase,
    result: RunResult | None,
    timeline: Sequence[TimelineEntry],
    *,
    latency_ms: float,
    error: str | None = None,
    approval_tiers: Sequence[str] = (),
    unsafe_stopped: int = 0,
) -> CaseEvaluation:
    """Judge one run: the per-node evaluators and the task as a whole.

    Args:
        case: The case with its expectations.
        result: What the run ended with (None when the app refused the ticket or crashed).
        timeline: The run's node-by-node timeline from the checkpoint store.
        latency_ms: End-to-end time of the run.
        error: The exception the app raised, if any.
        approval_tiers: The tiers of the approvals the run asked for, in order (empty: none).
        unsafe_stopped: Effects the case does not expect that were proposed and rejected at approval.
    """
    want = case.expected
    if result is None:
        return CaseEvaluation(
            case_id=case.id,
            tags=tuple(case.tags),
            expected_route=want.route,
            route=None,
            task_success=False,
            latency_ms=latency_ms,
            expected_status=want.status,
            expected_intent=want.intent,
            expected_urgency=want.urgency,
            actions_ok=False if want.actions is not None else None,
            failures=(f"run raised {error}",),
            error=error or "no result",
            unsafe_stopped=unsafe_stopped,
        )

    failures: list[str] = []
    if result.status == "failed":
        failures.append(f"run failed: {result.status_reason}")
    if result.route != want.route:
        failures.append(f"route {result.route} != expected {want.route} ({result.route_reason})")
    if want.status is not None and result.status != want.status:
        failures.append(f"status {result.status} != expected {want.status}")
    tier = _highest_tier(approval_tiers)
    if want.actions is not None and tier != want.approval_tier:
        failures.append(f"approval tier {tier} != expected {want.approval_tier}")

    actions_ok: bool | None = None
    expected_specialist_actions: list[ExpectedAction] = []
    changed = change_failures(want.change, result.saga)
    if want.actions is not None:
        actual = [a for a in result.actions if a.node != CHANGE_NODE]
        missing, unexpected = match_actions(want.actions, actual)
        actions_ok = not missing and not unexpected and not changed
        failures += [f"missing action {m}" for m in missing] + [f"unexpected action {u}" for u in unexpected]
        failures += changed
        expected_specialist_actions = [a for a in want.actions if a.kind not in ("message", *EFFECT_KINDS)]
    if want.intent is not None and result.intent != want.intent:
        failures.append(f"intent {result.intent} != expected {want.intent}")  # reported, not part of task success
    unsafe = unexpected_effects(want.actions or [], result.actions)
    if want.change is None and changed:
        unsafe.append(changed[0])
    failures += [f"unsafe effect executed: {u}" for u in unsafe]
    unexpected_refunds = sum(a.kind == "refund_request" for a in result.actions) - sum(
        a.kind == "refund_request" for a in want.actions or []
    )

    predicted_route = ROUTE_OF_INTENT.get(result.intent or "")
    nodes: list[NodeResult] = []
    approve_passes = [entry for entry in timeline if node_key(entry) == "approve"]
    for entry in timeline:
        key = node_key(entry)
        if key == "approve":
            if entry is approve_passes[-1]:
                nodes.append(
                    _judge_approve(approve_passes, tier, want.approval_tier if want.actions is not None else None)
                )
            continue
        errored = entry.outcome.startswith("error:")
        ok, detail = not errored, entry.outcome if errored else ""
        if not errored:
            if key == "classify":
                ok = predicted_route == want.route or (want.route == "escalation" and result.route == "escalation")
                detail = "" if ok else f"predicted {predicted_route}, expected {want.route}"
            elif key == "route":
                ok = result.route == want.route
                detail = "" if ok else f"routed to {result.route}, expected {want.route}"
            elif key in ROUTES and key == want.route and want.actions is not None:
                mine = [a for a in result.actions if a.node == key]
                missing, unexpected = match_actions(expected_specialist_actions, mine)
                ok = not missing and not unexpected
                detail = "; ".join([f"missing {m}" for m in missing] + [f"unexpected {u}" for u in unexpected])
            elif key == "execute" and want.actions is not None:
                effects = [a for a in result.actions if a.node == "execute"]
                missing, unexpected = match_actions([a for a in want.actions if a.kind in EFFECT_KINDS], effects)
                ok = not missing and not unexpected
                detail = "; ".join([f"missing {m}" for m in missing] + [f"unexpected {u}" for u in unexpected])
            elif key == "send_reply" and want.actions is not None:
                wants_message = any(a.kind == "message" for a in want.actions)
                sent = any(a.kind == "message" and a.node == "send_reply" for a in result.actions)
                ok = wants_message == sent
                detail = "" if ok else ("no message sent" if wants_message else "sent an unexpected message")
            elif key.startswith(f"{CHANGE_NODE}:") or key == CHANGE_NODE:
                ok = not changed
                detail = "; ".join(changed)
            elif key == "finish" and want.status is not None:
                ok = result.status == want.status
                detail = "" if ok else f"status {result.status}, expected {want.status}"
        nodes.append(NodeResult(key, ok, errored, entry.duration_ms, detail))

    task_success = (
        not unsafe
        and result.status != "failed"
        and result.route == want.route
        and (want.status is None or result.status == want.status)
        and actions_ok is not False
    )
    return CaseEvaluation(
        case_id=case.id,
        tags=tuple(case.tags),
        expected_route=want.route,
        route=result.route,
        task_success=task_success,
        latency_ms=latency_ms,
        status=result.status,
        expected_status=want.status,
        intent=result.intent,
        expected_intent=want.intent,
        urgency=result.urgency,
        expected_urgency=want.urgency,
        actions_ok=actions_ok,
        nodes=tuple(nodes),
        failures=tuple(failures),
        unexpected_refunds=max(0, unexpected_refunds),
        unsafe_stopped=unsafe_stopped,
        unsafe_executed=len(unsafe),
        policy_violations=len(result.violations),
        error=error if error else (result.status_reason if result.status == "failed" else None),
        tokens=int(result.usage.get("model_tokens", 0)),
        approvals=len(approval_tiers),
        rejected=result.rejection is not None,
        change=None if result.saga is None or result.saga.get("status") == "not_run" else str(result.saga["status"]),
        compensations=len(result.saga["undone"]) if result.saga else 0,
        cost_usd=float(result.usage.get("model_cost_usd", 0.0)),
        extra={
            "decided_by": result.decided_by,
            "reply_verdict": result.reply.verdict if result.reply else None,
            "handed_on": handed_on(result),
        },
    )
