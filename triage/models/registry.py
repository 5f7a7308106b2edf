"""Which local model decides: the packaged one, or one a team trained with `triage train`, kept in the app home.

Trained models live in `<home>/models/` as versioned artifacts named by their fingerprint (`local-<hash>.joblib`,
with the arrays that predict beside it in `local-<hash>.npz`). `active.json` names the active one. Activating a
model writes its artifact first (a temporary file, fsync, rename) and only then replaces `active.json` the same way,
so a run that dies at any point leaves either the previous model or the new one active, never a half-written one.
Without `active.json` the packaged model decides (`triage model reset` removes it).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from triage.errors import TriageError
from triage.models.local import LocalClassifier, load_model_file, read_model_metadata

__all__ = ["ACTIVE_FILE", "ActiveModel", "ModelFileError", "ModelRegistry"]

ACTIVE_FILE = "active.json"


class ModelFileError(TriageError):
    """The active model named in the app home cannot be loaded."""


@dataclass(frozen=True)
class ActiveModel:
    """What `triage model info` shows about the model that decides.

    Attributes:
        source: "packaged" or "trained".
        fingerprint: The model's fingerprint (recorded on every run as `model_version`).
        data_fingerprint: Hash of the examples it was trained on.
        examples: How many examples it was trained on.
        languages: The languages of its training data.
        artifact: The model file (the cache file for the packaged model).
        metadata: What training recorded: held-out figures, source file, options, time taken.
    """

    source: str
    fingerprint: str
    data_fingerprint: str
    examples: int
    languages: list[str]
    artifact: str
    metadata: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "data_fingerprint": self.data_fingerprint,
            "examples": self.examples,
            "languages": self.languages,
            "artifact": self.artifact,
            **self.metadata,
        }


class ModelRegistry:
    """The local models of one app home: the active one, activation and reset."""

    def __init__(self, models_dir: Path, cache_dir: Path) -> None:
        self.models_dir = models_dir
        self.cache_dir = cache_dir

    @property
    def active_file(self) -> Path:
        """The pointer to the active trained model."""
        return self.models_dir / ACTIVE_FILE

    def active_artifact(self) -> Path | None:
        """The active trained model's file, or None when the packaged model decides.

        Raises:
            ModelFileError: `active.json` is unreadable.
        """
        try:
            pointer = json.loads(self.active_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ModelFileError(
                f"{self.active_file} cannot be read ({exc}); run `triage model reset` to use the packaged model"
            ) from None
        if not isinstance(pointer, dict) or not isinstance(pointer.get("artifact"), str):
            raise ModelFileError(f"{self.active_file} names no artifact; run `triage model reset`")
        return self.models_dir / str(pointer["artifact"])

    def load(self) -> LocalClassifier:
        """The classifier that decides: the active trained model, else the packaged one (trained on first use).

        Raises:
            ModelFileError: the active model's file is missing or unreadable.
        """
        artifact = self.active_artifact()
        if artifact is None:
            return LocalClassifier.load_or_train(self.cache_dir)
        classifier = load_model_file(artifact)
        if classifier is None:
            raise ModelFileError(
                f"the active model {artifact} is missing or unreadable; retrain with `triage train` "
                "or run `triage model reset` to use the packaged model"
            )
        return classifier

    def activate(self, classifier: LocalClassifier, metadata: dict[str, Any]) -> Path:
        """Save `classifier` as a versioned artifact and make it the active model (write, then swap).

        Returns:
            The artifact's path.
        """
        artifact = self.models_dir / f"{classifier.fingerprint}.joblib"
        stamped = {**metadata, "trained_at": datetime.now(UTC).isoformat(timespec="seconds")}
        classifier.save(artifact, metadata=stamped)
        pointer = {
            "artifact": artifact.name,
            "fingerprint": classifier.fingerprint,
            "data_fingerprint": classifier.data_fingerprint,
            "activated_at": stamped["trained_at"],
        }
        _write_atomically(self.active_file, json.dumps(pointer, indent=2) + "\n")
        return artifact

    def reset(self) -> bool:
        """Return to the packaged model; the trained artifacts stay on disk. Returns whether one was active."""
        try:
            self.active_file.unlink()
        except FileNotFoundError:
            return False
        return True

    def describe(self, classifier: LocalClassifier | None = None) -> ActiveModel:
        """The active model's facts (loading it if `classifier` is not given)."""
        artifact = self.active_artifact()
        classifier = classifier or self.load()
        if artifact is None:
            source = "packaged"
            path = self.cache_dir / f"local-classifier-{classifier.fingerprint.removeprefix('local-')}.joblib"
            metadata = read_model_metadata(path)
        else:
            source, path, metadata = "trained", artifact, read_model_metadata(artifact)
        return ActiveModel(
            source=source,
            fingerprint=classifier.fingerprint,
            data_fingerprint=classifier.data_fingerprint,
            examples=classifier.examples,
            languages=sorted(classifier.languages),
            artifact=str(path),
            metadata=metadata,
        )


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as tmp_file:
            tmp_file.write(text)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
