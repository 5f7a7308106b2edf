"""Who is asking: a session cookie, or a trusted single-sign-on proxy; and the CSRF check on every form."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from triage.web.app import WebContext

SESSION_COOKIE = "triage_session"
LOGIN_CSRF_COOKIE = "triage_login_csrf"


@dataclass(frozen=True)
class Identity:
    """A signed-in approver: their id and role from the approval policy, and their forms' CSRF token."""

    approver_id: str
    role: str | None
    email: str | None
    csrf: str


class NotSignedIn(Exception):
    """No valid session (401)."""


class Forbidden(Exception):
    """Signed in, but not allowed (403); the message says why."""


def web(request: Request) -> WebContext:
    """The web app's shared state."""
    context: WebContext = request.app.state.web
    return context


def client_address(request: Request) -> str:
    """The peer address of the request."""
    return request.client.host if request.client else "unknown"


async def identify(request: Request) -> Identity | None:
    """The signed-in person, from a trusted proxy's header or the session cookie; None when nobody is."""
    context = web(request)
    settings = context.web_settings
    proxied = request.headers.get(settings.identity_header) if settings.trusted_proxies else None
    session_id = request.cookies.get(SESSION_COOKIE)
    session = await asyncio.to_thread(context.store.session, session_id) if session_id else None
    vouched = proxied and client_address(request) in settings.trusted_proxies
    if vouched and (session is None or session.approver_id != proxied):
        # The proxy vouches for this person: give them a session (forms need its CSRF token).
        new_id, session = await asyncio.to_thread(
            context.store.create_session, str(proxied), timedelta(hours=settings.session_hours)
        )
        request.state.new_session = new_id
    if session is None:
        return None
    approver = context.policy.approvals.approver(session.approver_id)
    return Identity(
        approver_id=session.approver_id,
        role=approver.role if approver else None,
        email=approver.email if approver else None,
        csrf=session.csrf,
    )


async def require_approver(request: Request) -> Identity:
    """The signed-in approver; `NotSignedIn` (401) without a session, `Forbidden` (403) without a role."""
    identity = await identify(request)
    if identity is None:
        raise NotSignedIn
    if identity.role is None:
        raise Forbidden(
            f"'{identity.approver_id}' is not an approver in the approval policy any more; ask an administrator"
        )
    return identity


def check_csrf(identity: Identity, token: str | None) -> None:
    """Refuse a form whose CSRF token is not the session's (403)."""
    if not token or not hmac.compare_digest(token, identity.csrf):
        raise Forbidden("this form is out of date or did not come from this site (bad CSRF token); reload the page")
