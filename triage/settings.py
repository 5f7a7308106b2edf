"""Runtime settings, read from the environment (prefix `TRIAGE_`) and overridable in code."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where triage keeps its files and the limits it enforces on input.

    Every field can be set from the environment: `TRIAGE_HOME=/srv/triage`.
    """

    model_config = SettingsConfigDict(env_prefix="TRIAGE_", extra="ignore")

    home: Path = Field(default=Path(".triage"), description="Folder for the helpdesk, checkpoints and caches.")
    cache_home: Path | None = Field(
        default=None,
        description="Folder for rebuildable caches (the trained classifier); `<home>/cache` when unset.",
    )
    models_home: Path | None = Field(
        default=None,
        description="Folder of the models trained with `triage train` and the active one; `<home>/models` when unset.",
    )
    policy_dir: Path | None = Field(
        default=None, description="Folder with the policy bundle; the packaged default when unset."
    )
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL for checkpoints, the effects ledger, the audit trail and the approval index "
        "(several worker processes); the SQLite file in the home when unset.",
        repr=False,
    )
    conversation_lease_seconds: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description="How long a follow-up's hold on its conversation lasts unless renewed (it is renewed while the "
        "turn runs): a process that died holding it blocks the conversation this long at most.",
    )
    conversation_wait_seconds: float = Field(
        default=30.0,
        ge=0.0,
        le=3600.0,
        description="How long a follow-up waits for another process's turn on the same conversation before "
        "ConversationBusyError.",
    )
    sqlite_synchronous: Literal["full", "normal", "off"] = Field(
        default="full",
        description="SQLite's `synchronous` for the helpdesk and checkpoint files. 'full' (the default): every "
        "commit waits for the disk, so an acknowledged refund and its ledger entry survive a power loss. 'normal': "
        "commits do not wait; a process crash loses nothing, but a power loss or OS crash can lose the last commits, "
        "and a refund whose ledger entry is lost could run again on recovery. 'off': not even the WAL checkpoint "
        "waits; for throwaway homes only (the eval's). See BENCHMARKS.md, 'Durability and synchronous'.",
    )
    sqlite_on_loop: bool = Field(
        default=False,
        description="Run the helpdesk's and the checkpoint file's statements on the event loop's thread instead of "
        "a thread per connection. For a home one process uses alone with sqlite_synchronous 'off' (the eval's), "
        "where the hop to a connection's thread costs more than the statement. A statement that waits (for the "
        "disk, or for another process's lock, up to the busy timeout) stalls every run in the process meanwhile.",
    )
    helpdesk_reads_on_loop: bool = Field(
        default=True,
        description="A TriageApp reads the helpdesk through a read-only connection on its event loop's thread, not "
        "through the connection's thread (the hop cost more than the read; a read that finds the file locked waits "
        "on the loop, never in SQLite). Turn it off where a server refuses blocking calls on its event loops: "
        "langgraph.json does, for `langgraph dev`. See BENCHMARKS.md, twenty-fourth round.",
    )
    faults: str | None = Field(
        default=None,
        description="Inject faults into tool calls, e.g. 'transient=0.3,slow=0.1,seed=7' (tests and demos).",
    )
    checkpoint_faults: str | None = Field(
        default=None, description="Inject faults into checkpoint writes, e.g. 'transient=0.05' (tests and demos)."
    )

    # The model tier (see `triage.models.llm`). Nothing set: the local tier decides alone, as it always has.
    model_base_url: str | None = Field(
        default=None,
        description="An OpenAI-compatible endpoint, e.g. http://127.0.0.1:8011/v1; the client's default when unset.",
    )
    model_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TRIAGE_MODEL_API_KEY", "OPENAI_API_KEY"),
        description="The endpoint's key (`OPENAI_API_KEY` is honoured); never printed.",
    )
    cheap_model: str | None = Field(
        default=None, description="The model asked when the local tier is unsure; setting it enables the model tier."
    )
    strong_model: str | None = Field(
        default=None, description="The model asked when the cheap model is unsure or invalid (optional)."
    )
    cheap_input_price_per_1k: float = Field(default=0.0, ge=0.0, description="USD per 1k input tokens, cheap model.")
    cheap_output_price_per_1k: float = Field(default=0.0, ge=0.0, description="USD per 1k output tokens, cheap model.")
    strong_input_price_per_1k: float = Field(default=0.0, ge=0.0, description="USD per 1k input tokens, strong model.")
    strong_output_price_per_1k: float = Field(
        default=0.0, ge=0.0, description="USD per 1k output tokens, strong model."
    )
    model_timeout_seconds: float = Field(default=20.0, gt=0.0, description="Longest one model request may take.")
    model_max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries of 429/5xx/connection errors by the client (the one retry layer)."
    )
    local_confidence_threshold: float = Field(
        default=0.6, ge=0.0, le=1.0, description="Below this local confidence the cheap model is asked."
    )
    model_confidence_threshold: float = Field(
        default=0.6, ge=0.0, le=1.0, description="Below this a model's own confidence, the next tier is asked."
    )
    model_rewrites_replies: bool = Field(
        default=False, description="Let the cheap model rewrite template replies for tone (opt-in; always verified)."
    )
    all_to_model: bool = Field(
        default=False, description="Skip the local tier: every ticket to the cheap model (for benchmarks)."
    )
    billing_date: date | None = Field(
        default=None,
        description="The day billing arithmetic takes as today, at noon UTC: the unused part of a subscription's "
        "period, so a plan change's prorated amount and a closure's refund. Today when unset; `triage demo` sets "
        "one so that it prints the same table on any day.",
    )

    @property
    def model_tier_configured(self) -> bool:
        """Whether a model endpoint is configured (the cheap model names it)."""
        return bool(self.cheap_model)

    @property
    def helpdesk_path(self) -> Path:
        """The embedded helpdesk database."""
        return self.home / "helpdesk.sqlite"

    @property
    def checkpoints_path(self) -> Path:
        """The checkpoint store: one thread per run."""
        return self.home / "checkpoints.sqlite"

    @property
    def cache_dir(self) -> Path:
        """Trained local models and other rebuildable files."""
        return self.cache_home or self.home / "cache"

    @property
    def models_dir(self) -> Path:
        """Trained local models and the pointer to the active one (see `triage.models.registry`)."""
        return self.models_home or self.home / "models"
