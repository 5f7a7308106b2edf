"""Fault plans parse strictly, and each injected fault is classified the way a real one would be."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from triage.errors import PermanentToolError, TransientToolError
from triage.faults import FaultInjector, FaultPlan, FaultSpecError, RateLimitedToolError
from triage.helpdesk.store import is_transient


def test_plan_parses_rates_seed_and_slowness() -> None:
    plan = FaultPlan.parse("transient=0.3, slow=0.1,seed=7,slow_seconds=0.5")
    assert plan == FaultPlan(rates={"transient": 0.3, "slow": 0.1}, seed=7, slow_seconds=0.5)
    assert FaultInjector.from_spec("") is None and FaultInjector.from_spec(None) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("godmode=0.1", "unknown fault 'godmode'"),
        ("transient=2", "between 0 and 1"),
        ("transient=0.6,permanent=0.6", "more than 1"),
        ("transient", "KIND=RATE"),
        ("transient=lots", "KIND=RATE"),
    ],
)
def test_bad_plans_are_refused_with_a_typed_error(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        FaultPlan.parse(spec)


def test_a_seeded_plan_draws_the_same_faults() -> None:
    def draws() -> list[str | None]:
        injector = FaultInjector(FaultPlan.parse("transient=0.3,permanent=0.1,seed=42"))
        return [injector.draw() for _ in range(200)]

    first = draws()
    assert first == draws()
    assert 40 <= sum(kind == "transient" for kind in first) <= 80


@pytest.mark.parametrize(
    ("kind", "error", "called"),
    [
        ("transient", TransientToolError, 0),
        ("rate_limit", RateLimitedToolError, 0),
        ("permanent", PermanentToolError, 0),
        ("timeout", TransientToolError, 1),  # the call happened; only its answer is lost
    ],
)
def test_tool_faults_are_classified(kind: str, error: type[Exception], called: int) -> None:
    injector = FaultInjector(FaultPlan.parse(f"{kind}=1.0"))
    calls = []

    async def call() -> str:
        calls.append(1)
        return "done"

    with pytest.raises(error, match="injected fault"):
        asyncio.run(injector.around_tool("issue_refund", call))
    assert len(calls) == called and injector.injected == {kind: 1}
    assert issubclass(error, TransientToolError) == (kind != "permanent")


def test_slow_calls_succeed_and_no_fault_passes_through() -> None:
    async def call() -> str:
        return "done"

    assert asyncio.run(FaultInjector(FaultPlan.parse("slow=1.0,slow_seconds=0")).around_tool("t", call)) == "done"
    assert asyncio.run(FaultInjector(FaultPlan.parse("transient=0")).around_tool("t", call)) == "done"


@pytest.mark.parametrize(("kind", "transient"), [("transient", True), ("timeout", True), ("permanent", False)])
def test_checkpoint_faults_look_like_sqlite_errors(kind: str, transient: bool) -> None:
    injector = FaultInjector(FaultPlan.parse(f"{kind}=1.0"))
    with pytest.raises(sqlite3.OperationalError) as raised:
        asyncio.run(injector.before_checkpoint_write())
    assert is_transient(raised.value) == transient
