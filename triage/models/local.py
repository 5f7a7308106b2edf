"""The local model tier: a small scikit-learn classifier trained on the project's own labelled tickets.

The classifier needs no network and no GPU: TF-IDF word and character n-grams feed two calibrated linear models,
one for the route and one for the intent. The intent is chosen among the intents of the predicted route, so the
pair is always consistent with `triage.taxonomy`.

Training takes a second or two, so `LocalClassifier.load_or_train` caches the fitted model on disk, keyed by the
training data, the scikit-learn version and `MODEL_VERSION`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import random
import re
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triage.taxonomy import INTENTS, ROUTE_OF_INTENT, ROUTES, Route

__all__ = [
    "MODEL_VERSION",
    "Example",
    "LocalClassifier",
    "Prediction",
    "load_examples",
    "normalize_text",
    "split_examples",
]

MODEL_VERSION = "1"
"""Bump whenever features, normalisation or model settings change, so stale caches are not reused."""

_TRAINING_RESOURCE = ("triage.models", "data/training.jsonl")

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_URL = re.compile(r"\b(?:https?://|www\.)\S+")
_AMOUNT = re.compile(
    r"(?:[$€£¥]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)?\s?(?:usd|eur|gbp|dollars?|euros?|pounds?)\b)"
)
# Order, invoice and ticket references: a token that mixes letters and digits, or a bare long number.
_REFERENCE = re.compile(r"#?\b(?=[a-z-]*\d)(?=\d*[a-z])[a-z0-9]+(?:-[a-z0-9]+)+\b|#\d+\b|\b\d{5,}\b")
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)?\b")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Example:
    """One labelled ticket.

    Attributes:
        text: The ticket subject and body as one string.
        route: The route that should handle it.
        intent: The intent within that route.
    """

    text: str
    route: Route
    intent: str


@dataclass(frozen=True)
class Prediction:
    """What the local classifier thinks about one ticket.

    Attributes:
        route: The most probable route.
        intent: The most probable intent among the intents of `route`.
        confidence: Calibrated probability of `route` (0..1).
        intent_confidence: Probability of `intent` given `route` (0..1), renormalised over that route's intents.
        route_scores: Calibrated probability of every route; the values sum to 1.
    """

    route: Route
    intent: str
    confidence: float
    intent_confidence: float
    route_scores: dict[Route, float]


def normalize_text(text: str) -> str:
    """Lower-case a ticket and replace volatile details with placeholder tokens.

    Emails, URLs, money amounts, order or invoice references and other numbers become `emailtok`, `urltok`,
    `amounttok`, `reftok` and `numtok`, so the model learns that a ticket mentions an amount rather than which one.

    Args:
        text: Raw ticket text.

    Returns:
        The normalised text.
    """
    lowered = text.lower()
    lowered = _EMAIL.sub(" emailtok ", lowered)
    lowered = _URL.sub(" urltok ", lowered)
    lowered = _AMOUNT.sub(" amounttok ", lowered)
    lowered = _REFERENCE.sub(" reftok ", lowered)
    lowered = _NUMBER.sub(" numtok ", lowered)
    return _SPACES.sub(" ", lowered).strip()


def _training_bytes(path: Path | None) -> tuple[bytes, str]:
    if path is not None:
        return path.read_bytes(), str(path)
    package, name = _TRAINING_RESOURCE
    resource = importlib.resources.files(package).joinpath(name)
    return resource.read_bytes(), f"{package}/{name}"


def _parse_examples(data: bytes, source: str) -> list[Example]:
    examples: list[Example] = []
    for lineno, raw in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{source}, line {lineno}"
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc.msg}).") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object with text, route and intent.")
        text, route, intent = row.get("text"), row.get("route"), row.get("intent")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: 'text' must be a non-empty string.")
        if route not in ROUTES:
            raise ValueError(f"{where}: unknown route {route!r}; expected one of {', '.join(ROUTES)}.")
        checked_route: Route = route
        if intent not in INTENTS[checked_route]:
            raise ValueError(
                f"{where}: intent {intent!r} is not an intent of route {route!r}; "
                f"expected one of {', '.join(INTENTS[checked_route])}."
            )
        examples.append(Example(text=text, route=checked_route, intent=intent))
    if not examples:
        raise ValueError(f"{source}: no examples found.")
    return examples


def load_examples(path: Path | None = None) -> list[Example]:
    """Read labelled examples from a JSON Lines file.

    Args:
        path: A file with one `{"text": ..., "route": ..., "intent": ...}` object per line. Defaults to the
            training set packaged with triage.

    Returns:
        The examples in file order.

    Raises:
        ValueError: A line is not valid JSON, or names a route or intent that is not in `triage.taxonomy`. The
            message names the file and line.
    """
    data, source = _training_bytes(path)
    return _parse_examples(data, source)


def split_examples(
    examples: Sequence[Example], *, test_fraction: float = 0.2, seed: int = 13
) -> tuple[list[Example], list[Example]]:
    """Split examples into train and test parts, stratified by intent.

    The split depends only on the examples, `test_fraction` and `seed`, so repeated calls agree.

    Args:
        examples: The labelled examples.
        test_fraction: Share of each intent's examples that goes to the test part (0 < fraction < 1). Every
            intent with at least two examples keeps at least one on each side.
        seed: Seed of the shuffle within each intent.

    Returns:
        The train part and the test part.

    Raises:
        ValueError: `test_fraction` is not strictly between 0 and 1.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
    by_intent: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_intent[example.intent].append(example)
    rng = random.Random(seed)
    train: list[Example] = []
    test: list[Example] = []
    for intent in sorted(by_intent):
        group = list(by_intent[intent])
        rng.shuffle(group)
        n_test = round(len(group) * test_fraction)
        if len(group) >= 2:
            n_test = min(max(n_test, 1), len(group) - 1)
        test.extend(group[:n_test])
        train.extend(group[n_test:])
    return train, test


def _cache_key(training_data: bytes) -> str:
    import sklearn

    digest = hashlib.sha256()
    for part in (training_data, sklearn.__version__.encode(), MODEL_VERSION.encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:24]


def _build_features() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    return FeatureUnion(
        [
            (
                "words",
                TfidfVectorizer(
                    analyzer="word",
                    ngram_range=(1, 2),
                    token_pattern=r"(?u)\b\w+\b",
                    sublinear_tf=True,
                ),
            ),
            (
                "chars",
                TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
            ),
        ]
    )


def _fit_calibrated(features: Any, labels: Sequence[str]) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import LinearSVC

    smallest = min(labels.count(label) for label in set(labels))
    folds = StratifiedKFold(n_splits=max(2, min(5, smallest)), shuffle=True, random_state=0)
    model = CalibratedClassifierCV(
        LinearSVC(C=1.0, class_weight="balanced", random_state=0),
        method="sigmoid",
        cv=folds,
        ensemble=False,
    )
    model.fit(features, list(labels))
    return model


class LocalClassifier:
    """Route and intent classifier over TF-IDF features, with calibrated probabilities.

    A route's score is the mean of the route model's probability and the summed probabilities of that route's
    intents under the intent model.

    Build one with `train` or `load_or_train`; the constructor takes already fitted scikit-learn objects.
    """

    def __init__(self, features: Any, route_model: Any, intent_model: Any) -> None:
        self._features = features
        self._route_model = route_model
        self._intent_model = intent_model
        self._route_classes: list[Route] = [_as_route(label) for label in route_model.classes_]
        self._intent_classes: list[str] = [str(label) for label in intent_model.classes_]

    @classmethod
    def train(cls, examples: Sequence[Example]) -> LocalClassifier:
        """Fit a classifier on labelled examples.

        Args:
            examples: Training examples; every route and intent that should be predictable needs at least two.

        Returns:
            The fitted classifier.

        Raises:
            ValueError: `examples` is empty or covers fewer than two routes.
        """
        if not examples:
            raise ValueError("Cannot train the local classifier on zero examples.")
        if len({example.route for example in examples}) < 2:
            raise ValueError("The local classifier needs examples of at least two routes.")
        features = _build_features()
        matrix = features.fit_transform([normalize_text(example.text) for example in examples])
        route_model = _fit_calibrated(matrix, [example.route for example in examples])
        intent_model = _fit_calibrated(matrix, [example.intent for example in examples])
        return cls(features, route_model, intent_model)

    @classmethod
    def load_or_train(cls, cache_dir: Path) -> LocalClassifier:
        """Load the classifier trained on the packaged examples from a cache, training it on first use.

        The cache file name carries a hash of the training data, the scikit-learn version and `MODEL_VERSION`, so
        any change to them trains a fresh model. The file is written atomically; a cache that cannot be read is
        replaced by a freshly trained model. The cache is a pickle: point `cache_dir` only at a directory that
        untrusted users cannot write to.

        Args:
            cache_dir: Directory for the cache file; created if missing.

        Returns:
            The classifier.
        """
        data, source = _training_bytes(None)
        cache_path = cache_dir / f"local-classifier-{_cache_key(data)}.joblib"
        cached = _read_cache(cache_path)
        if cached is not None:
            return cached
        classifier = cls.train(_parse_examples(data, source))
        classifier._write_cache(cache_path)
        return classifier

    def predict(self, text: str) -> Prediction:
        """Classify one ticket.

        Args:
            text: The ticket subject and body.

        Returns:
            The prediction.
        """
        return self.predict_many([text])[0]

    def predict_many(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify several tickets in one pass.

        Args:
            texts: Ticket texts.

        Returns:
            One prediction per text, in order.
        """
        if not texts:
            return []
        matrix = self._features.transform([normalize_text(text) for text in texts])
        route_probabilities = self._route_model.predict_proba(matrix)
        intent_probabilities = self._intent_model.predict_proba(matrix)
        return [
            self._prediction(route_row, intent_row)
            for route_row, intent_row in zip(route_probabilities, intent_probabilities, strict=True)
        ]

    def _prediction(self, route_row: Any, intent_row: Any) -> Prediction:
        by_intent = dict(zip(self._intent_classes, (float(p) for p in intent_row), strict=True))
        # The route model and the intent model (summed per route) see the same features but err differently;
        # averaging the two calibrated distributions is measurably more accurate than either alone.
        raw = dict.fromkeys(ROUTES, 0.0)
        for route, probability in zip(self._route_classes, route_row, strict=True):
            raw[route] += max(float(probability), 0.0) / 2
        for intent, probability in by_intent.items():
            raw[ROUTE_OF_INTENT[intent]] += max(probability, 0.0) / 2
        total = sum(raw.values())
        route_scores: dict[Route, float] = {
            route: (raw[route] / total if total > 0 else 1.0 / len(ROUTES)) for route in ROUTES
        }
        best_route = max(route_scores, key=lambda route: route_scores[route])
        candidates = {intent: by_intent.get(intent, 0.0) for intent in INTENTS[best_route]}
        best_intent = max(candidates, key=lambda intent: candidates[intent])
        within = sum(candidates.values())
        intent_confidence = candidates[best_intent] / within if within > 0 else 1.0 / len(candidates)
        return Prediction(
            route=best_route,
            intent=best_intent,
            confidence=route_scores[best_route],
            intent_confidence=intent_confidence,
            route_scores=route_scores,
        )

    def _write_cache(self, cache_path: Path) -> None:
        import joblib

        cache_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model_version": MODEL_VERSION,
            "features": self._features,
            "route_model": self._route_model,
            "intent_model": self._intent_model,
        }
        handle, tmp_name = tempfile.mkstemp(prefix=f".{cache_path.name}.", suffix=".tmp", dir=cache_path.parent)
        try:
            with os.fdopen(handle, "wb") as tmp_file:
                joblib.dump(payload, tmp_file)
            os.replace(tmp_name, cache_path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise


def _read_cache(cache_path: Path) -> LocalClassifier | None:
    import joblib

    if not cache_path.is_file():
        return None
    try:
        payload = joblib.load(cache_path)
        if not isinstance(payload, dict) or payload.get("model_version") != MODEL_VERSION:
            return None
        return LocalClassifier(payload["features"], payload["route_model"], payload["intent_model"])
    except Exception:
        # A truncated, corrupt or foreign cache file is not worth failing over: the caller retrains.
        return None


def _as_route(label: object) -> Route:
    for route in ROUTES:
        if route == label:
            return route
    raise ValueError(f"The route model predicts {label!r}, which is not a route in triage.taxonomy.")
