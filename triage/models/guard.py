"""Pre- and post-checks around every model call: one wrapper, whatever model tier sits behind it.

Before a call: the run's budget is checked, personal data is swapped for placeholders and the ticket is checked
for prompt injection. After a call: placeholders in what the model wrote are swapped back, so tools and customers
see real values. Once a budget is spent, no model is called: classification raises `BudgetExceededError` (the
caller escalates) and replies and summaries are produced deterministically from templates.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from triage.metering import BudgetExceededError, Meter
from triage.models.agent import AgentTurn, describe_result
from triage.models.templates import render
from triage.models.tier import ModelTier, composes_locally, extractive_summary
from triage.policies.injection import INJECTION_SIGNAL, detect_injection
from triage.policies.pii import Redaction, redact, restore
from triage.state import AgentCallRecord, AgentStep, Classification, Draft, ReplyData

RELEASE_SUMMARY_CHARS = 400
"""Longest customer-facing summary of release notes."""


class GuardedModelTier:
    """A `ModelTier` that never lets raw personal data reach a model behind the tier it wraps."""

    def __init__(self, inner: ModelTier) -> None:
        self.inner = inner
        self.name = inner.name

    async def warm_up(self) -> None:
        """Load the wrapped tier's models now."""
        await self.inner.warm_up()

    async def aclose(self) -> None:
        """Close the wrapped tier's connections, if it holds any."""
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    async def classify(self, text: str, *, meter: Meter | None = None) -> Classification:
        """Classify the redacted text; add the injection flag and what was redacted.

        Raises:
            BudgetExceededError: the run's budget is spent; no model was called.
        """
        reason = meter.exceeded() if meter else None
        if reason:
            raise BudgetExceededError(reason)
        check = detect_injection(text)
        redaction = redact(text)
        classification = await self.inner.classify(redaction.text, usage=meter)
        if check.flagged:
            classification["signals"] = sorted({*classification["signals"], INJECTION_SIGNAL})
            classification["evidence"] = [*classification["evidence"], *(f"injection: {e}" for e in check.evidence)]
        classification["redactions"] = redaction.counts
        return classification

    async def compose(self, draft: Draft, *, meter: Meter | None = None) -> ReplyData:
        """Compose from redacted facts, then restore the real values in the reply (templates once over budget).

        A tier that writes replies from its templates alone (`composes_locally`: no model sees the facts) gets them
        as they are: redacting them and restoring the reply gave the same reply, for about 0.3 ms of CPU a reply.
        """
        if meter and meter.exceeded():
            return render(draft)
        if composes_locally(self.inner):
            return await self.inner.compose(draft, usage=meter)
        redaction = Redaction(text="")
        facts: dict[str, Any] = {}
        for key, value in draft["facts"].items():
            if isinstance(value, str):
                redaction = redact(value, into=redaction)
                value = redaction.text
            facts[key] = value
        reply = await self.inner.compose(Draft(template=draft["template"], facts=facts), usage=meter)
        return {
            **reply,
            "subject": restore(reply["subject"], redaction),
            "body": restore(reply["body"], redaction),
        }

    def agent_ready(self) -> bool:
        """Whether the wrapped tier can run the technical specialist's agent step (a model is configured)."""
        ready = getattr(self.inner, "agent_ready", None)
        return bool(ready()) if ready is not None else False

    async def agent_turn(
        self,
        ticket: str,
        steps: Sequence[AgentStep],
        tools: Sequence[Mapping[str, Any]],
        *,
        known_tools: Collection[str],
        meter: Meter | None = None,
    ) -> AgentTurn:
        """One agent turn with the ticket and every earlier tool result redacted (see `agent_ready`).

        Raises:
            BudgetExceededError: the run's budget is spent; no model was called.
            ModelCallError: the call failed or was refused.
        """
        reason = meter.exceeded() if meter else None
        if reason:
            raise BudgetExceededError(reason)
        redaction = redact(ticket)
        quoted = redaction.text
        shown: list[AgentStep] = []
        for step in steps:
            calls: list[AgentCallRecord] = []
            for record in step["calls"]:
                if record["outcome"] == "ok":
                    redaction = redact(describe_result(record), into=redaction)
                    record = {**record, "result": redaction.text}
                calls.append(record)
            shown.append({**step, "calls": calls})
        inner_turn = self.inner.agent_turn  # type: ignore[attr-defined]
        turn: AgentTurn = await inner_turn(quoted, shown, tools, known_tools=known_tools, usage=meter)
        return turn

    async def summarise(self, text: str, *, max_chars: int = 280, meter: Meter | None = None) -> str:
        """Summarise the redacted text, then restore the real values (extractive once over budget)."""
        if meter and meter.exceeded():
            return extractive_summary(text, max_chars=max_chars)
        redaction = redact(text)
        summary = await self.inner.summarise(redaction.text, max_chars=max_chars, usage=meter)
        return restore(summary, redaction)

    async def summarise_release(self, notes: str, *, meter: Meter | None = None) -> dict[str, Any]:
        """A customer-facing summary of release notes from redacted notes (see `CascadeModelTier.summarise_release`).

        A tier without a release summariser gives its plain summary; over budget, the summary is extractive.
        """
        if meter and meter.exceeded():
            return {
                "text": extractive_summary(notes, max_chars=RELEASE_SUMMARY_CHARS),
                "by": "local",
                "verdict": "extractive",
            }
        redaction = redact(notes)
        summarise = getattr(self.inner, "summarise_release", None)
        if summarise is None:
            text = await self.inner.summarise(redaction.text, max_chars=RELEASE_SUMMARY_CHARS, usage=meter)
            result: dict[str, Any] = {"text": text, "by": self.inner.name, "verdict": "extractive"}
        else:
            result = dict(await summarise(redaction.text, max_chars=RELEASE_SUMMARY_CHARS, usage=meter))
        return {**result, "text": restore(str(result["text"]), redaction)}
