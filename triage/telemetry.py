"""Per-node attempt counting from LangChain callbacks: a node retried by its RetryPolicy starts more than once."""

from __future__ import annotations

from collections import Counter
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler


def node_key(checkpoint_ns: str, node: str) -> str:
    """`validate` for a coordinator node, `billing:act` for a step inside the billing subgraph."""
    outer = [part.split(":", 1)[0] for part in checkpoint_ns.split("|")[:-1] if part]
    return ":".join([*outer, node])


class AttemptCounter(AsyncCallbackHandler):
    """Counts how many times each node task started; `retries()` is starts beyond the first, per node."""

    def __init__(self) -> None:
        self.starts: Counter[tuple[str, str]] = Counter()
        self._runs: dict[UUID, tuple[str, str]] = {}

    async def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Count a node attempt (one per task attempt: the task's own runnable, named after its node)."""
        metadata = metadata or {}
        node = metadata.get("langgraph_node")
        if node is None or kwargs.get("name") != node:
            return
        namespace = str(metadata.get("langgraph_checkpoint_ns", ""))
        task = (node_key(namespace, node), namespace)
        self._runs[run_id] = task
        if parent_run_id is not None and self._runs.get(parent_run_id) == task:
            return  # the same task's inner runnable (a compiled subgraph inside its node), not a new attempt
        self.starts[task] += 1

    def retries(self) -> dict[str, int]:
        """Retried attempts per node key (0 for nodes that ran once)."""
        totals: Counter[str] = Counter()
        for (key, _), starts in self.starts.items():
            totals[key] += starts - 1
        return dict(totals)
