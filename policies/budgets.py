"""Per-run budgets: how many steps, how much time, and how many model tokens and dollars a ticket may use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from triage.errors import PolicyFileError


class Budget(BaseModel):
    """Limits for one run. Defaults come from the policy bundle; a run may override any of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int = Field(ge=1, description="Coordinator steps (validate, classify, route, ...).")
    max_wall_seconds: float = Field(gt=0.0, description="Wall-clock time since the run started.")
    max_model_tokens: int = Field(ge=0, description="Input plus output tokens over all model calls.")
    max_model_cost_usd: float = Field(ge=0.0, description="Model cost in US dollars over all model calls.")

    def override(self, changes: Mapping[str, Any] | None) -> Budget:
        """A copy with `changes` applied, validated.

        Raises:
            PolicyFileError: a change names an unknown limit or a bad value.
        """
        if not changes:
            return self
        try:
            return Budget.model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise PolicyFileError(f"invalid budget override: {problems}") from None


@dataclass(frozen=True)
class Usage:
    """What a run has used so far."""

    steps: int
    wall_seconds: float
    model_tokens: int
    model_cost_usd: float


def budget_exceeded(usage: Usage, budget: Budget) -> str | None:
    """The first limit `usage` has reached, as a sentence, or None while the run is within budget."""
    if usage.steps >= budget.max_steps:
        return f"step budget reached ({usage.steps} of {budget.max_steps} steps)"
    if usage.wall_seconds >= budget.max_wall_seconds:
        return f"time budget reached ({usage.wall_seconds:.2f} s of {budget.max_wall_seconds:.2f} s)"
    # Model limits count what was spent: a zero-cost local model never reaches a zero budget.
    if usage.model_tokens and usage.model_tokens >= budget.max_model_tokens:
        return f"model token budget reached ({usage.model_tokens} of {budget.max_model_tokens} tokens)"
    if usage.model_cost_usd and usage.model_cost_usd >= budget.max_model_cost_usd:
        return f"model cost budget reached (${usage.model_cost_usd:.4f} of ${budget.max_model_cost_usd:.4f})"
    return None
