"""Apps that share `CompiledGraphs` compile the support graph once and still each checkpoint into their own store."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import policy_copy
from triage import TriageApp
from triage.app import CompiledGraphs
from triage.settings import Settings

TICKET = {"subject": "Invoice copy", "body": "Could you send me a copy of my last invoice?"}


def test_apps_share_one_compiled_graph_but_not_its_checkpoints(settings: Settings, tmp_path: Path) -> None:
    graphs = CompiledGraphs()
    first_home, second_home = tmp_path / "one", tmp_path / "two"
    with (
        TriageApp(settings.model_copy(update={"home": first_home}), graphs=graphs) as first,
        TriageApp(settings.model_copy(update={"home": second_home}), graphs=graphs) as second,
    ):
        one = first.run(TICKET, thread_id="same-thread")
        two = second.run(TICKET, thread_id="same-thread")
        engines = [app._engine for app in (first, second)]
        assert engines[0] is not None and engines[1] is not None
        assert engines[0].graph.builder is engines[1].graph.builder, "built and compiled once"
        assert engines[0].graph.checkpointer is not engines[1].graph.checkpointer
        assert (one.status, two.status) == ("completed", "completed")
        assert len(first.threads()) == len(second.threads()) == 1, "each run is checkpointed in its own home"

    other_policy = policy_copy(tmp_path, "support.toml", "min_confidence = 0.8\n", "min_confidence = 0.85\n")
    with TriageApp(
        settings.model_copy(update={"home": tmp_path / "three", "policy_dir": other_policy}), graphs=graphs
    ) as third:
        third.run(TICKET)
        assert third._engine is not None and third._engine.graph.builder is not engines[0].graph.builder, (
            "another policy version compiles a graph of its own"
        )
