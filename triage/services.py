"""The seam where stores are opened.

The helpdesk, the checkpoint store and its journal, the tool gateway, the model tier and the policy bundle.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from triage.gateway import ToolGateway
from triage.helpdesk import Helpdesk
from triage.helpdesk.store import quiet_sql_logging
from triage.journal import Journal
from triage.models.cascade import build_model_tier
from triage.models.guard import GuardedModelTier
from triage.models.tier import LocalModelTier, ModelTier
from triage.policies import PolicyBundle, load_policy_bundle
from triage.settings import Settings
from triage.tracing import install_trace_redaction


@dataclass
class Services:
    """Everything a node needs besides its state, opened once per process (per event loop)."""

    settings: Settings
    policy: PolicyBundle
    helpdesk: Helpdesk
    gateway: ToolGateway
    models: GuardedModelTier
    saver: AsyncSqliteSaver
    """The process's one checkpoint saver (one connection per process and file)."""
    journal: Journal

    @classmethod
    async def open(
        cls, settings: Settings, *, policy: PolicyBundle | None = None, models: ModelTier | None = None
    ) -> Services:
        """Open the helpdesk (creating and seeding it on first use) and wire the gateway and model tier.

        `models` replaces the cascade the settings describe (`triage.models.cascade`); whatever tier is used, it sits
        behind `GuardedModelTier`.

        Raises:
            ModelConfigError: the model settings are inconsistent.
        """
        settings.home.mkdir(parents=True, exist_ok=True)
        install_trace_redaction()
        policy = policy or load_policy_bundle(settings.policy_dir)
        if models is None:
            models = build_model_tier(LocalModelTier(settings.cache_dir), settings, policy)
        helpdesk = await Helpdesk.open(settings.helpdesk_path)
        quiet_sql_logging()
        conn = await aiosqlite.connect(settings.checkpoints_path)
        await conn.execute("PRAGMA busy_timeout = 10000")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        journal = Journal(saver)
        await journal.setup()
        return cls(
            settings=settings,
            policy=policy,
            helpdesk=helpdesk,
            gateway=ToolGateway(helpdesk=helpdesk, permissions=policy.permissions),
            models=GuardedModelTier(models),
            saver=saver,
            journal=journal,
        )

    async def aclose(self) -> None:
        """Close the helpdesk and checkpoint connections."""
        await self.helpdesk.close()
        await self.saver.conn.close()
        await self.models.aclose()


_shared: dict[tuple[int, str], Services] = {}
_shared_lock: dict[int, asyncio.Lock] = {}


async def shared_services(settings: Settings | None = None) -> Services:
    """Services for graphs run without a `TriageApp` (e.g. by `langgraph dev`): one set per event loop and home."""
    settings = settings or Settings()
    loop_id = id(asyncio.get_running_loop())
    key = (loop_id, str(settings.home.resolve()))
    lock = _shared_lock.setdefault(loop_id, asyncio.Lock())
    async with lock:
        if key not in _shared:
            _shared[key] = await Services.open(settings)
    return _shared[key]


async def close_shared_services() -> None:
    """Close the shared services opened on the running loop (for servers shutting down, and tests)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [key for key in _shared if key[0] == loop_id]:
        await _shared.pop(key).aclose()
