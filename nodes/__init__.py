"""triage.nodes."""
