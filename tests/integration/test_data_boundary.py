"""No raw secret or personal value from the corpus reaches a configured model: the dev model server records every
request it received, over real HTTP, and none of them carries a value the corpus marks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from triage import TriageApp
from triage.models.cascade import build_model_tier
from triage.models.dev_server import DevModelServer
from triage.models.guard import GuardedModelTier
from triage.models.tier import LocalModelTier
from triage.policies import load_policy_bundle
from triage.settings import Settings

DATA = Path(__file__).parent.parent / "data"
CORPUS = [json.loads(line) for line in (DATA / "pii_corpus.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_no_raw_value_from_the_corpus_reaches_the_model_server(settings: Settings) -> None:
    leaks: list[str] = []
    dropped: list[str] = []

    async def send_everything(configured: Settings, server: DevModelServer) -> None:
        tier = GuardedModelTier(
            build_model_tier(LocalModelTier(configured.cache_dir), configured, load_policy_bundle())
        )
        try:
            for index, case in enumerate(CORPUS):
                before = len(server.received)
                await tier.classify(case["text"])
                if index % 4 == 0:  # replies carry the same redaction; a quarter of the corpus keeps the test short
                    facts = {"customer_name": case["text"]}
                    await tier.compose({"template": "general.feedback_thanks", "facts": facts})
                sent = json.dumps(server.received[before:], ensure_ascii=False)
                leaks.extend(value for _, value in case["expect"] if value in sent)
                dropped.extend(value for value in case.get("keep", []) if value not in sent)
        finally:
            await tier.aclose()

    with DevModelServer() as server:
        configured = settings.model_copy(
            update={
                "model_base_url": server.base_url,
                "cheap_model": "dev-cheap",
                "all_to_model": True,
                "model_rewrites_replies": True,
            }
        )
        asyncio.run(send_everything(configured, server))
        replies = [r for r in server.requests_for("dev-cheap") if "<reply>" in json.dumps(r)]
        assert len(replies) == len(CORPUS[::4]), "cases reached the model as replies to rewrite"
        assert len(server.requests_for("dev-cheap")) - len(replies) > 0.9 * len(CORPUS), "and (but cached repeats) all"
    assert leaks == []
    assert dropped == [], "order numbers, amounts and dates still reach the model"


def test_tickets_through_the_app_reach_the_model_redacted(settings: Settings) -> None:
    tickets: list[dict[str, Any]] = [json.loads(line) for line in (DATA / "pii_tickets.jsonl").read_text().splitlines()]
    with DevModelServer() as server:
        configured = settings.model_copy(
            update={"model_base_url": server.base_url, "cheap_model": "dev-cheap", "all_to_model": True}
        )
        with TriageApp(configured) as app:
            results = [app.run({k: v for k, v in t.items() if k != "pii"}) for t in tickets]
        received = server.received_text()
    assert all(r.decided_by in {"cheap", "local", "person"} for r in results)
    assert len(server.requests_for("dev-cheap")) >= len(tickets)
    assert [v for t in tickets for v in t["pii"] if v in received] == []
