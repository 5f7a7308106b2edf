"""Per-run accounting of steps, time and model spend, checked against the run's budget."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from triage.policies.budgets import Budget, Usage, budget_exceeded


class BudgetExceededError(Exception):
    """Raised by the model guard instead of calling a model once the run's budget is spent."""


@dataclass
class Meter:
    """Counts one run's model spend; nodes ask it whether the run may go on using models."""

    budget: Budget
    started: float = field(default_factory=time.monotonic)
    model_tokens: int = 0
    model_cost_usd: float = 0.0
    model_calls: int = 0
    stopped: str | None = None
    """Set once a limit is crossed: model use stays stopped for the rest of the run."""
    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Starts of each node task that does I/O, by (node key, checkpoint namespace): see `retries`."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def attempt(self, key: str, namespace: str) -> None:
        """Count one start of a node task (`key` as `attempt_key` names it; `namespace` tells the tasks apart)."""
        with self._lock:
            self.attempts[(key, namespace)] += 1

    def retries(self) -> dict[str, int]:
        """Attempts beyond the first, per node key, for the nodes a retry policy started more than once."""
        totals: Counter[str] = Counter()
        with self._lock:
            for (key, _), starts in self.attempts.items():
                totals[key] += starts - 1
        return {key: count for key, count in totals.items() if count}

    def record(self, *, tokens: int, cost_usd: float) -> None:
        """Add one model call's spend."""
        with self._lock:
            self.model_calls += 1
            self.model_tokens += tokens
            self.model_cost_usd += cost_usd

    def usage(self, steps: int = 0) -> Usage:
        """What the run has used, with `steps` coordinator steps taken."""
        return Usage(
            steps=steps,
            wall_seconds=time.monotonic() - self.started,
            model_tokens=self.model_tokens,
            model_cost_usd=self.model_cost_usd,
        )

    def spent(self) -> dict[str, int | float]:
        """Model calls, tokens, cost and wall time so far, for the run's record."""
        return {
            "model_calls": self.model_calls,
            "model_tokens": self.model_tokens,
            "model_cost_usd": round(self.model_cost_usd, 6),
            "wall_seconds": round(time.monotonic() - self.started, 3),
        }

    def exceeded(self, steps: int = 0) -> str | None:
        """Why the run may not use models any more, or None. Once crossed, a limit stays crossed."""
        if self.stopped is None:
            self.stopped = budget_exceeded(self.usage(steps), self.budget)
        return self.stopped


def attempt_key(namespace: str, node: str, *, specialist: str | None = None) -> str:
    """How a node is named in the retry counts and the eval's per-node figures.

    `validate` for a coordinator node, `billing:lookup` for a step of the billing subgraph, and
    `ask:billing:lookup` for that step in the branch of one ask of several (`specialist` says whose step it is:
    a branch's namespace names only the `ask` node).
    """
    outer = [part.split(":", 1)[0] for part in namespace.split("|")[:-1] if part]
    if outer[:1] == ["ask"] and specialist:
        outer = ["ask", specialist, *outer[1:]]
    return ":".join([*outer, node])
