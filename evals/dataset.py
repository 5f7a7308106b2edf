"""Evaluation cases: load and validate them from JSONL, or build route-only cases from labelled CSV/JSONL files.

A case is one line of JSONL::

    {"id": "billing-dup-001",
     "ticket": {"customer_id": "cus_small_dup", "subject": "Charged twice", "body": "..."},
     "expected": {"route": "billing", "intent": "duplicate_charge", "status": "completed",
                  "actions": [{"kind": "refund_request", "amount_cents": 1900}, {"kind": "message"}],
                  "approval_tier": "none"},
     "tags": ["billing", "duplicate_charge"]}

Expected actions name the kind and only the key arguments that matter; an argument left out is not checked.

A conversation case (`evals/datasets/conversations.jsonl`) is one line with the turns a customer writes, in order,
each with its own expectations; the runner sends turn 2 onwards as follow-ups to the conversation turn 1 started::

    {"id": "conv-email-detail-001",
     "turns": [
       {"ticket": {"customer_id": "cus_new", "body": "I want to change the email on my account."},
        "expected": {"route": "account", "intent": "email_change", "status": "completed",
                     "actions": [{"kind": "message", "template": "account.email_change_needs_address"}]}},
       {"ticket": {"body": "Use new.me@example.org"},
        "expected": {"route": "account", "intent": "email_change", "status": "completed",
                     "actions": [{"kind": "account_request", "request": "email_change"}, {"kind": "message"}]}}],
     "tags": ["follow_up", "more_detail"]}

A turn with `"hold": true` leaves its approval unanswered, so that the next turn arrives while the conversation
awaits it; that next turn says `"attached": true`, and its expectations are those of the paused turn once the
approvals are answered.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from triage.errors import TriageError
from triage.schemas import Ticket
from triage.taxonomy import ROUTE_OF_INTENT, ROUTES, Route, Status, Urgency

__all__ = [
    "ApproverDecision",
    "ConversationCase",
    "ConversationTurn",
    "DatasetError",
    "EvalCase",
    "Expected",
    "ExpectedAction",
    "ExpectedChange",
    "default_conversations",
    "default_dataset",
    "load_cases",
    "load_conversations",
    "load_labelled",
]

ActionKind = Literal[
    "refund_request", "refund", "ticket", "message", "account_request", "account_deletion", "data_export"
]
ApprovalTier = Literal["none", "single", "dual"]


def default_dataset() -> Path:
    """The packaged dataset, `evals/datasets/support.jsonl`."""
    return Path(str(resources.files("triage.evals") / "datasets" / "support.jsonl"))


def default_conversations() -> Path:
    """The packaged conversation cases, `evals/datasets/conversations.jsonl`."""
    return Path(str(resources.files("triage.evals") / "datasets" / "conversations.jsonl"))


class DatasetError(TriageError):
    """A dataset file is missing or malformed; the message names the file and line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedAction(_Strict):
    """A side effect the run must perform, with the key arguments that identify it."""

    kind: ActionKind
    amount_cents: int | None = Field(default=None, description="refund_request: the amount requested.")
    queue: str | None = Field(default=None, description="ticket: human, engineering or account.")
    priority: Literal["low", "normal", "high", "urgent"] | None = Field(default=None, description="ticket priority.")
    request: str | None = Field(default=None, description="account_request: password_reset, data_export, ...")
    new_email: str | None = Field(default=None, description="account_request email_change: the new address.")
    to_plan: str | None = Field(default=None, description="account_request plan_change: the target plan id.")
    template: str | None = Field(default=None, description="message: the reply template.")

    def key_args(self) -> dict[str, Any]:
        """The arguments this expectation checks (those that are set), kind excluded."""
        return {k: v for k, v in self.model_dump(exclude={"kind"}).items() if v is not None}


class ApproverDecision(_Strict):
    """One scripted answer to an approval interrupt, in the order the approvals are asked for."""

    decision: Literal["approve", "reject", "edit"]
    approver: str | None = Field(default=None, description="Who answers; default alice, then sam for a second one.")
    reason: str = "scripted by the eval case"
    args: dict[str, Any] | None = Field(default=None, description="For edit: the changed arguments.")


class ExpectedChange(_Strict):
    """A plan change or account closure the run must carry out, and how it must end."""

    kind: Literal["plan_change", "account_closure"]
    status: Literal["completed", "rolled_back", "rollback_failed"] = "completed"
    undone: list[str] | None = Field(default=None, description="The steps undone, in the order they were undone.")


class Expected(_Strict):
    """What a correct system does with the ticket. `None` means "not checked" (route-only external cases)."""

    route: Route
    intent: str | None = None
    urgency: Urgency | None = None
    status: Status | None = None
    actions: list[ExpectedAction] | None = None
    approval_tier: ApprovalTier = "none"
    change: ExpectedChange | None = None
    """The multi-step account change the run carries out (its steps are checked here, not in `actions`)."""

    @model_validator(mode="after")
    def _intent_matches_route(self) -> Expected:
        if self.intent is not None:
            route = ROUTE_OF_INTENT.get(self.intent)
            if route is None:
                raise ValueError(f"unknown intent {self.intent!r}")
            if route != self.route and self.route != "escalation":
                raise ValueError(f"intent {self.intent!r} belongs to route {route!r}, not {self.route!r}")
        return self


class EvalCase(_Strict):
    """One evaluation case: a ticket, what should happen to it, and tags to slice the results by."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.:\-]{1,80}$")
    ticket: Ticket
    expected: Expected
    tags: list[str] = Field(default_factory=list)
    approver_script: list[ApproverDecision] | None = None
    faults: str | None = Field(
        default=None,
        description="A fault plan for this case's tool calls (TRIAGE_FAULTS syntax), e.g. fail=adjust_seats.",
    )


class ConversationTurn(_Strict):
    """One message of a conversation case and what should happen to it.

    The first turn starts the conversation; later turns are sent as follow-ups to it (the runner fills in
    `conversation_id`, so a turn's ticket leaves it out). A later turn's ticket may leave out `customer_id` too:
    the conversation knows the customer.
    """

    ticket: Ticket
    expected: Expected
    approver_script: list[ApproverDecision] | None = None
    hold: bool = Field(
        default=False,
        description="Leave this turn's approval unanswered: the next turn arrives while the conversation awaits it.",
    )
    attached: bool = Field(
        default=False,
        description="This message arrives while the conversation awaits approval: it must be attached to the "
        "pending decision (not run as a turn of its own). Its expectations are the paused turn's, once answered.",
    )
    reopened: bool | None = Field(
        default=None, description="Whether the follow-up reopens the conversation for a person (None: not checked)."
    )

    @model_validator(mode="after")
    def _no_conversation_id(self) -> ConversationTurn:
        if self.ticket.conversation_id is not None:
            raise ValueError("ticket.conversation_id: leave it out, the runner continues the case's conversation")
        if self.hold and self.expected.status not in (None, "awaiting_approval"):
            raise ValueError("a turn that holds its approval ends awaiting_approval; expect that status or none")
        return self


class ConversationCase(_Strict):
    """A conversation: turns sent one after another to the same thread, each judged on its own expectations."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.:\-]{1,80}$")
    turns: list[ConversationTurn] = Field(min_length=2, max_length=10)
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _turns_fit_together(self) -> ConversationCase:
        if self.turns[0].ticket.customer_id is None and any(t.hold for t in self.turns):
            raise ValueError("turns: a conversation that waits for an approval needs a customer_id on turn 1")
        for number, (turn, after) in enumerate(zip(self.turns, [*self.turns[1:], None], strict=True), start=1):
            if turn.hold and (after is None or not after.attached):
                raise ValueError(f"turns.{number}: a turn that holds its approval must be followed by an attached one")
            if after is not None and after.attached and not turn.hold:
                raise ValueError(f"turns.{number + 1}: an attached turn must follow a turn that holds its approval")
        return self

    def turn_case(self, number: int) -> EvalCase:
        """Turn `number` (1-based) as a single case, to be judged by the same evaluators as any other case."""
        turn = self.turns[number - 1]
        return EvalCase(
            id=f"{self.id}.t{number}",
            ticket=turn.ticket,
            expected=turn.expected,
            tags=[*self.tags, "first_turn" if number == 1 else "follow_up_turn"],
            approver_script=turn.approver_script,
        )


_C = TypeVar("_C", EvalCase, ConversationCase)


def load_cases(path: Path | None = None, *, limit: int | None = None) -> list[EvalCase]:
    """Read and validate a JSONL dataset (default: the packaged one).

    Raises:
        DatasetError: naming `file:line` for a line that is not JSON or not a valid case, or a repeated id.
    """
    return _load(path or default_dataset(), EvalCase, limit=limit)


def load_conversations(path: Path | None = None, *, limit: int | None = None) -> list[ConversationCase]:
    """Read and validate a JSONL file of conversation cases (default: the packaged one).

    Raises:
        DatasetError: naming `file:line` for a line that is not JSON or not a valid conversation, or a repeated id.
    """
    return _load(path or default_conversations(), ConversationCase, limit=limit)


def _load(path: Path, model: type[_C], *, limit: int | None) -> list[_C]:
    kind = "conversation" if model is ConversationCase else "case"
    cases: list[_C] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg}); each line must be one {kind}") from None
        if isinstance(data, dict) and model is EvalCase and "turns" in data:
            raise DatasetError(
                f"{path}:{number}: a conversation case (it has turns); give conversation files with --conversations"
            )
        try:
            case = model.model_validate(data)
        except ValidationError as exc:
            raise DatasetError(f"{path}:{number}: {_describe(exc)}") from None
        if case.id in seen:
            raise DatasetError(f"{path}:{number}: duplicate id {case.id!r} (first on line {seen[case.id]})")
        seen[case.id] = number
        cases.append(case)
        if limit is not None and len(cases) >= limit:
            break
    if not cases:
        raise DatasetError(f"{path}: no cases; expected one JSON {kind} per line")
    return cases


def load_labelled(
    path: Path,
    *,
    text_col: str = "text",
    route_col: str = "route",
    intent_col: str | None = None,
    limit: int | None = None,
) -> list[EvalCase]:
    """Build route-only cases (anonymous tickets) from a labelled CSV or JSONL file, the format `triage train` reads.

    `intent_col` names the column with the expected intent; by default the column `intent` is used when the file
    has one (an empty cell checks no intent for that row).

    Raises:
        DatasetError: the file is missing, a column is absent, a route is not one of triage's routes, or an intent
            is unknown or not of its route.
    """
    rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_jsonl_rows(path)
    cases: list[EvalCase] = []
    for number, row in rows:
        wanted_intent = intent_col or ("intent" if "intent" in row else None)
        missing = [col for col in (text_col, route_col, wanted_intent) if col is not None and col not in row]
        if missing:
            raise DatasetError(
                f"{path}:{number}: no column {', '.join(map(repr, missing))}; "
                f"columns are {', '.join(map(repr, row))}. Use --text-col/--route-col/--intent-col to map them"
            )
        route, text = str(row[route_col]).strip(), str(row[text_col])
        if route not in ROUTES:
            raise DatasetError(f"{path}:{number}: route {route!r} is not one of {', '.join(ROUTES)}")
        intent = str(row.get(wanted_intent) or "").strip() if wanted_intent else ""
        try:
            ticket = Ticket(body=text[:20_000])
            expected = Expected(route=route, intent=intent or None)
        except ValidationError as exc:
            raise DatasetError(f"{path}:{number}: {_describe(exc)}") from None
        cases.append(EvalCase(id=f"{path.stem}-{number}", ticket=ticket, expected=expected, tags=["external"]))
        if limit is not None and len(cases) >= limit:
            break
    if not cases:
        raise DatasetError(f"{path}: no rows")
    return cases


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such dataset file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    lines = _read_lines(path)
    reader = csv.DictReader(lines)
    # Line numbers count the header as line 1; quoted newlines make them approximate, the row index stays right.
    return [(reader.line_num, dict(row)) for row in reader]


def _read_jsonl_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object")
        rows.append((number, data))
    return rows


def _describe(exc: ValidationError) -> str:
    problems: Sequence[str] = [
        f"{'.'.join(str(p) for p in err['loc']) or 'case'}: {err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()
    ]
    return "; ".join(problems)
