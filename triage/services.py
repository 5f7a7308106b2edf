"""The seam where stores are opened.

The helpdesk, the checkpoint store and its journal, the tool gateway, the model tier and the policy bundle.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore

from triage.errors import DamagedStoreError
from triage.faults import FaultInjector
from triage.gateway import ToolGateway
from triage.helpdesk import Helpdesk
from triage.helpdesk.store import quiet_sql_logging
from triage.journal import Journal
from triage.models.cascade import build_model_tier
from triage.models.guard import GuardedModelTier
from triage.models.tier import LocalModelTier, ModelTier
from triage.policies import PolicyBundle, load_policy_bundle
from triage.settings import Settings
from triage.storefiles import describe_open_error, prepare_home
from triage.stores import CheckpointStore, open_postgres_store, open_sqlite_store
from triage.tracing import install_trace_redaction


@dataclass
class Services:
    """Everything a node needs besides its state, opened once per process (per event loop)."""

    settings: Settings
    policy: PolicyBundle
    helpdesk: Helpdesk
    gateway: ToolGateway
    models: GuardedModelTier
    saver: BaseCheckpointSaver[Any]
    """The process's one checkpoint saver (on SQLite: one connection per process and file)."""
    journal: Journal
    store: CheckpointStore
    """The checkpoint store the saver and journal live in (SQLite in the home, or PostgreSQL)."""

    @property
    def memory(self) -> BaseStore:
        """Per-customer memory across conversations (LangGraph's store, beside the checkpoints)."""
        return self.store.memory

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        policy: PolicyBundle | None = None,
        models: ModelTier | None = None,
        reads_on_loop: bool = False,
    ) -> Services:
        """Open the stores (creating and seeding them in a new home) and wire the gateway and model tier.

        `models` replaces the cascade the settings describe (`triage.models.cascade`); whatever tier is used, it sits
        behind `GuardedModelTier`. `reads_on_loop` reads the helpdesk on the event loop's thread (`LoopReader`):
        for a `TriageApp`, not for a server that refuses blocking calls on its loop (`shared_services`).

        Raises:
            ModelConfigError: the model settings are inconsistent.
        """
        # File-system work (folders, policy files) runs off the event loop: servers refuse blocking calls on it.
        policy = await asyncio.to_thread(_prepare_home, settings, policy)
        if models is None:
            models = build_model_tier(LocalModelTier(settings.cache_dir, settings.models_dir), settings, policy)
        quiet_sql_logging()
        tool_faults = FaultInjector.from_spec(settings.faults)
        checkpoint_faults = FaultInjector.from_spec(settings.checkpoint_faults)
        if settings.database_url:
            store = await open_postgres_store(settings.database_url)
        else:
            store = await open_sqlite_store(
                settings.checkpoints_path,
                helpdesk_path=settings.helpdesk_path,
                faults=checkpoint_faults,
                synchronous=settings.sqlite_synchronous,
                on_loop=settings.sqlite_on_loop,
            )
        try:
            journal = Journal(store.sql)
            await journal.setup()
            if not await asyncio.to_thread(settings.helpdesk_path.exists) and await journal.has_history():
                raise DamagedStoreError(
                    settings.helpdesk_path,
                    "is missing while the checkpoint store beside it holds runs and effects: a new, re-seeded "
                    "helpdesk would make refunded payments refundable again",
                )
            helpdesk = await Helpdesk.open(
                settings.helpdesk_path,
                busy_timeout=busy_timeout(policy),
                synchronous=settings.sqlite_synchronous,
                on_loop=settings.sqlite_on_loop,
                reads_on_loop=reads_on_loop,
            )
        except BaseException as exc:
            await store.close()
            if isinstance(exc, sqlite3.Error):
                raise describe_open_error(settings.checkpoints_path, "checkpoint store", exc) from None
            raise
        return cls(
            settings=settings,
            policy=policy,
            helpdesk=helpdesk,
            gateway=ToolGateway(helpdesk=helpdesk, permissions=policy.permissions, faults=tool_faults),
            models=GuardedModelTier(models),
            saver=store.saver,
            journal=journal,
            store=store,
        )

    async def aclose(self) -> None:
        """Close the helpdesk and checkpoint connections."""
        await self.helpdesk.close()
        await self.store.close()
        await self.models.aclose()


def _prepare_home(settings: Settings, policy: PolicyBundle | None) -> PolicyBundle:
    """The blocking part of opening: create the home, install trace redaction, load the policy bundle."""
    prepare_home(settings.home)
    install_trace_redaction()
    return policy or load_policy_bundle(settings.policy_dir)


def busy_timeout(policy: PolicyBundle) -> float:
    """How long a helpdesk write waits for another process's lock: a quarter of the node time limit.

    So a long external lock costs a node retries (transient errors), never its time limit and the connection.
    """
    return policy.support.timeouts.io_node_seconds / 4


_shared: dict[tuple[int, str], Services] = {}
_shared_lock: dict[int, asyncio.Lock] = {}


async def shared_services(settings: Settings | None = None) -> Services:
    """Services for graphs run without a `TriageApp` (e.g. by `langgraph dev`): one set per event loop and home."""
    settings = settings or Settings()
    loop_id = id(asyncio.get_running_loop())
    key = (loop_id, str(await asyncio.to_thread(settings.home.resolve)))
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
