"""The ticket intake API: a helpdesk or mail gateway posts tickets; each starts a run in the background.

`POST /api/tickets` answers 202 with the thread id and a status URL; `GET /api/threads/{id}` returns the result.
Both need `Authorization: Bearer <TRIAGE_INTAKE_TOKEN>`. A retried webhook that repeats its `Idempotency-Key`
gets the first thread back and starts nothing new.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from triage.errors import InvalidTicketError, ThreadNotFoundError
from triage.schemas import RunResult, Ticket
from triage.web.auth import web

router = APIRouter(prefix="/api", tags=["intake"])
_log = logging.getLogger(__name__)


class Accepted(BaseModel):
    """A ticket accepted for triage."""

    thread_id: str = Field(description="The run's thread id.")
    status_url: str = Field(description="Where the result will be: GET it with the same bearer token.")
    created: bool = Field(description="False when the Idempotency-Key was seen before (no new run started).")


class Pending(BaseModel):
    """A run accepted but not yet written to the checkpoint store."""

    thread_id: str
    status: str = "accepted"


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown bearer token."},
    413: {"model": Problem, "description": "Request body over the size limit."},
    422: {"model": Problem, "description": "Invalid ticket (the same message as `triage run`)."},
}


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
            "content": {"application/json": {"schema": Ticket.model_json_schema()}},
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
    try:
        ticket = await context.triage.acheck_ticket(body)
    except InvalidTicketError as exc:
        return _problem(422, str(exc))
    # A follow-up runs as its conversation's next turn, on the conversation's thread.
    thread_id = ticket.conversation_id or f"thr_{uuid.uuid4().hex}"
    key = idempotency_key or f"auto:{uuid.uuid4().hex}"
    try:
        thread_id, created = await asyncio.to_thread(context.store.claim_intake_key, key, thread_id, body)
    except ValueError:
        return _problem(409, "this Idempotency-Key was already used for a different ticket; use a new key")
    if created:
        task = asyncio.create_task(_run(context.triage, ticket, thread_id))
        context.runs.add(task)
        task.add_done_callback(context.runs.discard)
    accepted = Accepted(thread_id=thread_id, status_url=f"/api/threads/{thread_id}", created=created)
    return JSONResponse(accepted.model_dump(), status_code=202, headers={"Location": accepted.status_url})


async def _run(triage: Any, ticket: Ticket, thread_id: str) -> None:
    try:
        await triage.arun(ticket, thread_id=thread_id)
    except Exception:  # the run records its own failure; this is only what could not even start
        _log.exception("intake run %s could not start", thread_id)


@router.get(
    "/threads/{thread_id}",
    response_model=RunResult,
    responses={
        202: {"model": Pending, "description": "Accepted; the run has not written its first checkpoint yet."},
        401: _REFUSALS[401],
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
    try:
        view = await context.triage.athread(thread_id)
    except ThreadNotFoundError as exc:
        if await asyncio.to_thread(context.store.is_intake_thread, thread_id):
            return JSONResponse(Pending(thread_id=thread_id).model_dump(), status_code=202)
        return _problem(404, str(exc))
    return JSONResponse(view.result.model_dump(mode="json"))
