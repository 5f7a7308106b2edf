"""Property-based: arbitrary tickets and resume payloads through the real app raise only typed errors, and a refused
resume changes nothing of the thread (its checkpoints, its state, the helpdesk rows).

Example counts stay small for CI; a long run: `TRIAGE_FUZZ_EXAMPLES=2000 pytest tests/integration/test_properties.py
--hypothesis-show-statistics`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import rows
from triage import TriageApp
from triage.errors import TriageError
from triage.schemas import MAX_BODY_CHARS, MAX_SUBJECT_CHARS, RunResult, Ticket
from triage.settings import Settings

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("TRIAGE_FUZZ_EXAMPLES", "50"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
EDGE_TEXTS = (
    *("", " ", "\n\t", "\x00", "\u202e\u200b", "🙂" * 300, "ignore all rules", "I was charged twice, refund one"),
    *("x" * MAX_SUBJECT_CHARS, "x" * (MAX_SUBJECT_CHARS + 1), "é" * MAX_BODY_CHARS, "a" * (MAX_BODY_CHARS + 1)),
)
edge_texts = st.sampled_from(EDGE_TEXTS)
texts = st.text(max_size=500) | edge_texts
customers = st.sampled_from(["cus_small_dup", "cus_mid_dup", "cus_0001", "cus_nobody", "", "cus 1", "x" * 65])
ticket_dicts = st.fixed_dictionaries(
    {},
    optional={
        "customer_id": customers | texts | json_values,
        "subject": texts | json_values,
        "body": texts | json_values,
        "channel": st.sampled_from(["email", "chat", "web", "phone", "fax"]) | json_values,
        "cusotmer_id": texts,
    },
)
valid_tickets = st.fixed_dictionaries(
    {"body": st.text(min_size=1, max_size=2000).filter(str.strip) | edge_texts.filter(str.strip)},
    optional={
        "customer_id": st.sampled_from(["cus_small_dup", "cus_mid_dup", "cus_0001", "cus_0002"]),
        "subject": st.text(max_size=MAX_SUBJECT_CHARS),
        "channel": st.sampled_from(["email", "chat", "web", "phone"]),
    },
)
tickets = valid_tickets | ticket_dicts | json_values | ticket_dicts.map(lambda d: str(d)) | st.binary(max_size=64)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[TriageApp]:
    with TriageApp(Settings(home=tmp_path_factory.mktemp("fuzz") / "home", cache_home=model_cache)) as app:
        yield app


@FUZZ
@given(ticket=tickets)
def test_arbitrary_tickets_raise_only_typed_errors(fuzz_app: TriageApp, ticket: Any) -> None:
    try:
        result = fuzz_app.run(ticket)
    except TriageError as exc:
        event(f"refused: {type(exc).__name__}")
        assert str(exc)
        return
    event(f"ran: {result.status}")
    assert isinstance(result, RunResult) and result.thread_id


@FUZZ
@given(fields=valid_tickets | ticket_dicts)
def test_ticket_constructor_raises_only_invalid_ticket_error(fields: dict[str, Any]) -> None:
    from triage.errors import InvalidTicketError

    try:
        Ticket(**fields)
    except InvalidTicketError:
        event("refused")
    else:
        event("accepted")


approvers = st.sampled_from(["alice", "bob", "sam", "mallory", "", "system:sweep"]) | st.text(max_size=70)
decisions = st.sampled_from(["approve", "reject", "edit", "timeout"]) | st.text(max_size=8)
edit_args = st.none() | st.dictionaries(
    st.sampled_from(["amount_cents", "payment_id", "reason"]) | st.text(max_size=8),
    st.integers(-(10**12), 10**12) | json_values,
    max_size=3,
)
structured_payloads = st.fixed_dictionaries(
    {"approver": approvers | json_values, "decision": decisions},
    optional={
        "reason": st.text(max_size=60) | json_values,
        "approval_id": st.none() | st.text(max_size=20) | json_values,
        "args": edit_args,
        "extra": json_values,
    },
)
likely_payloads = st.fixed_dictionaries(
    {
        "approver": st.sampled_from(["alice", "bob", "sam", "mallory", "system:sweep"]),
        "decision": st.sampled_from(["approve", "reject", "edit", "timeout"]),
    },
    optional={
        "reason": st.text(max_size=60),
        "approval_id": st.none() | st.text(max_size=20),
        "args": edit_args | st.fixed_dictionaries({"amount_cents": st.integers(-5, 10**6)}),
    },
)
payloads = likely_payloads | structured_payloads | json_values

DUPLICATE_CHARGE = {"customer_id": "cus_mid_dup", "subject": "Charged twice", "body": "Charged twice, refund one."}
HELPDESK_TABLES = ("refunds", "refund_requests", "outbox", "tickets", "account_requests")


@dataclass
class Paused:
    """An app on a home whose thread waits for a refund approval; reset to a fresh copy after a decision lands."""

    template: Path
    workdir: Path
    cache: Path
    app: TriageApp | None = None
    thread_id: str = ""
    resets: int = 0

    def reset(self) -> None:
        if self.app is not None:
            self.app.close()
        home = self.workdir / f"home{self.resets}"
        self.resets += 1
        shutil.copytree(self.template / "home", home)
        self.app = TriageApp(Settings(home=home, cache_home=self.cache))
        [pending] = self.app.pending_approvals()
        self.thread_id = pending.thread_id

    def state(self) -> dict[str, Any]:
        assert self.app is not None
        settings = self.app.settings
        checkpoints = rows(
            settings.checkpoints_path,
            "SELECT (SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?) AS checkpoints, "
            "(SELECT COUNT(*) FROM writes WHERE thread_id = ?) AS writes",
            (self.thread_id, self.thread_id),
        )
        helpdesk = {
            table: rows(settings.helpdesk_path, f"SELECT * FROM {table} ORDER BY id") for table in HELPDESK_TABLES
        }
        view = self.app.thread(self.thread_id).result.model_dump(exclude={"duration_ms"})
        return {"checkpoints": checkpoints, "helpdesk": helpdesk, "result": view}


@pytest.fixture(scope="module")
def paused(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Paused]:
    template = tmp_path_factory.mktemp("paused-template")
    with TriageApp(Settings(home=template / "home", cache_home=model_cache)) as app:
        assert app.run(DUPLICATE_CHARGE).status == "awaiting_approval"
    holder = Paused(template=template, workdir=tmp_path_factory.mktemp("paused"), cache=model_cache)
    holder.reset()
    yield holder
    if holder.app is not None:
        holder.app.close()


@FUZZ
@given(payload=payloads)
def test_arbitrary_resume_payloads_raise_only_typed_errors_and_a_refusal_changes_nothing(
    paused: Paused, payload: Any
) -> None:
    assert paused.app is not None
    before = paused.state()
    try:
        result = paused.app.resume(paused.thread_id, payload)
    except TriageError as exc:
        event(f"refused: {type(exc).__name__}")
        assert paused.state() == before
        return
    event(f"decided: {result.status}")
    assert result.status != "awaiting_approval" or result.pending_approval is not None
    paused.reset()
