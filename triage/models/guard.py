"""Pre- and post-checks around every model call: one wrapper, whatever model tier sits behind it.

Before a call: personal data is swapped for placeholders and the ticket is checked for prompt injection.
After a call: placeholders in what the model wrote are swapped back, so tools and customers see real values.
"""

from __future__ import annotations

from typing import Any

from triage.models.tier import ModelTier
from triage.policies.injection import detect_injection
from triage.policies.pii import Redaction, redact, restore
from triage.state import Classification, Draft, ReplyData

INJECTION_SIGNAL = "prompt_injection"


class GuardedModelTier:
    """A `ModelTier` that never lets raw personal data reach the tier it wraps."""

    def __init__(self, inner: ModelTier) -> None:
        self.inner = inner
        self.name = inner.name

    async def warm_up(self) -> None:
        """Load the wrapped tier's models now."""
        await self.inner.warm_up()

    async def classify(self, text: str) -> Classification:
        """Classify the redacted text; add the injection flag and what was redacted."""
        check = detect_injection(text)
        redaction = redact(text)
        classification = await self.inner.classify(redaction.text)
        if check.flagged:
            classification["signals"] = sorted({*classification["signals"], INJECTION_SIGNAL})
            classification["evidence"] = [*classification["evidence"], *(f"injection: {e}" for e in check.evidence)]
        classification["redactions"] = redaction.counts
        return classification

    async def compose(self, draft: Draft) -> ReplyData:
        """Compose from redacted facts, then restore the real values in the reply."""
        redaction = Redaction(text="")
        facts: dict[str, Any] = {}
        for key, value in draft["facts"].items():
            if isinstance(value, str):
                redaction = redact(value, into=redaction)
                value = redaction.text
            facts[key] = value
        reply = await self.inner.compose(Draft(template=draft["template"], facts=facts))
        return ReplyData(
            subject=restore(reply["subject"], redaction),
            body=restore(reply["body"], redaction),
            template=reply["template"],
        )

    async def summarise(self, text: str, *, max_chars: int = 280) -> str:
        """Summarise the redacted text, then restore the real values."""
        redaction = redact(text)
        return restore(await self.inner.summarise(redaction.text, max_chars=max_chars), redaction)
