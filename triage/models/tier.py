"""The seam where models are called. Nodes ask a `ModelTier`; today the local tier answers, an LLM tier later."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from triage.models.templates import render
from triage.state import Classification, Draft, ReplyData

if TYPE_CHECKING:
    from triage.models.local import LocalClassifier


class UsageSink(Protocol):
    """Where a tier reports what each model call spent (the run's meter)."""

    def record(self, *, tokens: int, cost_usd: float) -> None:
        """Add one call's tokens and cost."""
        ...

    def exceeded(self, steps: int = 0) -> str | None:
        """Why the run may not use models any more, or None."""
        ...


class ModelTier(Protocol):
    """What nodes may ask of a model: judgment, never side effects.

    Each call reports its spend to `usage` when one is given, so that budgets can be enforced per run.
    """

    name: str

    async def warm_up(self) -> None:
        """Load whatever the tier needs before the first call."""
        ...

    async def classify(self, text: str, *, usage: UsageSink | None = None) -> Classification:
        """Route, intent, urgency, sentiment and a calibrated confidence for a ticket's text."""
        ...

    async def compose(self, draft: Draft, *, usage: UsageSink | None = None) -> ReplyData:
        """Write the customer reply that `draft` describes."""
        ...

    async def summarise(self, text: str, *, max_chars: int = 280, usage: UsageSink | None = None) -> str:
        """A short summary of a ticket for a human queue."""
        ...


def composes_locally(tier: object) -> bool:
    """Whether `tier` writes replies without a model (it says so with `composes_locally()`; unknown tiers do not)."""
    says = getattr(tier, "composes_locally", None)
    return says is not None and bool(says())


OTHER_LANGUAGE_SIGNAL = "other_language"
"""Set when a ticket is written in a language the local model was not trained on (it is handed on)."""
UNFAMILIAR_SIGNAL = "unfamiliar_request"
"""Set when the local model's confidence is low because the ticket is unlike its training examples."""
UNFAMILIAR_BELOW = 0.5
"""Familiar-word share below which a ticket counts as unfamiliar in the signals."""


class LocalModelTier:
    """The embedded default: a trained scikit-learn classifier, lexicon signals and reply templates.

    The classifier that decides is the app home's active model (`triage train`), else the packaged one, trained
    on first use (seconds) and cached under `cache_dir`. It is loaded once per process.
    """

    name = "local"

    def __init__(self, cache_dir: Path, models_dir: Path | None = None) -> None:
        self._cache_dir = cache_dir
        self._models_dir = models_dir
        self._classifier: LocalClassifier | None = None
        self._loading = asyncio.Lock()

    async def _get_classifier(self) -> LocalClassifier:
        if self._classifier is None:
            async with self._loading:
                if self._classifier is None:
                    self._classifier = await asyncio.to_thread(self._load)
        return self._classifier

    def _load(self) -> LocalClassifier:
        from triage.models.language import load_identifier
        from triage.models.local import LocalClassifier
        from triage.models.registry import ModelRegistry

        load_identifier(self._cache_dir)  # load the language model now, not on the first ticket
        if self._models_dir is None:
            return LocalClassifier.load_or_train(self._cache_dir)
        return ModelRegistry(self._models_dir, self._cache_dir).load()

    async def warm_up(self) -> None:
        """Load (or train) the classifier now rather than on the first ticket."""
        await self._get_classifier()

    async def classify(self, text: str, *, usage: UsageSink | None = None) -> Classification:
        """Classify with the trained model and detect urgency and sentiment with the signal lexicons."""
        from triage.models.signals import detect_signals

        if usage is not None:
            usage.record(tokens=0, cost_usd=0.0)  # local models are free; the call still counts
        classifier = await self._get_classifier()
        prediction = classifier.predict(text)
        signals = detect_signals(text)
        evidence = prediction.evidence
        flags = set(signals.flags)
        if evidence.foreign_language:
            flags.add(OTHER_LANGUAGE_SIGNAL)
        elif evidence.familiar_words < UNFAMILIAR_BELOW:
            flags.add(UNFAMILIAR_SIGNAL)
        return Classification(
            route=prediction.route,
            intent=prediction.intent,
            confidence=round(prediction.confidence, 4),
            route_scores={route: round(score, 4) for route, score in prediction.route_scores.items()},
            urgency=signals.urgency,
            sentiment=signals.sentiment,
            signals=sorted(flags),
            evidence=[*signals.evidence, *evidence.reasons(prediction.confidence, prediction.intent)],
            model=self.name,
            model_version=classifier.fingerprint,
            language=evidence.language,
            confidence_evidence=evidence.as_dict(),
        )

    def composes_locally(self) -> bool:
        """Replies are the templates, rendered here: no model sees a draft's facts.

        Only while `compose` is this class's own: a subclass that replaces it may call a model, so it is handed
        placeholders like any other tier.
        """
        return type(self).compose is LocalModelTier.compose

    async def compose(self, draft: Draft, *, usage: UsageSink | None = None) -> ReplyData:
        """Render the draft's template."""
        if usage is not None:
            usage.record(tokens=0, cost_usd=0.0)
        return render(draft)

    async def summarise(self, text: str, *, max_chars: int = 280, usage: UsageSink | None = None) -> str:
        """Extractive summary: the first sentences that fit in `max_chars`."""
        if usage is not None:
            usage.record(tokens=0, cost_usd=0.0)
        return extractive_summary(text, max_chars=max_chars)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def extractive_summary(text: str, *, max_chars: int = 280) -> str:
    """The leading sentences of `text` that fit in `max_chars`, whitespace collapsed."""
    summary = ""
    for sentence in _SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        if not sentence:
            continue
        candidate = f"{summary} {sentence}".strip()
        if len(candidate) > max_chars:
            break
        summary = candidate
    if not summary:
        summary = " ".join(text.split())[: max_chars - 1].rstrip() + "…"
    return summary
