"""The web app factory: the approvals inbox (server-rendered pages) and the ticket intake API, on one app.

`create_app()` builds it; `app` is one built from the environment, for `uvicorn triage.web.app:app` and for the
LangGraph server's `http.app` in langgraph.json. Building it opens nothing: the stores open on first use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from triage.app import TriageApp
from triage.policies import PolicyBundle, load_policy_bundle
from triage.settings import Settings
from triage.web.auth import SESSION_COOKIE, Forbidden, NotSignedIn
from triage.web.settings import WebSettings, load_web_settings
from triage.web.store import WebStore


@dataclass
class WebContext:
    """What every request of the web app shares."""

    triage: TriageApp
    store: WebStore
    policy: PolicyBundle
    web_settings: WebSettings
    templates: Jinja2Templates
    owns_triage: bool
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    """One lock per thread: decisions on one thread from this process are taken one at a time."""
    runs: set[asyncio.Task[Any]] = field(default_factory=set)
    """Intake runs in flight."""

    def thread_lock(self, thread_id: str) -> asyncio.Lock:
        """The lock for decisions on `thread_id`."""
        return self.locks.setdefault(thread_id, asyncio.Lock())


def web_store_path(settings: Settings) -> Path:
    """The web app's SQLite file in the app home."""
    return settings.home / "web.sqlite"


def create_app(
    settings: Settings | None = None, *, web_settings: WebSettings | None = None, triage: TriageApp | None = None
) -> FastAPI:
    """Build the web app on the app home of `settings` (default: from the environment).

    `triage` shares an already open `TriageApp` (it is then not closed with the web app).
    """
    settings = triage.settings if triage is not None else settings or Settings()
    web_settings = web_settings or load_web_settings()
    folder = resources.files("triage.web")
    templates = Jinja2Templates(directory=str(folder / "templates"))  # autoescapes .html

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        from triage.web.intake import keep_restarting

        context: WebContext = api.state.web
        sweeper = asyncio.create_task(keep_restarting(context)) if context.web_settings.intake_token else None
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                await asyncio.gather(sweeper, return_exceptions=True)
            for task in list(context.runs):
                await asyncio.wait({task}, timeout=30)
            if context.owns_triage:
                await context.triage.aclose()

    api = FastAPI(
        title="triage",
        summary="Approvals inbox and ticket intake for support-ticket triage.",
        version="1",
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    api.state.web = WebContext(
        triage=triage or TriageApp(settings),
        store=WebStore(web_store_path(settings)),
        policy=load_policy_bundle(settings.policy_dir),
        web_settings=web_settings,
        templates=templates,
        owns_triage=triage is None,
    )
    api.mount("/inbox/static", StaticFiles(directory=str(folder / "static")), name="static")

    from triage.web import intake, pages

    api.include_router(pages.router)
    api.include_router(intake.router)

    @api.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        return pages.login_page(request, status_code=401, message="Sign in to see the approvals inbox.")

    @api.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return pages.refusal_page(request, str(exc), status_code=403)

    @api.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        new_session = getattr(request.state, "new_session", None)
        if new_session:
            set_session_cookie(request, response, new_session, web_settings)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                "frame-ancestors 'none'",
            )
        return response

    return api


def set_session_cookie(request: Request, response: Response, session_id: str, web_settings: WebSettings) -> None:
    """Send the session cookie: HttpOnly, SameSite=Lax, Secure over HTTPS."""
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(web_settings.session_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


_built: dict[str, FastAPI] = {}


def __getattr__(name: str) -> FastAPI:
    """`app`: the web app on the environment's settings, built on first access (not at import).

    For `uvicorn triage.web.app:app` and for `http.app` in langgraph.json.
    """
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if "app" not in _built:
        _built["app"] = create_app()
    return _built["app"]
