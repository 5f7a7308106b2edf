"""The model tier's client: `ChatOpenAI` against any OpenAI-compatible endpoint, and its failure classes.

One retry layer, deliberately: the openai client's own (`max_retries`, `TRIAGE_MODEL_MAX_RETRIES`). It retries 429s
honouring `retry-after` (or `retry-after-ms`), 408/409/5xx and connection errors and timeouts, with exponential
backoff and jitter, and never retries other 4xx. The graph's `classify` and `compose` nodes carry no LangGraph
`RetryPolicy`, so retries are never stacked. What is left after the client gave up is classified here
(`failure_kind`) and the cascade falls to the next tier or a person; nothing a model answers is retried except a
draft the verifier refused (once, with its findings).

Every call has a timeout (`TRIAGE_MODEL_TIMEOUT_SECONDS`), reports real token counts from the response's
`usage_metadata`, and is priced per 1k input and output tokens of its model.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.error import URLError
from urllib.request import Request, urlopen

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from triage.errors import TriageError
from triage.taxonomy import ALL_INTENTS, Route, Sentiment, Urgency

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.runnables import Runnable
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    from triage.settings import Settings

TierName = Literal["cheap", "strong"]
FailureKind = Literal[
    "rate_limited", "server_error", "unreachable", "timeout", "rejected", "refusal", "invalid_output", "over_budget"
]
TRANSIENT_FAILURES: frozenset[str] = frozenset({"rate_limited", "server_error", "unreachable", "timeout"})
"""Failures the client already retried (with backoff) before giving up; the rest are never retried."""

Intent = Literal[ALL_INTENTS]  # type: ignore[valid-type]


class ModelConfigError(TriageError):
    """The model tier's settings are inconsistent (e.g. a strong model without a cheap one, no key for OpenAI)."""


class ModelUnreachableError(TriageError):
    """The configured model endpoint does not answer; the message names the URL and what to do."""


class TierDecision(BaseModel):
    """What a model must answer when it classifies a ticket (its structured output)."""

    model_config = ConfigDict(extra="forbid")

    route: Route = Field(description="The specialist route that fits the customer's main request.")
    intent: Intent = Field(description="The intent within that route.")
    urgency: Urgency
    sentiment: Sentiment
    confidence: float = Field(ge=0.0, le=1.0, description="How sure the model is that the route is right.")
    rationale: str = Field(max_length=300, description="One short sentence.")


@dataclass
class ModelCall:
    """One model call, for the run's record: who was asked, what it cost, how it ended."""

    tier: str
    model: str
    outcome: str
    """ok, unsure, cached, or a `FailureKind`."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the checkpointed state."""
        return asdict(self)


class ModelCallError(Exception):
    """A model call that ended without a usable answer; `call` says how (its `outcome` is the failure kind)."""

    def __init__(self, call: ModelCall) -> None:
        super().__init__(f"{call.tier} model {call.model}: {call.outcome}: {call.detail}")
        self.call = call


def failure_kind(exc: BaseException) -> FailureKind:
    """Classify an exception from a model call, so the cascade can choose by class."""
    from langchain_core.exceptions import (
        ModelAPIError,
        ModelConnectionError,
        ModelError,
        ModelRateLimitError,
        ModelRefusalError,
        ModelTimeoutError,
        OutputParserException,
    )

    if isinstance(exc, ModelRefusalError):
        return "refusal"
    if isinstance(exc, ModelRateLimitError):
        return "rate_limited"
    if isinstance(exc, ModelTimeoutError):
        return "timeout"
    if isinstance(exc, ModelConnectionError):
        return "unreachable"
    if isinstance(exc, ModelAPIError):
        return "server_error"
    if isinstance(exc, OutputParserException | ValidationError | json.JSONDecodeError | ValueError):
        return "invalid_output"
    if isinstance(exc, ModelError):
        return "rejected"
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "unreachable"
    if isinstance(exc, openai.APIStatusError):
        return "server_error" if exc.status_code >= 500 else "rejected"
    return "invalid_output"


@dataclass(frozen=True)
class ModelSpec:
    """One configured tier: which model, and its prices."""

    tier: TierName
    model: str
    input_price_per_1k: float
    output_price_per_1k: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """What a call with these token counts costs, in USD."""
        return input_tokens / 1000 * self.input_price_per_1k + output_tokens / 1000 * self.output_price_per_1k


def model_specs(settings: Settings) -> list[ModelSpec]:
    """The configured tiers, cheap first; empty when no model is configured.

    Raises:
        ModelConfigError: a strong model without a cheap one.
    """
    if settings.strong_model and not settings.cheap_model:
        raise ModelConfigError("TRIAGE_STRONG_MODEL is set without TRIAGE_CHEAP_MODEL; set the cheap model too")
    specs: list[ModelSpec] = []
    if settings.cheap_model:
        specs.append(
            ModelSpec(
                "cheap", settings.cheap_model, settings.cheap_input_price_per_1k, settings.cheap_output_price_per_1k
            )
        )
    if settings.strong_model:
        specs.append(
            ModelSpec(
                "strong", settings.strong_model, settings.strong_input_price_per_1k, settings.strong_output_price_per_1k
            )
        )
    return specs


def chat_api_key(settings: Settings) -> SecretStr:
    """The key to send: the configured one, or a stand-in for a local server that needs none.

    Raises:
        ModelConfigError: no key and no base URL (the hosted default needs a key).
    """
    from pydantic import SecretStr

    if settings.model_api_key is not None:
        return settings.model_api_key
    if not settings.model_base_url:
        raise ModelConfigError(
            "TRIAGE_CHEAP_MODEL is set but neither TRIAGE_MODEL_BASE_URL nor TRIAGE_MODEL_API_KEY is; set the "
            "endpoint (e.g. the URL `triage dev-model-server` prints) or a key"
        )
    return SecretStr("not-needed")  # local servers (vLLM, Ollama, the dev server) accept any key


def build_chat_model(settings: Settings, model: str) -> ChatOpenAI:
    """A `ChatOpenAI` for `model` on the configured endpoint, with the per-call timeout and the one retry layer.

    Raises:
        ModelConfigError: no key and no base URL (the hosted default needs a key).
    """
    from langchain_openai import ChatOpenAI
    from openai import DefaultAsyncHttpxClient

    key = chat_api_key(settings)
    return ChatOpenAI(
        model=model,
        base_url=settings.model_base_url,
        api_key=key,
        timeout=settings.model_timeout_seconds,
        max_retries=settings.model_max_retries,
        temperature=0.0,
        # Our own connection pool, closed with the tier (`ChatTier.aclose`): the shared default one outlives event
        # loops and leaks sockets.
        http_async_client=DefaultAsyncHttpxClient(),
    )


class ChatTier:
    """One model tier: asks for structured decisions or text and accounts every call.

    A connection pool belongs to the event loop it was opened on, and one tier serves every app of a process (the
    eval runs each case's app on its own loop): so each loop gets its own client from `make_chat`, and `aclose`
    closes the running loop's one. A later call on another loop opens a fresh client.
    """

    def __init__(self, spec: ModelSpec, make_chat: Callable[[], ChatOpenAI]) -> None:
        self.spec = spec
        self._make_chat = make_chat
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[ChatOpenAI, Runnable[Any, Any]]]
        self._by_loop = weakref.WeakKeyDictionary()

    def _client(self) -> tuple[ChatOpenAI, Runnable[Any, Any]]:
        loop = asyncio.get_running_loop()
        found = self._by_loop.get(loop)
        if found is None:
            chat = self._make_chat()
            found = self._by_loop[loop] = (chat, chat.with_structured_output(TierDecision, include_raw=True))
        return found

    @property
    def chat(self) -> ChatOpenAI:
        """The running event loop's client."""
        return self._client()[0]

    async def decide(self, messages: list[BaseMessage]) -> tuple[TierDecision, ModelCall]:
        """Ask for a `TierDecision`.

        Raises:
            ModelCallError: the call failed (after the client's retries), was refused or answered off-schema.
        """
        started = time.perf_counter()
        try:
            answer: dict[str, Any] = await self._client()[1].ainvoke(messages)
        except Exception as exc:  # classified, never swallowed silently: the call record says what happened
            raise ModelCallError(self._call(failure_kind(exc), started, None, _short(exc))) from exc
        raw = answer.get("raw")
        error = answer.get("parsing_error")
        parsed = answer.get("parsed")
        if error is not None or not isinstance(parsed, TierDecision):
            kind = failure_kind(error) if error is not None else "invalid_output"
            raise ModelCallError(self._call(kind, started, raw, _short(error) if error else "no decision"))
        return parsed, self._call("ok", started, raw, "")

    async def write(self, messages: list[BaseMessage]) -> tuple[str, ModelCall]:
        """Ask for plain text.

        Raises:
            ModelCallError: the call failed (after the client's retries) or was refused.
        """
        started = time.perf_counter()
        try:
            message = await self.chat.ainvoke(messages)
        except Exception as exc:
            raise ModelCallError(self._call(failure_kind(exc), started, None, _short(exc))) from exc
        if message.additional_kwargs.get("refusal"):
            raise ModelCallError(self._call("refusal", started, message, str(message.additional_kwargs["refusal"])))
        text = message.content if isinstance(message.content, str) else ""
        return text, self._call("ok", started, message, "")

    async def tool_turn(
        self, messages: list[BaseMessage], tools: Sequence[Mapping[str, Any]]
    ) -> tuple[AIMessage, ModelCall]:
        """Offer `tools` (OpenAI function specs) and return the model's message, tool calls unvalidated.

        Raises:
            ModelCallError: the call failed (after the client's retries) or was refused.
        """
        started = time.perf_counter()
        try:
            message = await self.chat.bind_tools([dict(spec) for spec in tools]).ainvoke(messages)
        except Exception as exc:
            raise ModelCallError(self._call(failure_kind(exc), started, None, _short(exc))) from exc
        if message.additional_kwargs.get("refusal"):
            raise ModelCallError(self._call("refusal", started, message, str(message.additional_kwargs["refusal"])))
        return message, self._call("ok", started, message, "")

    async def aclose(self) -> None:
        """Close the running event loop's connection pool (other loops keep theirs)."""
        found = self._by_loop.pop(asyncio.get_running_loop(), None)
        client = found[0].http_async_client if found is not None else None
        if client is not None:
            await client.aclose()

    def _call(self, outcome: str, started: float, raw: Any, detail: str) -> ModelCall:
        usage = getattr(raw, "usage_metadata", None) or {}
        input_tokens, output_tokens = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        return ModelCall(
            tier=self.spec.tier,
            model=self.spec.model,
            outcome=outcome,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=round(self.spec.cost(input_tokens, output_tokens), 8),
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
            detail=detail,
        )


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def probe_endpoint(settings: Settings, *, timeout: float | None = None) -> list[str]:
    """List the endpoint's models (`GET {base}/models`), to prove it answers before any ticket is run.

    Raises:
        ModelUnreachableError: the endpoint refused, timed out or did not answer like an OpenAI-compatible server.
    """
    base = (settings.model_base_url or "https://api.openai.com/v1").rstrip("/")
    request = Request(f"{base}/models", headers={"accept": "application/json"})
    if settings.model_api_key is not None:
        request.add_header("authorization", f"Bearer {settings.model_api_key.get_secret_value()}")
    wait = timeout if timeout is not None else min(settings.model_timeout_seconds, 10.0)
    try:
        with urlopen(request, timeout=wait) as response:
            data = json.loads(response.read())
    except (URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelUnreachableError(
            f"model endpoint {base} did not answer ({reason}); start it, fix TRIAGE_MODEL_BASE_URL, or unset "
            "TRIAGE_CHEAP_MODEL to run on the local tier alone"
        ) from None
    return [str(item.get("id")) for item in data.get("data", []) if isinstance(item, dict)]
