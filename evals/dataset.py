"""Evaluation cases: load and validate them from JSONL, or build route-only cases from labelled CSV/JSONL files.

A case is one line of JSONL::

    {"id": "billing-dup-001",
     "ticket": {"customer_id": "cus_small_dup", "subject": "Charged twice", "body": "..."},
     "expected": {"route": "billing", "intent": "duplicate_charge", "status": "completed",
                  "actions": [{"kind": "refund_request", "amount_cents": 1900}, {"kind": "message"}],
                  "approval_tier": "none"},
     "tags": ["billing", "duplicate_charge"]}

Expected actions name the kind and only the key arguments that matter; an argument left out is not checked.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from triage.errors import TriageError
from triage.schemas import Ticket
from triage.taxonomy import ROUTE_OF_INTENT, ROUTES, Route, Status, Urgency

__all__ = [
    "ApproverDecision",
    "DatasetError",
    "EvalCase",
    "Expected",
    "ExpectedAction",
    "ExpectedChange",
    "default_dataset",
    "load_cases",
    "load_labelled",
]

ActionKind = Literal[
    "refund_request", "refund", "ticket", "message", "account_request", "account_deletion", "data_export"
]
ApprovalTier = Literal["none", "single", "dual"]


def default_dataset() -> Path:
    """The packaged dataset, `evals/datasets/support.jsonl`."""
    return Path(str(resources.files("triage.evals") / "datasets" / "support.jsonl"))


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


def load_cases(path: Path | None = None, *, limit: int | None = None) -> list[EvalCase]:
    """Read and validate a JSONL dataset (default: the packaged one).

    Raises:
        DatasetError: naming `file:line` for a line that is not JSON or not a valid case, or a repeated id.
    """
    path = path or default_dataset()
    lines = _read_lines(path)
    cases: list[EvalCase] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg}); each line must be one case") from None
        try:
            case = EvalCase.model_validate(data)
        except ValidationError as exc:
            raise DatasetError(f"{path}:{number}: {_describe(exc)}") from None
        if case.id in seen:
            raise DatasetError(f"{path}:{number}: duplicate id {case.id!r} (first on line {seen[case.id]})")
        seen[case.id] = number
        cases.append(case)
        if limit is not None and len(cases) >= limit:
            break
    if not cases:
        raise DatasetError(f"{path}: no cases; expected one JSON case per line")
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
