"""triage.models."""
