"""triage.graphs."""
