"""Runtime settings, read from the environment (prefix `TRIAGE_`) and overridable in code."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
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
    faults: str | None = Field(
        default=None,
        description="Inject faults into tool calls, e.g. 'transient=0.3,slow=0.1,seed=7' (tests and demos).",
    )
    checkpoint_faults: str | None = Field(
        default=None, description="Inject faults into checkpoint writes, e.g. 'transient=0.05' (tests and demos)."
    )

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
