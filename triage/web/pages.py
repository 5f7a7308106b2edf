"""Server-rendered pages: sign-in, the approvals inbox, decisions, and the thread page.

Every page works without JavaScript. Decisions go through `TriageApp.aresume` with the signed-in identity as the
approver, so the app's own checks (roles, distinct approvers, staleness, concurrent decisions) apply unchanged.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from triage.errors import (
    ApprovalRefusedError,
    InvalidDecisionError,
    ThreadNotFoundError,
    TriageError,
)
from triage.web.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Forbidden,
    Identity,
    check_csrf,
    client_address,
    identify,
    require_approver,
    web,
)
from triage.web.views import ApprovalRow, cents_from_units, field, money

router = APIRouter(include_in_schema=False)


def render(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """Render a page template with the signed-in identity (if any) and the values given."""
    response: HTMLResponse = web(request).templates.TemplateResponse(
        request, template, {"money": money, **values}, status_code=status_code
    )
    return response


def login_page(request: Request, *, status_code: int = 200, message: str = "", next_url: str = "") -> HTMLResponse:
    """The sign-in form, with a fresh login CSRF token in a cookie and in the form (double submit)."""
    token = secrets.token_urlsafe(32)
    target = next_url or (request.url.path if request.method == "GET" and request.url.path != "/inbox/login" else "")
    response = render(
        request, "login.html", status_code=status_code, csrf=token, message=message, next_url=_safe_next(target)
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
    )
    return response


def refusal_page(
    request: Request, message: str, *, status_code: int, thread_id: str | None = None, identity: Identity | None = None
) -> HTMLResponse:
    """A page that says what was refused and why, with the way back."""
    return render(
        request, "refused.html", status_code=status_code, message=message, thread_id=thread_id, identity=identity
    )


def _safe_next(target: str) -> str:
    """Only same-site paths may be returned to after sign-in."""
    return target if target.startswith("/") and not target.startswith("//") else "/inbox"


@router.get("/")
async def home() -> RedirectResponse:
    """The inbox is the start page."""
    return RedirectResponse("/inbox", status_code=303)


@router.get("/inbox/healthz")
async def healthz() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok"}


@router.get("/inbox/login")
async def login_form(request: Request, next: str = "/inbox") -> HTMLResponse:
    """The sign-in form."""
    return login_page(request, next_url=next)


@router.post("/inbox/login")
async def login(request: Request) -> Response:
    """Sign in with an approver id and password; failures are throttled per person and per address."""
    from triage.web.app import set_session_cookie

    context = web(request)
    settings = context.web_settings
    form = await request.form()
    approver_id = str(form.get("approver", "")).strip()
    password = str(form.get("password", ""))
    next_url = _safe_next(str(form.get("next", "/inbox")))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not secrets.compare_digest(cookie, str(form.get("csrf", ""))):
        return login_page(request, status_code=403, message="The sign-in form expired; please try again.")
    address = client_address(request)
    window = timedelta(minutes=settings.login_window_minutes)
    if await asyncio.to_thread(context.store.recent_failures, approver_id, address, window) >= settings.login_attempts:
        response = login_page(
            request,
            status_code=429,
            message=f"Too many failed sign-ins; wait {settings.login_window_minutes:.0f} minutes and try again.",
        )
        response.headers["Retry-After"] = str(int(window.total_seconds()))
        return response
    known = context.policy.approvals.role_of(approver_id) is not None
    if not (await asyncio.to_thread(context.store.check_password, approver_id, password) and known):
        await asyncio.to_thread(context.store.record_failure, approver_id, address)
        return login_page(request, status_code=401, message="Unknown approver or wrong password.", next_url=next_url)
    await asyncio.to_thread(context.store.clear_failures, approver_id)
    return await _signed_in(request, approver_id, next_url, set_session_cookie)


async def _signed_in(request: Request, approver_id: str, next_url: str, set_cookie: Any) -> Response:
    context = web(request)
    session_id, _ = await asyncio.to_thread(
        context.store.create_session, approver_id, timedelta(hours=context.web_settings.session_hours)
    )
    response = RedirectResponse(next_url, status_code=303)
    set_cookie(request, response, session_id, context.web_settings)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.get("/inbox/login/link")
async def login_link_form(request: Request, token: str = "") -> HTMLResponse:
    """The page a one-time link opens: a button, so link scanners that fetch the URL do not spend it."""
    return render(request, "link.html", token=token)


@router.post("/inbox/login/link")
async def login_link(request: Request) -> Response:
    """Spend a one-time login token and sign in."""
    from triage.web.app import set_session_cookie

    context = web(request)
    form = await request.form()
    approver_id = await asyncio.to_thread(context.store.use_login_link, str(form.get("token", "")))
    if approver_id is None or context.policy.approvals.role_of(approver_id) is None:
        return login_page(
            request,
            status_code=401,
            message="That sign-in link is used, expired or unknown; ask for a new one "
            "(`triage approvers login-link ID`) or sign in with your password.",
        )
    return await _signed_in(request, approver_id, "/inbox", set_session_cookie)


@router.post("/inbox/logout")
async def logout(request: Request) -> Response:
    """End the session everywhere (the session id stops working on the server)."""
    identity = await identify(request)
    if identity is not None:
        form = await request.form()
        check_csrf(identity, str(form.get("csrf", "")))
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            await asyncio.to_thread(web(request).store.end_session, session_id)
    response = RedirectResponse("/inbox/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/inbox")
async def inbox(request: Request, tier: str = "", action: str = "", overdue: str = "", page: int = 1) -> HTMLResponse:
    """Pending approvals, oldest first, filtered by tier, action and overdue, a page at a time."""
    identity = await require_approver(request)
    context = web(request)
    groups = await context.triage.apending_counts()
    shown_total = sum(
        g.count
        for g in groups
        if (not tier or g.tier == tier) and (not action or g.action == action) and (not overdue or g.overdue)
    )
    size = context.web_settings.page_size
    pages = max((shown_total + size - 1) // size, 1)
    page = min(max(page, 1), pages)
    visible = [
        ApprovalRow.of(p)
        for p in await context.triage.apending_approvals(
            tier=tier or None, action=action or None, overdue=bool(overdue), limit=size, offset=(page - 1) * size
        )
    ]
    tiers: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    for g in groups:
        tiers[g.tier] += g.count
        actions[g.action] += g.count
    customers = await _customers(context.triage, {r.customer_id for r in visible if r.customer_id})
    filters = {"tier": tier, "action": action, "overdue": overdue}
    return render(
        request,
        "inbox.html",
        identity=identity,
        rows=visible,
        customers=customers,
        total=sum(g.count for g in groups),
        overdue_total=sum(g.count for g in groups if g.overdue),
        shown_total=shown_total,
        tiers=sorted(tiers.items()),
        actions=sorted(actions.items()),
        filters=filters,
        page=page,
        pages=pages,
        page_url=lambda n: "/inbox?" + urlencode({**{k: v for k, v in filters.items() if v}, "page": n}),
        now=datetime.now(UTC),
    )


async def _customers(triage: Any, ids: set[str]) -> dict[str, dict[str, Any]]:
    found = await asyncio.gather(*(triage.acustomer(i) for i in sorted(ids)))
    return {i: c for i, c in zip(sorted(ids), found, strict=True) if c is not None}


@router.get("/inbox/threads/{thread_id}")
async def thread_page(request: Request, thread_id: str, decided: str = "") -> HTMLResponse:
    """A thread: result, pending approval, reply, node-by-node timeline and audit trail."""
    identity = await require_approver(request)
    context = web(request)
    try:
        view = await context.triage.athread(thread_id)
    except ThreadNotFoundError as exc:
        return refusal_page(request, str(exc), status_code=404, identity=identity)
    result = view.result
    pending = (
        ApprovalRow.of({**result.pending_approval, "follow_ups": result.follow_ups})
        if result.pending_approval
        else None
    )
    customer_id = pending.customer_id if pending else _customer_of(result.actions)
    customer = await context.triage.acustomer(customer_id) if customer_id else None
    return render(
        request,
        "thread.html",
        identity=identity,
        view=view,
        result=result,
        pending=pending,
        customer=customer,
        decided=decided,
        total_ms=sum(e.duration_ms for e in view.timeline),
    )


def _customer_of(actions: Any) -> str | None:
    """The customer a thread's actions were for, if any says."""
    for action in actions:
        found = field(field(action, "details") or {}, "customer_id")
        if found:
            return str(found)
    return None


_CONFLICT_STATUS = 409


def _status_of(exc: TriageError) -> int:
    """The HTTP status of a refused decision."""
    if isinstance(exc, ApprovalRefusedError):
        return 403
    if isinstance(exc, InvalidDecisionError):
        return 422
    if isinstance(exc, ThreadNotFoundError):
        return 404
    return _CONFLICT_STATUS  # stale, not awaiting approval, or another decision won


@router.post("/inbox/threads/{thread_id}/decision")
async def decide(request: Request, thread_id: str) -> Response:
    """Approve, reject or edit the thread's pending approval as the signed-in approver."""
    identity = await require_approver(request)
    context = web(request)
    form = await request.form()
    check_csrf(identity, str(form.get("csrf", "")))
    kind = str(form.get("decision", ""))
    reason = str(form.get("reason", "")).strip()
    decision: dict[str, Any] = {
        "approver": identity.approver_id,  # never a form field: the signed-in identity decides
        "decision": kind,
        "reason": reason,
        "approval_id": str(form.get("approval_id", "")) or None,
    }
    if kind == "edit":
        try:
            decision["args"] = {"amount_cents": cents_from_units(str(form.get("amount", "")))}
        except ValueError as exc:
            return refusal_page(request, str(exc), status_code=422, thread_id=thread_id, identity=identity)
        decision["reason"] = reason or "edited amount"
    elif kind not in ("approve", "reject"):
        return refusal_page(
            request, "choose approve, reject or edit", status_code=422, thread_id=thread_id, identity=identity
        )
    async with context.thread_lock(thread_id):
        try:
            await _refuse_own_ticket(context.triage, identity, thread_id)
            await context.triage.aresume(thread_id, decision)
        except Forbidden as exc:
            return refusal_page(request, str(exc), status_code=403, thread_id=thread_id, identity=identity)
        except TriageError as exc:
            return refusal_page(request, str(exc), status_code=_status_of(exc), thread_id=thread_id, identity=identity)
    return RedirectResponse(f"/inbox/threads/{thread_id}?decided={kind}", status_code=303)


async def _refuse_own_ticket(triage: Any, identity: Identity, thread_id: str) -> None:
    """Nobody decides on a ticket of their own: the customer's email must not be the approver's."""
    if identity.email is None:
        return
    view = await triage.athread(thread_id)
    pending = view.result.pending_approval
    if not pending:
        return
    customer_id = ApprovalRow.of(pending).customer_id
    customer = await triage.acustomer(customer_id) if customer_id else None
    if customer is not None and str(customer.get("email", "")).lower() == identity.email.lower():
        raise Forbidden(
            f"this ticket is from {customer['email']}, which is your own email: another approver must decide it"
        )
