"""A small OpenAI-compatible chat-completions server for tests and demos: real HTTP on 127.0.0.1, no network.

It answers `POST /v1/chat/completions` the way a hosted model would, in shape if not in wit:

- structured output, both as `response_format={"type": "json_schema", ...}` and as a forced function call; for a
  triage decision schema (route, intent, ...) the answer comes from keyword rules over the ticket between
  `<ticket>` delimiters, so the server is a useful stand-in for a real model;
- tool calls: with tools offered and none forced, it calls the first tool once, then answers in text; a scripted
  `{"tool_calls": [{"name": ..., "arguments": {...} or "raw text"}]}` answers with exactly those calls (any name,
  arguments that need not be JSON: a model misbehaving on purpose);
- plain text: a reply between `<reply>` delimiters is returned with a friendlier closing line;
- usage figures (`prompt_tokens`, `completion_tokens`) counted from what it received and wrote.

Every request body is recorded (`received`), so a test can prove what did, and did not, leave the process. Faults are
injected on request, for the next N requests or for one model only: a 429 with `retry-after`, a 500, a 400, a slow
answer, malformed JSON (in the content, or the whole body) and a refusal. Scripted answers override the rules.
Tests drive it in-process (`DevModelServer().start()`); `triage dev-model-server` serves it from a shell, and
`/_dev/faults`, `/_dev/script` and `/_dev/requests` drive it over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = ["DEV_MODELS", "DevModelServer", "Fault", "count_tokens"]

DEV_MODELS = ("dev-cheap", "dev-strong")
FaultKind = Literal["rate_limit", "server_error", "bad_request", "slow", "malformed", "malformed_body", "refusal"]

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """A deterministic token count: words and punctuation marks (close enough to a BPE count for accounting)."""
    return len(_TOKEN.findall(text))


@dataclass
class Fault:
    """A fault to inject into the next matching requests."""

    kind: FaultKind
    times: int = 1
    model: str | None = None
    """Only requests for this model (None: any)."""
    retry_after: float = 1.0
    """Seconds in the `retry-after` header of a 429."""
    delay: float = 2.0
    """Seconds a slow answer waits."""


@dataclass
class _Script:
    answer: Any
    """A dict (structured output / tool arguments) or a string (text content)."""
    times: int = 1
    model: str | None = None


# Keyword rules for the dev server's own judgment: intent -> phrases (lower case; a phrase scores its word count).
_RULES: dict[str, tuple[str, ...]] = {
    "duplicate_charge": ("charged twice", "double charge", "double billed", "two charges", "billed twice", "twice"),
    "failed_payment": ("declined", "payment failed", "did not go through", "didn't go through", "past due"),
    "refund_request": ("refund", "money back", "reimburse"),
    "invoice_request": ("invoice", "receipt", "vat"),
    "billing_question": ("billing", "price", "pricing", "fee", "charge", "payment method", "subscription cost"),
    "troubleshooting": ("error", "not working", "stopped working", "crash", "won't load", "doesn't work", "broken"),
    "bug_report": ("bug", "wrong result", "reproduce", "glitch"),
    "outage": ("down", "outage", "unreachable", "503", "502", "nobody can"),
    "integration_help": ("api", "webhook", "sdk", "sso", "integration", "token"),
    "password_reset": ("password", "reset link", "forgot", "can't log in", "cannot log in"),
    "account_locked": ("locked", "suspended", "disabled", "locked out"),
    "email_change": ("change my email", "new email", "email address", "login email"),
    "profile_update": ("profile", "address", "phone number", "newsletter", "notification"),
    "plan_change": ("upgrade", "downgrade", "plan", "cancel my subscription", "switch"),
    "account_deletion": ("delete my account", "close my account", "erase", "remove my account"),
    "data_export": ("export", "copy of my data", "gdpr", "my personal data"),
    "signup_help": ("sign up", "signup", "verification email", "create an account", "register"),
    "product_question": ("does it", "feature", "support for", "available", "can i use"),
    "order_question": ("order", "delivery", "shipping", "tracking", "parcel"),
    "feedback": ("love", "great", "suggestion", "thank you", "feedback"),
    "contact_info": ("opening hours", "phone", "reach you", "contact"),
    "complaint": ("complaint", "unacceptable", "disgusted", "terrible service"),
    "legal_threat": ("lawyer", "lawsuit", "sue", "court", "regulator", "chargeback"),
    "security_report": ("hacked", "breach", "fraud", "unauthorised", "unauthorized", "phishing"),
    "human_agent_request": ("human", "real person", "manager", "speak to someone"),
}
_ROUTE_OF: dict[str, str] = {
    **dict.fromkeys(
        ("duplicate_charge", "failed_payment", "refund_request", "invoice_request", "billing_question"), "billing"
    ),
    **dict.fromkeys(("troubleshooting", "bug_report", "outage", "integration_help"), "technical"),
    **dict.fromkeys(
        (
            "password_reset",
            "account_locked",
            "email_change",
            "profile_update",
            "plan_change",
            "account_deletion",
            "data_export",
            "signup_help",
        ),
        "account",
    ),
    **dict.fromkeys(("product_question", "order_question", "feedback", "contact_info", "other"), "general"),
    **dict.fromkeys(("complaint", "legal_threat", "security_report", "human_agent_request"), "escalation"),
}
_URGENT = ("urgent", "asap", "immediately", "right now", "emergency", "critical")
_ANGRY = ("furious", "unacceptable", "ridiculous", "angry", "worst", "disgusted")
_NEGATIVE = ("annoyed", "frustrated", "disappointed", "problem", "not happy", "still")
_POSITIVE = ("thanks", "thank you", "great", "love", "appreciate")


def _between(text: str, tag: str) -> str | None:
    match = re.search(rf"<{tag}>\s*(.*?)\s*</{tag}>", text, re.S)
    return match.group(1) if match else None


def rule_decision(ticket: str, *, allowed_intents: frozenset[str] | None = None) -> dict[str, Any]:
    """The dev server's own decision for a ticket: keyword rules, a confidence from how much matched."""
    text = f" {ticket.lower()} "
    scores: dict[str, int] = {}
    for intent, phrases in _RULES.items():
        if allowed_intents is not None and intent not in allowed_intents:
            continue
        score = sum(len(p.split()) for p in phrases if re.search(rf"(?<!\w){re.escape(p)}(?!\w)", text))
        if score:
            scores[intent] = score
    if scores:
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        intent, best = ranked[0]
        margin = best - (ranked[1][1] if len(ranked) > 1 else 0)
        confidence = min(0.95, 0.5 + 0.1 * best + 0.1 * margin)
        rationale = f"keywords for {intent}"
    else:
        intent, confidence, rationale = "other", 0.3, "no keyword matched"
    urgency = "high" if any(word in text for word in _URGENT) else "normal"
    if any(word in text for word in _ANGRY):
        sentiment = "angry"
    elif any(word in text for word in _NEGATIVE):
        sentiment = "negative"
    elif any(word in text for word in _POSITIVE):
        sentiment = "positive"
    else:
        sentiment = "neutral"
    return {
        "route": _ROUTE_OF.get(intent, "general"),
        "intent": intent,
        "urgency": urgency,
        "sentiment": sentiment,
        "confidence": round(confidence, 2),
        "rationale": rationale,
    }


def _example_of(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Any:
    """A minimal value that satisfies `schema` (for schemas the rules do not know)."""
    if "$ref" in schema:
        return _example_of(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return _example_of(schema["anyOf"][0], defs)
    kind = schema.get("type")
    if kind == "object":
        return {name: _example_of(sub, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return []
    return {"string": "", "integer": 0, "number": 0.0, "boolean": False, "null": None}.get(str(kind), "")


class DevModelServer:
    """The dev model server. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._faults: list[Fault] = []
        self._scripts: list[_Script] = []
        self.received: list[dict[str, Any]] = []
        """Every chat-completions request body, in order."""
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The value for `TRIAGE_MODEL_BASE_URL`."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> DevModelServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="dev-model-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

    def stop(self) -> None:
        """Stop serving and close the socket (slow answers in flight are cut short)."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> DevModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, fault: Fault) -> None:
        """Make the next `fault.times` matching requests fail this way."""
        with self._lock:
            self._faults.append(fault)

    def script(self, answer: Any, *, times: int = 1, model: str | None = None) -> None:
        """Answer the next `times` matching requests with `answer`.

        A dict is the structured output (or, with a `tool_calls` key, the tool calls to make); a string is text.
        """
        with self._lock:
            self._scripts.append(_Script(answer=answer, times=times, model=model))

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        """The recorded requests addressed to `model`."""
        with self._lock:
            return [body for body in self.received if body.get("model") == model]

    def received_text(self) -> str:
        """Everything every recorded request carried, as one string (for leak checks)."""
        with self._lock:
            return "\n".join(json.dumps(body, ensure_ascii=False) for body in self.received)

    def clear(self) -> None:
        """Forget recorded requests, faults and scripts."""
        with self._lock:
            self.received.clear()
            self._faults.clear()
            self._scripts.clear()

    # -- answering --------------------------------------------------------------------------------------------

    def _take(self, pending: list[Any], model: str) -> Any:
        with self._lock:
            for item in pending:
                if item.model is None or item.model == model:
                    item.times -= 1
                    if item.times <= 0:
                        pending.remove(item)
                    return item
        return None

    def _respond(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        model = str(body.get("model", ""))
        with self._lock:
            self.received.append(body)
        fault: Fault | None = self._take(self._faults, model)
        if fault is not None:
            if fault.kind == "rate_limit":
                return _error(429, "rate_limit_exceeded", "Rate limit reached", {"retry-after": f"{fault.retry_after}"})
            if fault.kind == "server_error":
                return _error(500, "server_error", "The server had an error while processing your request")
            if fault.kind == "bad_request":
                return _error(400, "invalid_request_error", "Invalid request")
            if fault.kind == "malformed_body":
                return 200, {"content-type": "application/json"}, b'{"id": "chatcmpl-broken", "choices": [{'
            if fault.kind == "slow":
                self._stopping.wait(fault.delay)
        script: _Script | None = self._take(self._scripts, model)
        message, finish = self._answer(body, script.answer if script else None, fault.kind if fault else None)
        prompt = json.dumps(body.get("messages", []), ensure_ascii=False) + json.dumps(
            [body.get("tools"), body.get("response_format")]
        )
        completion = json.dumps(message, ensure_ascii=False)
        prompt_tokens, completion_tokens = count_tokens(prompt), count_tokens(completion)
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return 200, {"content-type": "application/json"}, json.dumps(payload).encode()

    def _answer(self, body: dict[str, Any], scripted: Any, fault: str | None) -> tuple[dict[str, Any], str]:
        messages = body.get("messages", [])
        last_user = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if fault == "refusal":
            message["refusal"] = "I'm sorry, I can't help with that request."
            return message, "stop"
        schema, forced_tool = _wanted_schema(body)
        tools = body.get("tools") or []
        if schema is not None:
            answer = scripted if scripted is not None else self._structured(schema, last_user)
            text = "{not json" if fault == "malformed" else (answer if isinstance(answer, str) else json.dumps(answer))
            if forced_tool:
                message["tool_calls"] = [_tool_call(forced_tool, text)]
                return message, "tool_calls"
            message["content"] = text
            return message, "stop"
        if isinstance(scripted, dict) and "tool_calls" in scripted:
            message["tool_calls"] = [
                _tool_call(
                    str(wanted["name"]),
                    wanted["arguments"] if isinstance(wanted["arguments"], str) else json.dumps(wanted["arguments"]),
                )
                for wanted in scripted["tool_calls"]
            ]
            message["content"] = scripted.get("content")
            return message, "tool_calls"
        if tools and not any(m.get("role") == "tool" for m in messages) and scripted is None:
            function = tools[0]["function"]
            arguments = {
                name: (_between(last_user, "ticket") or last_user)[:200]
                for name, sub in function.get("parameters", {}).get("properties", {}).items()
                if sub.get("type") == "string"
            }
            message["tool_calls"] = [_tool_call(function["name"], json.dumps(arguments))]
            return message, "tool_calls"
        if scripted is not None:
            message["content"] = scripted if isinstance(scripted, str) else json.dumps(scripted)
        elif (reply := _between(last_user, "reply")) is not None:
            draft, sign_off = ([*reply.rsplit("\n\nBest regards", 1), ""])[:2]
            closing = "Thank you for your patience."
            message["content"] = f"{draft}\n\n{closing}" + (f"\n\nBest regards{sign_off}" if sign_off else "")
        elif tools:
            results = [str(m.get("content", "")) for m in messages if m.get("role") == "tool"]
            message["content"] = "Here is what I found: " + " ".join(results)[:400]
        else:
            message["content"] = "Noted."
        return message, "stop"

    def _structured(self, schema: Mapping[str, Any], prompt: str) -> Any:
        properties = schema.get("properties", {})
        if "route" in properties and "intent" in properties:
            intents = properties["intent"].get("enum")
            return rule_decision(_between(prompt, "ticket") or prompt, allowed_intents=frozenset(intents or _RULES))
        return _example_of(schema, schema.get("$defs", {}))


def _wanted_schema(body: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON schema the request asks the answer to follow, and the forced tool's name if by function call."""
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return dict(response_format["json_schema"].get("schema", {})), None
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice["function"]["name"]
        for tool in body.get("tools") or []:
            if tool["function"]["name"] == name:
                return dict(tool["function"].get("parameters", {})), name
    return None, None


def _tool_call(name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": f"call_{uuid.uuid4().hex[:12]}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    body = {"error": {"message": message, "type": code, "code": code, "param": None}}
    return status, {"content-type": "application/json", **(headers or {})}, json.dumps(body).encode()


def _handler_for(server: DevModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the recorded requests are the log."""

        def _send(self, status: int, headers: Mapping[str, str], payload: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(payload)

        def _json_body(self) -> Any:
            length = int(self.headers.get("content-length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                data = [{"id": name, "object": "model", "owned_by": "triage-dev"} for name in DEV_MODELS]
                self._send(
                    200, {"content-type": "application/json"}, json.dumps({"object": "list", "data": data}).encode()
                )
            elif self.path == "/_dev/requests":
                with server._lock:
                    payload = json.dumps(server.received).encode()
                self._send(200, {"content-type": "application/json"}, payload)
            else:
                self._send(*_error(404, "not_found", f"no route {self.path}"))

        def do_POST(self) -> None:
            try:
                body = self._json_body()
            except (ValueError, UnicodeDecodeError):
                self._send(*_error(400, "invalid_request_error", "the request body is not JSON"))
                return
            if self.path.rstrip("/") == "/v1/chat/completions":
                self._send(*server._respond(body))
            elif self.path == "/_dev/faults":
                server.inject(Fault(**body))
                self._send(200, {"content-type": "application/json"}, b"{}")
            elif self.path == "/_dev/script":
                server.script(body["answer"], times=int(body.get("times", 1)), model=body.get("model"))
                self._send(200, {"content-type": "application/json"}, b"{}")
            else:
                self._send(*_error(404, "not_found", f"no route {self.path}"))

        def do_DELETE(self) -> None:
            if self.path == "/_dev/requests":
                server.clear()
                self._send(200, {"content-type": "application/json"}, b"{}")
            else:
                self._send(*_error(404, "not_found", f"no route {self.path}"))

    return Handler
