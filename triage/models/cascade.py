"""Who decides: the local tier first, a cheap model where it is unsure, a strong model after that, then a person.

`CascadeModelTier` is the `ModelTier` the app runs on. With no model configured it is the local tier alone, with
each classification marked `decided_by="local"` (or `"person"` below the routing policy's confidence floor, where the
router already hands the ticket to the human queue). With models configured:

- the local tier answers when it is at least `local_confidence_threshold` sure, and when its deterministic signals
  (a legal threat, a security report, an injection attempt, an angry customer) send the ticket to a person anyway;
- otherwise the cheap model decides with structured output (`TierDecision`), the ticket quoted as data between
  `<ticket>` delimiters after the guard redacted it; an answer that fails the schema or the policy (an intent outside
  its route), a refusal, an error or a confidence below `model_confidence_threshold` goes to the strong model;
- when no tier is sure the ticket goes to a person: `decided_by="person"` and the `unsure` signal, which the routing
  policy escalates on.

Identical inputs are answered from a cache keyed on the redacted text, the model and the policy version. Every call
is recorded on the classification (`model_calls`: tier, model, outcome, tokens, cost, latency) and charged to the
run's meter with the response's real token counts; a spent budget stops the cascade before the next call.
Replies: the template reply is rendered first; a configured cheap model may rewrite it for tone, and the rewrite
is sent only if `verify_draft` passes (one retry with the findings, then the template).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from triage.models.llm import ChatTier, ModelCall, ModelCallError, TierDecision
from triage.models.tier import ModelTier, UsageSink, composes_locally
from triage.models.verifier import verify_draft, verify_summary
from triage.policies.injection import detect_injection
from triage.state import Classification, Draft, ReplyData
from triage.taxonomy import ROUTE_OF_INTENT, URGENCIES

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from langchain_core.messages import BaseMessage

    from triage.models.agent import AgentTurn
    from triage.policies.bundle import PolicyBundle
    from triage.settings import Settings
    from triage.state import AgentStep

UNSURE_SIGNAL = "unsure"
"""Set when no tier was sure enough: the routing policy sends the ticket to a person."""
_CACHE_SIZE = 2048


@dataclass(frozen=True)
class CascadeSettings:
    """The thresholds the cascade decides by."""

    local_threshold: float = 0.6
    model_threshold: float = 0.6
    rewrite_replies: bool = True
    all_to_model: bool = False
    """Skip the local tier (benchmarks: what would sending every ticket to the model cost?)."""


class CascadeModelTier:
    """The local tier, then the configured model tiers, then a person (see the module docstring)."""

    name = "cascade"

    def __init__(
        self,
        local: ModelTier,
        *,
        policy: PolicyBundle,
        tiers: list[ChatTier] | None = None,
        settings: CascadeSettings | None = None,
    ) -> None:
        self.local = local
        self.tiers = list(tiers or [])
        self.policy = policy
        self.settings = settings or CascadeSettings()
        self._cache: OrderedDict[tuple[str, str, str], TierDecision] = OrderedDict()
        self.cache_hits = 0

    async def warm_up(self) -> None:
        """Load the local tier."""
        await self.local.warm_up()

    async def aclose(self) -> None:
        """Close the model tiers' connections."""
        for tier in self.tiers:
            await tier.aclose()

    # -- classification ---------------------------------------------------------------------------------------

    async def classify(self, text: str, *, usage: UsageSink | None = None) -> Classification:
        """Classify `text` (already redacted by the guard) with the first tier that is sure."""
        local = await self.local.classify(text, usage=usage)
        routing = self.policy.support.routing
        if not self.tiers:
            sure = local["route"] == "escalation" or local["confidence"] >= routing.min_confidence
            return {**local, "decided_by": "local" if sure else "person"}
        forced = set(local["signals"]) & routing.escalate_on_signals or detect_injection(text).flagged
        if not self.settings.all_to_model and (
            local["confidence"] >= self.settings.local_threshold
            or forced
            or local["sentiment"] in routing.escalate_on_sentiment
        ):
            return {**local, "decided_by": "local"}
        calls: list[ModelCall] = []
        reasons: list[str] = [f"local: confidence {local['confidence']:.2f} < {self.settings.local_threshold:.2f}"]
        for tier in self.tiers:
            if usage is not None and (spent := usage.exceeded()):
                calls.append(ModelCall(tier=tier.spec.tier, model=tier.spec.model, outcome="over_budget", detail=spent))
                reasons.append(f"{tier.spec.tier}: not asked, {spent}")
                break
            decision, call = await self._decide(tier, text)
            calls.append(call)
            if usage is not None and call.outcome != "cached":
                usage.record(tokens=call.input_tokens + call.output_tokens, cost_usd=call.cost_usd)
            if decision is None:
                reasons.append(f"{tier.spec.tier}: {call.outcome} ({call.detail})")
                continue
            problem = self._policy_problem(decision)
            if problem:
                call.outcome, call.detail = "invalid_output", problem
                reasons.append(f"{tier.spec.tier}: invalid ({problem})")
                continue
            if decision.confidence < self.settings.model_threshold:
                call.outcome = "unsure"
                reasons.append(
                    f"{tier.spec.tier}: confidence {decision.confidence:.2f} < {self.settings.model_threshold:.2f}"
                )
                continue
            return self._from_decision(local, decision, tier.spec.tier, calls)
        return {
            **local,
            "signals": sorted({*local["signals"], UNSURE_SIGNAL}),
            "evidence": [*local["evidence"], *(f"cascade: {r}" for r in reasons)],
            "decided_by": "person",
            "model_calls": [c.as_dict() for c in calls],
        }

    async def _decide(self, tier: ChatTier, text: str) -> tuple[TierDecision | None, ModelCall]:
        key = (hashlib.sha256(text.encode()).hexdigest(), tier.spec.model, self.policy.version)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return cached, ModelCall(tier=tier.spec.tier, model=tier.spec.model, outcome="cached")
        try:
            decision, call = await tier.decide(self._classify_messages(text))
        except ModelCallError as failed:
            return None, failed.call
        self._cache[key] = decision
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return decision, call

    def _classify_messages(self, text: str) -> list[BaseMessage]:
        from langchain_core.messages import HumanMessage, SystemMessage

        prompts = self.policy.prompts
        catalogue = "\n".join(
            f"- route {route}: {description}\n"
            + "\n".join(
                f"  - intent {intent}: {prompts.intents[intent]}"
                for intent, owner in ROUTE_OF_INTENT.items()
                if owner == route
            )
            for route, description in prompts.routes.items()
        )
        return [
            SystemMessage(f"{prompts.classify.system}\n\nCatalogue:\n{catalogue}"),
            HumanMessage(f"<ticket>\n{quote_data(text, 'ticket')}\n</ticket>"),
        ]

    def _policy_problem(self, decision: TierDecision) -> str | None:
        if decision.route not in self.policy.prompts.routes:
            return f"route {decision.route!r} is not in the policy"
        if ROUTE_OF_INTENT.get(decision.intent) != decision.route:
            return f"intent {decision.intent!r} does not belong to route {decision.route!r}"
        return None

    @staticmethod
    def _from_decision(
        local: Classification, decision: TierDecision, tier: str, calls: list[ModelCall]
    ) -> Classification:
        # Safety signals stay deterministic (the lexicons); the model supplies the judgment the local tier lacked.
        urgency = max(local["urgency"], decision.urgency, key=URGENCIES.index)
        sentiment = decision.sentiment if local["sentiment"] == "neutral" else local["sentiment"]
        return {
            **local,
            "route": decision.route,
            "intent": decision.intent,
            "confidence": round(decision.confidence, 4),
            "route_scores": {decision.route: round(decision.confidence, 4)},
            "urgency": urgency,
            "sentiment": sentiment,
            "evidence": [*local["evidence"], f"{tier} model: {decision.rationale}"],
            "model": calls[-1].model,
            "decided_by": tier,
            "model_calls": [c.as_dict() for c in calls],
        }

    # -- the technical specialist's agent step -----------------------------------------------------------------

    def composes_locally(self) -> bool:
        """Whether replies come from the local tier alone, with no model rewriting them."""
        return not (self.tiers and self.settings.rewrite_replies) and composes_locally(self.local)

    def agent_ready(self) -> bool:
        """Whether an agent step can run: a model tier is configured and the policy has the agent's prompt."""
        return bool(self.tiers) and self.policy.prompts.agent is not None

    async def agent_turn(
        self,
        ticket: str,
        steps: Sequence[AgentStep],
        tools: Sequence[Mapping[str, Any]],
        *,
        known_tools: Collection[str],
        usage: UsageSink | None = None,
    ) -> AgentTurn:
        """One turn of the agent loop on the cheap model (`ticket` and the steps' results already redacted).

        Raises:
            ModelCallError: the call failed (after the client's retries) or was refused; its spend is recorded.
        """
        from triage.models.agent import agent_messages, read_turn

        prompt = self.policy.prompts.agent
        if not self.tiers or prompt is None:
            raise RuntimeError("agent_turn needs a configured model tier and the policy's agent prompt")
        tier = self.tiers[0]
        try:
            message, call = await tier.tool_turn(agent_messages(prompt.system, ticket, steps), tools)
        except ModelCallError as failed:
            if usage is not None:
                usage.record(tokens=failed.call.input_tokens + failed.call.output_tokens, cost_usd=failed.call.cost_usd)
            raise
        if usage is not None:
            usage.record(tokens=call.input_tokens + call.output_tokens, cost_usd=call.cost_usd)
        return read_turn(message, call, known_tools=known_tools)

    # -- replies and summaries --------------------------------------------------------------------------------

    async def compose(self, draft: Draft, *, usage: UsageSink | None = None) -> ReplyData:
        """The template reply, or a model's verified rewrite of it (see the module docstring)."""
        template = await self.local.compose(draft, usage=usage)
        if not self.tiers or not self.settings.rewrite_replies:
            return template
        tier = self.tiers[0]
        name = draft["facts"].get("customer_name")
        names = [name.split()[0]] if isinstance(name, str) and name.strip() else []
        findings: tuple[str, ...] = ()
        calls: list[dict[str, Any]] = []
        for attempt in (1, 2):
            if usage is not None and usage.exceeded():
                break
            try:
                text, call = await tier.write(self._rewrite_messages(template["body"], findings))
            except ModelCallError as failed:
                calls.append(failed.call.as_dict())
                if usage is not None:
                    usage.record(
                        tokens=failed.call.input_tokens + failed.call.output_tokens, cost_usd=failed.call.cost_usd
                    )
                break
            calls.append(call.as_dict())
            if usage is not None:
                usage.record(tokens=call.input_tokens + call.output_tokens, cost_usd=call.cost_usd)
            verdict = verify_draft(template["body"], text.strip(), names=names)
            if verdict.ok:
                return {
                    **template,
                    "body": text.strip(),
                    "verdict": "verified" if attempt == 1 else "verified_after_retry",
                    "model_calls": calls,
                }
            findings = verdict.findings
        return {**template, "verdict": "template_fallback", "findings": list(findings), "model_calls": calls}

    def _rewrite_messages(self, body: str, findings: tuple[str, ...]) -> list[BaseMessage]:
        from langchain_core.messages import HumanMessage, SystemMessage

        request = f"<reply>\n{quote_data(body, 'reply')}\n</reply>"
        if findings:
            request += "\n\nYour previous rewrite was refused because:\n" + "\n".join(f"- {f}" for f in findings)
        return [SystemMessage(self.policy.prompts.rewrite.system), HumanMessage(request)]

    async def summarise(self, text: str, *, max_chars: int = 280, usage: UsageSink | None = None) -> str:
        """Summaries stay extractive (deterministic, free)."""
        return await self.local.summarise(text, max_chars=max_chars, usage=usage)

    async def summarise_release(
        self, notes: str, *, max_chars: int = 400, usage: UsageSink | None = None
    ) -> dict[str, Any]:
        """A customer-facing summary of release notes: extractive, or a configured model's that `verify_summary` passed.

        The model gets one retry with the verifier's findings; a summary refused twice (or a failed call) falls back
        to the extractive one, with the findings kept (`verdict` extractive_fallback).
        """
        extractive = await self.local.summarise(notes, max_chars=max_chars, usage=usage)
        if not self.tiers:
            return {"text": extractive, "by": "local", "verdict": "extractive"}
        tier = self.tiers[0]
        findings: tuple[str, ...] = ()
        calls: list[dict[str, Any]] = []
        for attempt in (1, 2):
            if usage is not None and usage.exceeded():
                break
            try:
                text, call = await tier.write(self._summary_messages(notes, findings))
            except ModelCallError as failed:
                call = failed.call
                calls.append(call.as_dict())
                if usage is not None:
                    usage.record(tokens=call.input_tokens + call.output_tokens, cost_usd=call.cost_usd)
                break
            calls.append(call.as_dict())
            if usage is not None:
                usage.record(tokens=call.input_tokens + call.output_tokens, cost_usd=call.cost_usd)
            verdict = verify_summary(notes, text, max_chars=max_chars)
            if verdict.ok:
                return {
                    "text": " ".join(text.split()),
                    "by": tier.spec.tier,
                    "verdict": "verified" if attempt == 1 else "verified_after_retry",
                    "model_calls": calls,
                }
            findings = verdict.findings
        return {
            "text": extractive,
            "by": "local",
            "verdict": "extractive_fallback",
            "findings": list(findings),
            "model_calls": calls,
        }

    def _summary_messages(self, notes: str, findings: tuple[str, ...]) -> list[BaseMessage]:
        from langchain_core.messages import HumanMessage, SystemMessage

        request = f"<notes>\n{quote_data(notes, 'notes')}\n</notes>"
        if findings:
            request += "\n\nYour previous summary was refused because:\n" + "\n".join(f"- {f}" for f in findings)
        return [SystemMessage(self.policy.prompts.release_summary.system), HumanMessage(request)]


def quote_data(text: str, tag: str) -> str:
    """`text` with any copy of the `<tag>` delimiters neutralised, so quoted data cannot close its quote."""
    return text.replace(f"<{tag}>", f"({tag})").replace(f"</{tag}>", f"(/{tag})")


def build_model_tier(local: ModelTier, settings: Settings, policy: PolicyBundle) -> CascadeModelTier:
    """The cascade the settings describe: the local tier alone, or with the configured cheap and strong models.

    Raises:
        ModelConfigError: the model settings are inconsistent.
    """
    import functools

    from triage.models.llm import build_chat_model, chat_api_key, model_specs

    specs = model_specs(settings)
    if specs:
        chat_api_key(settings)  # an inconsistent configuration fails here, not on the first ticket
    tiers = [ChatTier(spec, functools.partial(build_chat_model, settings, spec.model)) for spec in specs]
    return CascadeModelTier(
        local,
        policy=policy,
        tiers=tiers,
        settings=CascadeSettings(
            local_threshold=settings.local_confidence_threshold,
            model_threshold=settings.model_confidence_threshold,
            rewrite_replies=settings.model_rewrites_replies,
            all_to_model=settings.all_to_model,
        ),
    )
