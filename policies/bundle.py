"""The policy bundle: every policy file, validated on load, with one content hash recorded on each run."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Collection
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from triage.errors import PolicyFileError
from triage.policies.approvals import ApprovalPolicy
from triage.policies.budgets import Budget
from triage.policies.planning import DEFAULT_MAX_ASKS, MAX_ASKS_CEILING
from triage.taxonomy import ALL_INTENTS, ROUTES, URGENCIES, Route, Urgency

POLICY_FILES = ("permissions.toml", "support.toml", "approvals.toml", "prompts.toml")
Priority = Literal["low", "normal", "high", "urgent"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Permissions(_Strict):
    """Scopes granted to each node; anything not granted is denied."""

    grants: dict[str, frozenset[str]]

    def allows(self, node: str, scope: str) -> bool:
        """Whether `node` may use a tool that needs `scope`."""
        return scope in self.grants.get(node, frozenset())

    def unknown_scopes(self, known: Collection[str]) -> dict[str, list[str]]:
        """The granted scopes that are not in `known`, by node."""
        found = {node: sorted(set(scopes) - set(known)) for node, scopes in self.grants.items()}
        return {node: scopes for node, scopes in found.items() if scopes}


class RoutingRules(_Strict):
    """When a ticket leaves its topic's specialist for the human queue."""

    min_confidence: float = Field(ge=0.0, le=1.0)
    min_confidence_to_act: float = Field(ge=0.0, le=1.0)
    """Below this, a ticket for a specialist that writes (`acting_routes`) goes to a person before anything is filed.

    (At or below `min_confidence` the ticket is escalated anyway.)
    """
    acting_routes: frozenset[Route]
    hold_writes_on_signals: frozenset[str] = frozenset()
    """Signals that hold back a specialist's writes whatever the confidence (see `write_hold`)."""
    escalate_on_signals: frozenset[str]
    escalate_on_sentiment: frozenset[str]


class KnowledgeBaseRules(_Strict):
    """How good a knowledge-base match must be to answer with it."""

    min_score: float = Field(ge=0.0)
    min_key_terms: int = Field(ge=1)
    strong_key_terms: int = Field(ge=1)
    min_key_coverage: float = Field(ge=0.0, le=1.0)
    intent_articles: dict[str, frozenset[str]] = Field(default_factory=dict)
    """FAQ articles that answer a classified intent when the search finds them with one of the ticket's words."""

    @field_validator("intent_articles")
    @classmethod
    def _known_intents(cls, articles: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
        unknown = sorted(set(articles) - set(ALL_INTENTS))
        if unknown:
            raise ValueError(f"unknown intent {', '.join(unknown)}; intents are listed in triage/taxonomy.py")
        return articles


class BillingRules(_Strict):
    """How billing facts are read."""

    duplicate_window_hours: int = Field(ge=1)


class TimeoutRules(_Strict):
    """Per-node time limits."""

    io_node_seconds: float = Field(gt=0.0)


class AgentRules(_Strict):
    """The technical specialist's bounded agent step (with a model configured): its hard caps."""

    enabled: bool = True
    max_steps: int = Field(default=4, ge=1, le=20, description="Model turns, each with its tool calls.")
    max_model_tokens: int = Field(default=6000, ge=1, description="Input plus output tokens over the agent's turns.")
    max_model_cost_usd: float = Field(default=0.01, ge=0.0, description="Model cost of the agent's turns.")
    turn_seconds: float = Field(default=60.0, gt=0.0, description="Time limit of one turn (model call and tools).")


class PlanningRules(_Strict):
    """How a ticket that asks several things is planned (see `triage.policies.planning`)."""

    max_asks: int = Field(default=DEFAULT_MAX_ASKS, ge=1, le=MAX_ASKS_CEILING, strict=True)
    """Asks handled in one ticket, each by its specialist; further asks are handed on to a person with the reason."""


class SupportPolicy(_Strict):
    """The contents of support.toml."""

    routing: RoutingRules
    priority: dict[Urgency, Priority]
    knowledge_base: KnowledgeBaseRules
    billing: BillingRules
    timeouts: TimeoutRules
    budget: Budget
    agent: AgentRules = Field(default_factory=AgentRules)
    planning: PlanningRules = Field(default_factory=PlanningRules)

    @field_validator("priority")
    @classmethod
    def _every_urgency(cls, priority: dict[Urgency, Priority]) -> dict[Urgency, Priority]:
        missing = [u for u in URGENCIES if u not in priority]
        if missing:
            raise ValueError(f"missing a priority for urgency {', '.join(missing)}")
        return priority


class PromptText(_Strict):
    """One system prompt."""

    system: str = Field(min_length=1)


class PromptPolicy(_Strict):
    """The contents of prompts.toml: what the model tier is told, and the catalogue of routes and intents."""

    classify: PromptText
    rewrite: PromptText
    release_summary: PromptText = PromptText(
        system="Summarise the release notes quoted between <notes> and </notes> for customers in two or three plain "
        "sentences. Use only what the notes say: no promise, date, version or number they do not contain."
    )
    """How a model summarises release notes for the customers a release follow-up notifies."""
    agent: PromptText | None = None
    """The technical specialist's agent step; without it the step never runs."""
    routes: dict[Route, str]
    intents: dict[str, str]

    @field_validator("routes")
    @classmethod
    def _every_route(cls, routes: dict[Route, str]) -> dict[Route, str]:
        missing = [r for r in ROUTES if r not in routes]
        if missing:
            raise ValueError(f"missing a description for route {', '.join(missing)}")
        return routes

    @field_validator("intents")
    @classmethod
    def _known_intents(cls, intents: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(intents) - set(ALL_INTENTS))
        if unknown:
            raise ValueError(f"unknown intent {', '.join(unknown)}; known: {', '.join(ALL_INTENTS)}")
        missing = [i for i in ALL_INTENTS if i not in intents]
        if missing:
            raise ValueError(f"missing a description for intent {', '.join(missing)}")
        return intents


class PolicyBundle(_Strict):
    """All policies in force for a run, and the hash that identifies them."""

    permissions: Permissions
    support: SupportPolicy
    approvals: ApprovalPolicy
    prompts: PromptPolicy
    version: str = Field(description="sha256 of the policy files' bytes, first 12 hex digits.")
    source: str


def load_policy_bundle(directory: Path | None = None, *, known_scopes: Collection[str] | None = None) -> PolicyBundle:
    """Load and validate the bundle from `directory`, or the packaged default.

    `known_scopes` are the scopes a grant may name; by default every scope a tool declares.

    Raises:
        PolicyFileError: naming the file and the field, when a file is missing, not TOML, or invalid, or when
            permissions.toml grants a scope no tool declares.
    """
    folder: Traversable = directory if directory is not None else resources.files("triage.policies") / "default"
    digest = hashlib.sha256()
    parsed: dict[str, dict[str, Any]] = {}
    for name in POLICY_FILES:
        file = folder / name
        try:
            raw = file.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise PolicyFileError(f"{file}: missing; copy it from the packaged default bundle") from None
        digest.update(name.encode() + b"\0" + raw + b"\0")
        try:
            parsed[name] = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PolicyFileError(f"{file}: not valid TOML ({exc}); fix the syntax") from None
    try:
        permissions = Permissions.model_validate(parsed["permissions.toml"])
    except ValidationError as exc:
        raise PolicyFileError(_describe(folder / "permissions.toml", exc)) from None
    if known_scopes is None:
        # The scope vocabulary is what the tools declare (`helpdesk_tool(scope=...)`); reading it does no I/O.
        from triage.tools import ALL_SCOPES

        known_scopes = ALL_SCOPES
    unknown = permissions.unknown_scopes(known_scopes)
    if unknown:
        named = "; ".join(f"{node}: {', '.join(scopes)}" for node, scopes in sorted(unknown.items()))
        raise PolicyFileError(
            f"{folder / 'permissions.toml'}: unknown scope(s) granted ({named}). Scopes are exact names, without "
            f"wildcards; the known ones are {', '.join(sorted(known_scopes))}"
        )
    try:
        support = SupportPolicy.model_validate(parsed["support.toml"])
    except ValidationError as exc:
        raise PolicyFileError(_describe(folder / "support.toml", exc)) from None
    try:
        approvals = ApprovalPolicy.model_validate(parsed["approvals.toml"])
    except ValidationError as exc:
        raise PolicyFileError(_describe(folder / "approvals.toml", exc)) from None
    try:
        prompts = PromptPolicy.model_validate(parsed["prompts.toml"])
    except ValidationError as exc:
        raise PolicyFileError(_describe(folder / "prompts.toml", exc)) from None
    return PolicyBundle(
        permissions=permissions,
        support=support,
        approvals=approvals,
        prompts=prompts,
        version=digest.hexdigest()[:12],
        source=str(folder),
    )


def _describe(file: Traversable, exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err['input']!r})" for err in exc.errors()
    )
    return f"{file}: {problems}. Fix the field(s) named, or compare with the packaged default bundle."
