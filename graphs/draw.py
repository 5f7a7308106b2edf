"""Print the coordinator graph as mermaid text (the README's diagram): `python -m triage.graphs.draw`."""

from __future__ import annotations

from triage.graphs.support import build_support_graph


def support_mermaid() -> str:
    """The coordinator with its specialists expanded, as mermaid text."""
    return build_support_graph().compile().get_graph(xray=True).draw_mermaid(with_styles=False).strip()


if __name__ == "__main__":
    print(support_mermaid())
