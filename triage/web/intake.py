"""The ticket intake API: a helpdesk or mail gateway posts tickets; each starts a run in the background.

`POST /api/tickets` answers 202 with the thread id and a status URL; `GET /api/threads/{id}` returns the result.
Both need `Authorization: Bearer <TRIAGE_INTAKE_TOKEN>`. A retried webhook that repeats its `Idempotency-Key`
gets the first thread back and starts nothing new.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from triage.errors import (
    ConversationBusyError,
    InvalidReleaseError,
    InvalidTicketError,
    StoreUnavailableError,
    ThreadNotFoundError,
)
from triage.schemas import MESSAGE_ID_PATTERN, Release, RunResult, Ticket
from triage.web.auth import web

if TYPE_CHECKING:
    from triage.web.app import WebContext

router = APIRouter(prefix="/api", tags=["intake"])
RELEASE_KEY = "release:"
"""Idempotency keys of release follow-ups start with this (tickets' keys are the client's own)."""
_log = logging.getLogger(__name__)


class Accepted(BaseModel):
    """A ticket accepted for triage."""

    thread_id: str = Field(description="The run's thread id.")
    status_url: str = Field(description="Where the result will be: GET it with the same bearer token.")
    created: bool = Field(description="False when the Idempotency-Key was seen before (no new run started).")


class Pending(BaseModel):
    """A ticket accepted whose run has not finished: `accepted` (not started yet) or `running`."""

    thread_id: str
    status: Literal["accepted", "running"] = "accepted"


class GivenUp(BaseModel):
    """A ticket accepted whose run could not be started (e.g. the helpdesk no longer knows its customer)."""

    thread_id: str
    status: str = "rejected"
    detail: str


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown bearer token."},
    413: {"model": Problem, "description": "Request body over the size limit."},
    422: {"model": Problem, "description": "Invalid ticket (the same message as `triage run`)."},
}


def _intake_schema() -> dict[str, Any]:
    """The ticket's JSON schema with the email threading fields the intake also reads."""
    schema = Ticket.model_json_schema()
    header = {
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}],
        "default": None,
    }
    schema["properties"] |= {
        "in_reply_to": {
            **header,
            "title": "In-Reply-To",
            "description": "The email's In-Reply-To header: answering one of our replies continues its conversation.",
        },
        "references": {
            **header,
            "title": "References",
            "description": "The email's References header (message ids), read like in_reply_to, latest first.",
        },
    }
    return schema


def _problem(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def _unauthorised(request: Request, authorization: str | None) -> JSONResponse | None:
    expected = web(request).web_settings.intake_token
    if expected is None:
        return _problem(401, "intake is disabled: set TRIAGE_INTAKE_TOKEN on the server", **_CHALLENGE)
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        return _problem(401, "unknown bearer token: send Authorization: Bearer <TRIAGE_INTAKE_TOKEN>", **_CHALLENGE)
    return None


_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is over `limit` bytes (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            return None
    return bytes(body)


@router.post(
    "/tickets",
    status_code=202,
    response_model=Accepted,
    responses=_REFUSALS | {409: {"model": Problem, "description": "Idempotency-Key reused for another ticket."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _intake_schema()}},
        }
    },
    summary="Submit a ticket for triage",
)
async def submit_ticket(
    request: Request,
    authorization: str | None = Header(default=None, description="Bearer <TRIAGE_INTAKE_TOKEN>"),
    idempotency_key: str | None = Header(
        default=None, max_length=200, description="Repeat it on retries: the first thread is returned."
    ),
) -> Any:
    """Validate a ticket, start its run in the background, and answer with the thread id and a status URL."""
    refused = _unauthorised(request, authorization)
    if refused is not None:
        return refused
    context = web(request)
    limit = context.web_settings.intake_max_bytes
    body = await _read_limited(request, limit)
    if body is None:
        return _problem(413, f"request body over {limit} bytes; a ticket body has at most 20,000 characters")
    key = idempotency_key or f"auto:{uuid.uuid4().hex}"
    try:
        ticket = await _intake_ticket(context, body, key)
    except InvalidTicketError as exc:
        return _problem(422, str(exc))
    # A follow-up runs as its conversation's next turn, on the conversation's thread.
    thread_id = ticket.conversation_id or f"thr_{uuid.uuid4().hex}"
    try:
        thread_id, created = await asyncio.to_thread(context.store.claim_intake_key, key, thread_id, body)
    except ValueError:
        return _problem(409, "this Idempotency-Key was already used for a different ticket; use a new key")
    if created:
        start_run(context, ticket, thread_id, key)
    accepted = Accepted(thread_id=thread_id, status_url=f"/api/threads/{thread_id}", created=created)
    return JSONResponse(accepted.model_dump(), status_code=202, headers={"Location": accepted.status_url})


@router.post(
    "/releases",
    status_code=202,
    response_model=Accepted,
    responses=_REFUSALS | {409: {"model": Problem, "description": "Idempotency-Key reused for another release."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": Release.model_json_schema()}},
        }
    },
    summary="Follow up a shipped release",
)
async def submit_release(
    request: Request,
    authorization: str | None = Header(default=None, description="Bearer <TRIAGE_INTAKE_TOKEN>"),
    idempotency_key: str | None = Header(
        default=None, max_length=200, description="Repeat it on retries: the first thread is returned."
    ),
) -> Any:
    """Validate a release (version, fixes, notes), start its follow-up in the background, answer with the thread.

    The follow-up closes the engineering tickets the release fixes and tells each reporting customer once per
    release, however often it is posted; a mass notification waits in the approvals inbox.
    """
    from triage.state import RELEASE_THREAD_PREFIX

    refused = _unauthorised(request, authorization)
    if refused is not None:
        return refused
    context = web(request)
    limit = context.web_settings.intake_max_bytes
    body = await _read_limited(request, limit)
    if body is None:
        return _problem(413, f"request body over {limit} bytes; release notes have at most 20,000 characters")
    try:
        release = Release.model_validate_json(body)
    except InvalidReleaseError as exc:
        return _problem(422, str(exc))
    thread_id = f"{RELEASE_THREAD_PREFIX}{uuid.uuid4().hex}"
    key = f"{RELEASE_KEY}{idempotency_key or 'auto:' + thread_id}"
    try:
        thread_id, created = await asyncio.to_thread(context.store.claim_intake_key, key, thread_id, body)
    except ValueError:
        return _problem(409, "this Idempotency-Key was already used for a different release; use a new key")
    if created:
        start_run(context, release, thread_id, key)
    accepted = Accepted(thread_id=thread_id, status_url=f"/api/threads/{thread_id}", created=created)
    return JSONResponse(accepted.model_dump(), status_code=202, headers={"Location": accepted.status_url})


async def _intake_ticket(context: WebContext, body: bytes, key: str) -> Ticket:
    """The ticket an intake body holds, as its run takes it.

    A follow-up where its email headers say so, and with the intake key as its message id unless it names one (so
    a follow-up run again is taken in once).

    Raises:
        InvalidTicketError: the body is not a valid ticket (the same messages as `triage run`).
    """
    ticket = await context.triage.acheck_ticket(await _thread_by_headers(context, body))
    if ticket.message_id is None and MESSAGE_ID.match(key):
        ticket = ticket.model_copy(update={"message_id": key})
    return ticket


MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)
NOT_RUN = "it was not run: send it again with a new Idempotency-Key"
"""The end of a 410's detail for a ticket given up after it could not run."""

EMAIL_THREADING_FIELDS = ("in_reply_to", "references")
"""Fields an email intake may add to a ticket: its In-Reply-To and References headers (a string, or a list)."""


async def _thread_by_headers(context: WebContext, body: bytes) -> bytes | dict[str, Any]:
    """The ticket without its email threading fields, as a follow-up to the conversation they answer (if any).

    A body that is not a JSON object, or has no such field, is passed on as it is (the ticket check reports it).

    Raises:
        InvalidTicketError: a threading field is not a string or a list of strings, or the headers answer another
            conversation than the ticket's conversation_id.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or not any(field in data for field in EMAIL_THREADING_FIELDS):
        return body
    headers = {field: data.pop(field, None) for field in EMAIL_THREADING_FIELDS}
    for field, value in headers.items():
        if not (
            value is None
            or isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(item, str) for item in value))
        ):
            raise InvalidTicketError(f"invalid ticket: {field}: must be a string or a list of message ids")
    found = await context.triage.aconversation_replied_to(headers["in_reply_to"], headers["references"])
    if found is not None:
        given = data.get("conversation_id")
        if given is not None and given != found:
            raise InvalidTicketError(
                f"invalid ticket: the email answers conversation {found} but conversation_id is {given}: give one"
            )
        data["conversation_id"] = found
    return data


def start_run(context: WebContext, job: Ticket | Release, thread_id: str, key: str, *, last_try: bool = False) -> None:
    """Run a ticket (or release follow-up) accepted under the intake key `key` in the background on this server."""
    task = asyncio.create_task(_run(context, job, thread_id, key, last_try=last_try))
    context.runs.add(task)
    task.add_done_callback(context.runs.discard)


async def _run(context: WebContext, job: Ticket | Release, thread_id: str, key: str, *, last_try: bool = False) -> None:
    store = context.store
    follow_up = isinstance(job, Ticket) and job.conversation_id is not None
    claimed = asyncio.create_task(_keep_claimed(context, key))
    try:
        if isinstance(job, Release):
            await context.triage.arelease(job.version, job.fixes, job.notes, thread_id=thread_id)
        else:
            await _run_ticket(context, job, thread_id)
    except ConversationBusyError as exc:  # a follow-up whose conversation stayed busy through its retries
        await _not_now(context, key, thread_id, exc, last_try=last_try)
        return
    except (InvalidTicketError, InvalidReleaseError) as exc:  # e.g. the customer was deleted after acceptance
        await asyncio.to_thread(store.intake_given_up, key, str(exc))
        return
    except StoreUnavailableError as exc:
        if exc.thread_id is None or follow_up:
            # Nothing written; or a follow-up, which a later run takes in once (its message id) whether or not this
            # one saved its turn: the restart sweep tries again, up to the allowed attempts.
            await _not_now(context, key, thread_id, exc, last_try=last_try)
            return
        _log.warning("intake run %s stopped (%s); `triage recover` retries it", thread_id, exc)
    except Exception:  # the run records its own failure; this is only what could not even start
        _log.exception("intake run %s could not start", thread_id)
        if last_try:
            await asyncio.to_thread(store.intake_given_up, key, "the run could not start")
        return
    finally:
        claimed.cancel()
    await asyncio.to_thread(store.intake_started, key)


async def _not_now(context: WebContext, key: str, thread_id: str, exc: Exception, *, last_try: bool) -> None:
    """A run that could not go through now: the restart sweep tries it again, or, at its last try, it is given up."""
    if last_try:
        _log.warning("intake run %s could not run (%s), at its last try: given up", thread_id, exc)
        await asyncio.to_thread(context.store.intake_given_up, key, f"{exc}; {NOT_RUN}")
        return
    _log.warning("intake run %s could not run now (%s); it will be tried again", thread_id, exc)


async def _keep_claimed(context: WebContext, key: str) -> None:
    """While the run goes on, keep the intake claimed, so that no restart sweep takes it for abandoned."""
    every = context.web_settings.intake_retry_seconds / 3
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(context.store.keep_intake_claimed, key)
        except Exception:  # the store busy for a moment: the next beat, or the sweep at worst, sees to it
            _log.warning("could not renew the claim on intake %s", key, exc_info=True)


async def _run_ticket(context: WebContext, ticket: Ticket, thread_id: str) -> None:
    """Run the ticket; a follow-up whose conversation's last turn still runs in another process is tried again.

    In this process a follow-up waits for the turn before it (`TriageApp` holds a thread while a turn runs); another
    process's first turn holds no lease, so the follow-up is refused as busy until that turn ends. It is sent
    again, less and less often, for up to `conversation_wait_seconds`.

    Raises:
        ConversationBusyError: the last turn still ran when the time was up.
    """
    deadline = time.monotonic() + context.triage.settings.conversation_wait_seconds
    pause = 0.05
    while True:
        try:
            await context.triage.arun(ticket, thread_id=thread_id)
            return
        except ConversationBusyError:
            if ticket.conversation_id is None or time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


async def restart_unstarted(context: WebContext) -> list[str]:
    """Start the accepted tickets whose runs never started (a server stopped in between); returns their threads.

    A new ticket whose thread exists already started (an interrupted run is `triage recover`'s); the others are taken
    on by compare-and-set, so of several servers looking at once, one runs each. A follow-up is run again: its
    message id (the intake key, unless it names one) makes a conversation take it in once.
    """
    settings = context.web_settings
    lease = timedelta(seconds=settings.intake_retry_seconds)
    started: list[str] = []
    for intake in await asyncio.to_thread(context.store.unstarted_intakes, lease):
        try:
            job: Ticket | Release = (
                Release.model_validate_json(intake.body)
                if intake.key.startswith(RELEASE_KEY)
                else await _intake_ticket(context, intake.body, intake.key)
            )
        except (InvalidTicketError, InvalidReleaseError) as exc:
            await asyncio.to_thread(context.store.intake_given_up, intake.key, str(exc))
            continue
        # A new thread that exists has started (an interrupted run is `triage recover`'s). A follow-up's thread is
        # its conversation's and existed before it: it is run again, and taken in once (its message id).
        if not (isinstance(job, Ticket) and job.conversation_id is not None):
            try:
                await context.triage.athread(intake.thread_id)
            except ThreadNotFoundError:
                pass
            else:
                await asyncio.to_thread(context.store.intake_started, intake.key)
                continue
        if intake.attempts >= settings.intake_attempts:
            reason = f"the run could not be started in {intake.attempts} tries; submit the ticket again"
            await asyncio.to_thread(context.store.intake_given_up, intake.key, reason)
            continue
        if not await asyncio.to_thread(context.store.take_on_intake, intake):
            continue  # another server took it on
        start_run(context, job, intake.thread_id, intake.key, last_try=intake.attempts + 1 >= settings.intake_attempts)
        started.append(intake.thread_id)
    return started


async def keep_restarting(context: WebContext) -> None:
    """Look for unstarted intake runs at start-up and then every `intake_retry_seconds`, until cancelled."""
    while True:
        try:
            await restart_unstarted(context)
        except Exception:  # a store hiccup: log it and look again later
            _log.exception("looking for unstarted intake runs failed")
        await asyncio.sleep(context.web_settings.intake_retry_seconds)


@router.get(
    "/threads/{thread_id}",
    response_model=RunResult,
    responses={
        202: {"model": Pending, "description": "Accepted; the run has not started or not finished yet."},
        401: _REFUSALS[401],
        410: {"model": GivenUp, "description": "Accepted, but its run could not be started; the reason says why."},
        404: {"model": Problem, "description": "No such thread."},
    },
    summary="The result of a run",
)
async def thread_result(request: Request, thread_id: str, authorization: str | None = Header(default=None)) -> Any:
    """The run's result: its status (awaiting_approval, completed, escalated, failed), route, actions and reply."""
    refused = _unauthorised(request, authorization)
    if refused is not None:
        return refused
    context = web(request)
    intake = await asyncio.to_thread(context.store.intake_state, thread_id)
    if intake is not None:
        returned, failure = intake
        if failure is not None:
            return JSONResponse(GivenUp(thread_id=thread_id, detail=failure).model_dump(), status_code=410)
        if not returned:  # accepted, or running: a run that stopped half-way is marked so by the next sweep
            status = "running" if await _thread_exists(context, thread_id) else "accepted"
            return JSONResponse(Pending(thread_id=thread_id, status=status).model_dump(), status_code=202)
    try:
        view = await context.triage.athread(thread_id)
    except ThreadNotFoundError as exc:
        return _problem(404, str(exc))
    return JSONResponse(view.result.model_dump(mode="json"))


async def _thread_exists(context: WebContext, thread_id: str) -> bool:
    try:
        await context.triage.athread(thread_id)
    except ThreadNotFoundError:
        return False
    return True
