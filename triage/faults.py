"""Injected faults, for tests and demos: tool calls and checkpoint writes fail at configured rates.

A plan is written `kind=rate,...`, e.g. `TRIAGE_FAULTS="transient=0.3,slow=0.1,seed=7"` for tool calls and
`TRIAGE_CHECKPOINT_FAULTS="transient=0.05"` for checkpoint writes. Every injected fault is classified the way a
real one would be, so the code under test chooses retries and fallbacks by class:

- `transient`: a dropped connection (tools: `TransientToolError`; checkpoints: "database is locked"), retried;
- `rate_limit`: the system asks to slow down (`RateLimitedToolError`, a transient error), retried;
- `timeout`: the call happens but its answer is lost (tools: the tool runs, then `TransientToolError`), so a retry
  must not repeat the effect;
- `permanent`: a refusal no retry fixes (tools: `PermanentToolError`; checkpoints: a disk I/O error);
- `slow`: the call succeeds after `slow_seconds`.

Named tools can be failed on purpose, e.g. to fail one step of a multi-step account change (or its compensation):
`fail=adjust_seats` fails every call of that tool permanently, `flaky=adjust_seats` fails its first call
transiently (a retry passes). Both may be repeated: `fail=adjust_seats,fail=void_account_credit`.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar, get_args

from triage.errors import PermanentToolError, TransientToolError, TriageError

FaultKind = Literal["timeout", "transient", "rate_limit", "permanent", "slow"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
T = TypeVar("T")


class FaultSpecError(TriageError):
    """A fault plan (TRIAGE_FAULTS, TRIAGE_CHECKPOINT_FAULTS) is malformed."""


class RateLimitedToolError(TransientToolError):
    """The system behind a tool asked us to slow down; retried like any transient error."""


@dataclass(frozen=True)
class FaultPlan:
    """Rates of each fault kind (their sum at most 1), a seed for reproducible runs, and how slow `slow` is."""

    rates: dict[FaultKind, float]
    seed: int | None = None
    slow_seconds: float = 0.05
    fail: frozenset[str] = frozenset()
    """Tools whose every call fails permanently."""
    flaky: frozenset[str] = frozenset()
    """Tools whose first call fails transiently."""

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """Read `kind=rate,...,seed=N,slow_seconds=S`.

        Raises:
            FaultSpecError: an unknown kind, a rate outside 0..1, or rates that add up to more than 1.
        """
        rates: dict[FaultKind, float] = {}
        seed: int | None = None
        slow = 0.05
        named: dict[str, set[str]] = {"fail": set(), "flaky": set()}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, sep, value = part.partition("=")
            name = name.strip()
            if name in named:
                if not value.strip():
                    raise FaultSpecError(f"fault plan {spec!r}: write {name}=TOOL, e.g. {name}=adjust_seats")
                named[name].add(value.strip())
                continue
            try:
                number = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise FaultSpecError(f"fault plan {spec!r}: write KIND=RATE, e.g. transient=0.3")
            if name == "seed":
                seed = int(number)
            elif name == "slow_seconds":
                slow = number
            elif name in FAULT_KINDS:
                if not 0.0 <= number <= 1.0:
                    raise FaultSpecError(f"fault plan {spec!r}: the rate of {name} must be between 0 and 1")
                rates[name] = number
            else:
                raise FaultSpecError(
                    f"fault plan {spec!r}: unknown fault {name!r}; known: {', '.join(FAULT_KINDS)}, fail, flaky, "
                    "seed, slow_seconds"
                )
        if sum(rates.values()) > 1.0 + 1e-9:
            raise FaultSpecError(f"fault plan {spec!r}: the rates add up to more than 1")
        return cls(
            rates=rates, seed=seed, slow_seconds=slow, fail=frozenset(named["fail"]), flaky=frozenset(named["flaky"])
        )


@dataclass
class FaultInjector:
    """Draws faults from a plan and counts what it injected (`injected`, by kind)."""

    plan: FaultPlan
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.plan.seed)
        self._flaked: set[str] = set()

    @classmethod
    def from_spec(cls, spec: str | None) -> FaultInjector | None:
        """An injector for `spec`, or None when no faults are configured."""
        if not spec or not spec.strip():
            return None
        return cls(FaultPlan.parse(spec))

    def draw(self) -> FaultKind | None:
        """The fault to inject into the next call, if any."""
        roll, cumulative = self._rng.random(), 0.0
        for kind in FAULT_KINDS:
            cumulative += self.plan.rates.get(kind, 0.0)
            if roll < cumulative:
                self.injected[kind] += 1
                return kind
        return None

    async def around_tool(self, tool: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a tool call, or fail it, or slow it, as the plan draws (a tool named in the plan fails as named)."""
        if tool in self.plan.fail:
            self.injected["fail"] += 1
            raise PermanentToolError(tool, f"the system refused the call (injected fault: fail={tool})")
        if tool in self.plan.flaky and tool not in self._flaked:
            self._flaked.add(tool)
            self.injected["flaky"] += 1
            raise TransientToolError(tool, f"connection reset (injected fault: flaky={tool})")
        kind = self.draw()
        if kind == "slow":
            await asyncio.sleep(self.plan.slow_seconds)
        elif kind == "transient":
            raise TransientToolError(tool, "connection reset (injected fault)")
        elif kind == "rate_limit":
            raise RateLimitedToolError(tool, "rate limited, retry later (injected fault)")
        elif kind == "permanent":
            raise PermanentToolError(tool, "the system refused the call (injected fault)")
        elif kind == "timeout":
            await call()
            raise TransientToolError(tool, "timed out waiting for the answer (injected fault; the call happened)")
        return await call()

    async def before_checkpoint_write(self) -> None:
        """Fail or slow a checkpoint write the way SQLite would."""
        kind = self.draw()
        if kind == "slow":
            await asyncio.sleep(self.plan.slow_seconds)
        elif kind == "permanent":
            raise sqlite3.OperationalError("disk I/O error (injected fault)")
        elif kind is not None:
            raise sqlite3.OperationalError("database is locked (injected fault)")
