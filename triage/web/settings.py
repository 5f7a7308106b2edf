"""Settings of the web app, read from the environment (prefix `TRIAGE_`) beside the core settings."""

from __future__ import annotations

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from triage.errors import TriageError


class WebSettingsError(TriageError):
    """A `TRIAGE_*` setting of the web app is invalid (e.g. an intake token that is too short)."""


class WebSettings(BaseSettings):
    """Who may post tickets, which proxy may vouch for a signed-in person, and the limits the web app enforces.

    Every field can be set from the environment: `TRIAGE_INTAKE_TOKEN=...`.
    """

    model_config = SettingsConfigDict(env_prefix="TRIAGE_", extra="ignore")

    public_url: str = Field(
        default="http://127.0.0.1:8000", description="Where people reach the inbox (for printed links)."
    )
    intake_token: str | None = Field(
        default=None, min_length=16, description="Bearer token for `POST /api/tickets`; intake is off when unset."
    )
    intake_max_bytes: int = Field(default=128 * 1024, gt=0, description="Largest intake request body accepted.")
    trusted_proxies: frozenset[str] = Field(
        default=frozenset(), description="Addresses of a single-sign-on proxy whose identity header is trusted."
    )
    identity_header: str = Field(default="X-Forwarded-User", description="The header that proxy puts the id in.")
    session_hours: float = Field(default=12.0, gt=0, description="How long a sign-in lasts.")
    login_attempts: int = Field(default=5, ge=1, description="Failed sign-ins allowed per person and address...")
    login_window_minutes: float = Field(default=15.0, gt=0, description="...within this many minutes.")
    intake_retry_seconds: float = Field(
        default=120.0,
        gt=0,
        description="An accepted ticket whose run has not started this long after a server took it on (the server "
        "stopped) is started by the next server that looks; servers look at start-up and then this often.",
    )
    intake_attempts: int = Field(default=3, ge=1, description="Tries to start an accepted ticket before giving up.")
    page_size: int = Field(default=50, ge=1, le=500, description="Approvals shown per inbox page.")


def load_web_settings() -> WebSettings:
    """The web settings from the environment.

    Raises:
        WebSettingsError: naming the variable and the problem.
    """
    try:
        return WebSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TRIAGE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise WebSettingsError(f"invalid web settings: {problems}") from None
