"""The local model tier: a small scikit-learn classifier that knows when a ticket is unlike what it was taught.

The classifier needs no network and no GPU. TF-IDF word and character n-grams feed two linear models, one for the
route and one for the intent; the intent is chosen among the intents of the predicted route, so the pair is always
consistent with `triage.taxonomy`.

Its confidence is not the linear models' score. It is the probability that the route is right, learned from
held-out predictions by a small calibrator that also sees how familiar the ticket is: the share of its words that
the training data contains, its similarity to the nearest training example of the predicted route, whether the
route model and the intent model agree, and how many content words it has at all. The held-out predictions come
from folds that hold out whole intents as well as random examples, so the calibrator has seen requests of a kind
the model was never taught and how often the route was still right for them. A ticket in a language the training
data is not written in gets no confidence at all (`triage.models.language`).

Training takes seconds, so `LocalClassifier.load_or_train` caches the fitted packaged model on disk, keyed by the
training data, the scikit-learn version and `MODEL_VERSION`; `triage.models.registry` keeps the models a team
trains with `triage train`. Training fits scikit-learn models; predicting does not use them. The fitted models are
exported to plain numpy arrays (`_Scorer`, saved as an `.npz` file beside the joblib artifact) that compute the
same scores, so a process that only classifies never imports scikit-learn or scipy (about 0.8 s of start-up) nor
pays scikit-learn's per-call validation (a few milliseconds a ticket).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import itertools
import json
import math
import os
import random
import re
import tempfile
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triage.taxonomy import INTENTS, ROUTE_OF_INTENT, ROUTES, Route
from triage.text import has_digit

__all__ = [
    "DEFAULT_INTENT",
    "MODEL_VERSION",
    "Evidence",
    "Example",
    "LocalClassifier",
    "Prediction",
    "ProgressCallback",
    "data_fingerprint",
    "load_examples",
    "normalize_text",
    "split_examples",
]

MODEL_VERSION = "2"
"""Bump whenever features, normalisation or model settings change, so stale caches are not reused."""

DEFAULT_INTENT: dict[Route, str] = {
    "billing": "billing_question",
    "technical": "troubleshooting",
    "account": "profile_update",
    "general": "product_question",
    "escalation": "human_agent_request",
}
"""The intent reported for a route when the model was trained without intents."""

FOREIGN_LANGUAGE_PROBABILITY = 0.9
"""How sure the language identifier must be before a ticket counts as written in another language."""
FOREIGN_MAX_FAMILIAR = 0.5
"""...and at most this share of its words may be familiar (English tickets with a foreign name stay English)."""
FOREIGN_CONFIDENCE = 0.02
"""The confidence of a ticket in a language the model was not trained on: it is handed on."""
CALIBRATION_FOLDS = 4
NOVEL_WEIGHT = 0.5
"""Weight of held-out predictions for intents the fold never saw, against those of familiar intents: unseen
traffic is mostly familiar requests in new words, with some requests of a new kind."""
OUT_OF_SCOPE_INTENT = "other"
"""The intent of requests that are not support requests at all. The calibrator counts a prediction of it as not
sure: the local tier recognises small talk and off-topic requests but hands them on rather than answering."""

ProgressCallback = Callable[[str], None]
"""Told what training step starts next (for a progress bar)."""

_TRAINING_RESOURCE = ("triage.models", "data/training.jsonl")

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_URL = re.compile(r"\b(?:https?://|www\.)\S+")
_AMOUNT = re.compile(
    r"(?:[$€£¥]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)?\s?(?:usd|eur|gbp|dollars?|euros?|pounds?)\b)"
)
# Order, invoice and ticket references: a token that mixes letters and digits, or a bare long number.
_REFERENCE = re.compile(r"#?\b(?=[a-z-]*\d)(?=\d*[a-z])[a-z0-9]+(?:-[a-z0-9]+)+\b|#\d+\b|\b\d{5,}\b")
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)?\b")
_WORD = re.compile(r"[^\W\d_]{2,}")
_PLACEHOLDERS = frozenset({"emailtok", "urltok", "amounttok", "reftok", "numtok"})


@dataclass(frozen=True)
class Example:
    """One labelled ticket.

    Attributes:
        text: The ticket subject and body as one string.
        route: The route that should handle it.
        intent: The intent within that route, when known.
    """

    text: str
    route: Route
    intent: str | None = None


@dataclass(frozen=True)
class Evidence:
    """Why a prediction is sure or unsure: what the calibrator saw besides the linear models' scores.

    Attributes:
        familiar_words: Share of the ticket's content words that occur in the training data (0..1).
        content_words: How many content words (not stop words, numbers or placeholders) the ticket has.
        nearest_similarity: Cosine similarity (word n-grams) to the closest training example of the predicted route.
        views_agree: Whether the route model and the intent model (summed per route) pick the same route.
        margin: Gap between the best and second-best route in the models' combined distribution.
        language: ISO 639-1 code of the ticket's language.
        language_probability: How sure the language identifier is.
        foreign_language: The ticket is written in a language the model was not trained on.
    """

    familiar_words: float
    content_words: int
    nearest_similarity: float
    views_agree: bool
    margin: float
    language: str
    language_probability: float
    foreign_language: bool

    def reasons(self, confidence: float, intent: str = "") -> list[str]:
        """Short sentences for the audit trail: what made the confidence high or low."""
        from triage.models.language import language_name

        if self.foreign_language:
            return [f"written in {language_name(self.language)} ({self.language}), which the model was not taught"]
        reasons = [
            f"{self.familiar_words:.0%} of {self.content_words} content words familiar",
            f"nearest training example similarity {self.nearest_similarity:.2f}",
            "route and intent models agree" if self.views_agree else "route and intent models disagree",
        ]
        if intent == OUT_OF_SCOPE_INTENT:
            reasons.insert(0, "reads as off-topic, not a support request")
        if self.content_words == 0:
            reasons.insert(0, "no content words to go on")
        return [f"confidence {confidence:.2f}: " + "; ".join(reasons)]

    def as_dict(self) -> dict[str, float | int | bool | str]:
        """The evidence as plain JSON-able values."""
        return {
            "familiar_words": round(float(self.familiar_words), 4),
            "content_words": int(self.content_words),
            "nearest_similarity": round(float(self.nearest_similarity), 4),
            "views_agree": bool(self.views_agree),
            "margin": round(float(self.margin), 4),
            "language": str(self.language),
            "language_probability": round(float(self.language_probability), 4),
            "foreign_language": bool(self.foreign_language),
        }


@dataclass(frozen=True)
class Prediction:
    """What the local classifier thinks about one ticket.

    Attributes:
        route: The most probable route.
        intent: The most probable intent among the intents of `route`.
        confidence: Calibrated probability that `route` is right, familiarity and language considered (0..1).
        intent_confidence: Share of `intent` among the intents of `route` in the intent model (0..1).
        route_scores: The linear models' combined distribution over routes (sums to 1); it does not know how
            familiar the ticket is: `confidence` does.
        evidence: What the calibrator saw.
    """

    route: Route
    intent: str
    confidence: float
    intent_confidence: float
    route_scores: dict[Route, float]
    evidence: Evidence


def normalize_text(text: str) -> str:
    """Lower-case a ticket and replace volatile details with placeholder tokens.

    Emails, URLs, money amounts, order or invoice references and other numbers become `emailtok`, `urltok`,
    `amounttok`, `reftok` and `numtok`, so the model learns that a ticket mentions an amount rather than which one.

    Args:
        text: Raw ticket text.

    Returns:
        The normalised text.
    """
    # A substitution is skipped when the text lacks what each of its matches contains ("@"; "http" or "www."; a
    # digit, which no replacement brings back): most tickets have none, and the searches were most of this call.
    lowered = text.lower()
    if "@" in lowered:
        lowered = _EMAIL.sub(" emailtok ", lowered)
    if "http" in lowered or "www." in lowered:
        lowered = _URL.sub(" urltok ", lowered)
    if has_digit(lowered):
        lowered = _AMOUNT.sub(" amounttok ", lowered)
        lowered = _REFERENCE.sub(" reftok ", lowered)
        lowered = _NUMBER.sub(" numtok ", lowered)
    return " ".join(lowered.split())  # `str.split` and `\s` agree on what is white space


def _content_words(normalized: str, stop_words: frozenset[str]) -> list[str]:
    return [w for w in _WORD.findall(normalized) if w not in stop_words and w not in _PLACEHOLDERS]


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


def data_fingerprint(examples: Sequence[Example]) -> str:
    """A short hash of labelled examples (text, route, intent, in order): which data a model was taught."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.text, example.route, example.intent]).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:12]


def split_examples(
    examples: Sequence[Example], *, test_fraction: float = 0.2, seed: int = 13
) -> tuple[list[Example], list[Example]]:
    """Split examples into train and test parts, stratified by intent (by route for examples without one).

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
    by_stratum: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_stratum[_stratum(example)].append(example)
    rng = random.Random(seed)
    train: list[Example] = []
    test: list[Example] = []
    for stratum in sorted(by_stratum):
        group = list(by_stratum[stratum])
        rng.shuffle(group)
        n_test = round(len(group) * test_fraction)
        if len(group) >= 2:
            n_test = min(max(n_test, 1), len(group) - 1)
        test.extend(group[:n_test])
        train.extend(group[n_test:])
    return train, test


def _stratum(example: Example) -> str:
    return example.intent or f"route:{example.route}"


def model_fingerprint(examples: Sequence[Example]) -> str:
    """The fingerprint of the model these examples train: data, scikit-learn version and `MODEL_VERSION`.

    Training is deterministic, so the fingerprint names the model; runs record it as `model_version`.
    """
    digest = hashlib.sha256()
    for part in (data_fingerprint(examples), _sklearn_version(), MODEL_VERSION):
        digest.update(part.encode())
        digest.update(b"\0")
    return "local-" + digest.hexdigest()[:12]


def _sklearn_version() -> str:
    """scikit-learn's version, read from its installed metadata: importing it takes longer than a ticket."""
    from importlib.metadata import version

    return version("scikit-learn")


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
                    dtype=_float32(),
                ),
            ),
            (
                "chars",
                TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, dtype=_float32()),
            ),
        ]
    )


def _float32() -> Any:
    import numpy

    return numpy.float32


def _fit_linear(features: Any, labels: Sequence[str]) -> Any:
    from sklearn.svm import LinearSVC

    model = LinearSVC(C=0.5, class_weight="balanced", random_state=0)
    model.fit(features, list(labels))
    return model


def _softmax_rows(scores: Any, scale: float) -> Any:
    import numpy

    shifted = scores * scale
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    exp = numpy.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


_SCORE_SCALE = 3.0
"""Turns linear margins into a distribution over routes; the calibrator corrects its overconfidence."""
_WORD_TOKEN = re.compile(r"(?u)\b\w+\b")
SCORER_FORMAT = "1"
"""Version of the `.npz` file layout that `LocalClassifier.save` writes beside the joblib artifact."""


@dataclass
class _Raw:
    """What the linear models and the neighbour search say about a batch of texts, before calibration."""

    routes: list[Route]
    combined: Any  # (n, len(ROUTES)) combined distribution
    intents: list[str]
    intent_confidence: list[float]
    views_agree: list[bool]
    familiar: list[float]
    content_words: list[int]
    nearest_route: list[float]
    nearest_any: list[float]

    def calibration_features(self) -> Any:
        """One row per text: top score, margin, views agree, familiar share, nearest similarities, words, other."""
        import numpy

        rows = []
        for row, scores in enumerate(self.combined.tolist()):
            ordered = sorted(scores)
            words = self.content_words[row]
            rows.append(
                [
                    ordered[-1],
                    ordered[-1] - ordered[-2],
                    float(self.views_agree[row]),
                    self.familiar[row],
                    self.nearest_route[row],
                    self.nearest_any[row],
                    min(float(words), 12.0) / 12.0,
                    float(words == 0),
                    float(self.intents[row] == OUT_OF_SCOPE_INTENT),
                ]
            )
        return numpy.array(rows, dtype=numpy.float64).reshape(len(rows), 9)


@dataclass
class _Core:
    """The fitted scikit-learn models, the training vocabulary and the neighbour index; no calibration.

    Only training builds one; `scorer` exports it to plain arrays, which is what predicts. (Older artifacts pickled
    this class, so its name and fields stay as they are.)
    """

    features: Any
    route_model: Any
    intent_model: Any | None
    neighbours: Any  # CSR matrix of the training examples' word-n-gram vectors (L2-normalised)
    neighbour_routes: Any  # route index of each neighbour row
    vocabulary: frozenset[str]
    n_word_features: int = field(default=0)

    @classmethod
    def fit(cls, examples: Sequence[Example]) -> _Core:
        import numpy
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
        from sklearn.preprocessing import normalize

        normalized = [normalize_text(example.text) for example in examples]
        features = _build_features()
        matrix = features.fit_transform(normalized).tocsr()
        route_model = _fit_linear(matrix, [example.route for example in examples])
        with_intent = [i for i, example in enumerate(examples) if example.intent]
        intent_labels = [str(examples[i].intent) for i in with_intent]
        intent_model = _fit_linear(matrix[with_intent], intent_labels) if len(set(intent_labels)) >= 2 else None
        n_words = len(features.transformer_list[0][1].vocabulary_)
        stop_words = frozenset(ENGLISH_STOP_WORDS)
        vocabulary = frozenset(word for text in normalized for word in _content_words(text, stop_words))
        return cls(
            features=features,
            route_model=route_model,
            intent_model=intent_model,
            neighbours=normalize(matrix[:, :n_words], norm="l2", axis=1, copy=True).tocsr(),
            neighbour_routes=numpy.array([ROUTES.index(example.route) for example in examples]),
            vocabulary=vocabulary,
            n_word_features=n_words,
        )

    def scorer(self) -> _Scorer:
        """The same model as plain numpy arrays (see `_Scorer`)."""
        import numpy
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        (_, words), (_, chars) = self.features.transformer_list
        for vectorizer, analyzer, ngrams in ((words, "word", (1, 2)), (chars, "char_wb", (2, 5))):
            settings = (vectorizer.analyzer, tuple(vectorizer.ngram_range), vectorizer.norm, vectorizer.sublinear_tf)
            if settings != (analyzer, ngrams, "l2", True) or vectorizer.stop_words is not None:
                raise ValueError(f"the {analyzer} features were fitted with settings the scorer does not reproduce")
        neighbours = self.neighbours.tocsr()
        return _Scorer(
            word_terms=_terms_by_index(words.vocabulary_),
            word_idf=numpy.asarray(words.idf_, dtype=numpy.float32),
            char_terms=_terms_by_index(chars.vocabulary_),
            char_idf=numpy.asarray(chars.idf_, dtype=numpy.float32),
            route=_LinearLayer.of(self.route_model),
            intent=_LinearLayer.of(self.intent_model) if self.intent_model is not None else None,
            neighbour_rows=numpy.repeat(numpy.arange(neighbours.shape[0]), numpy.diff(neighbours.indptr)),
            neighbour_columns=numpy.asarray(neighbours.indices, dtype=numpy.int64),
            neighbour_values=numpy.asarray(neighbours.data, dtype=numpy.float32),
            neighbour_routes=numpy.asarray(self.neighbour_routes, dtype=numpy.int64),
            vocabulary=self.vocabulary,
            stop_words=frozenset(ENGLISH_STOP_WORDS),
        )


def _terms_by_index(vocabulary: dict[str, int]) -> list[str]:
    terms = [""] * len(vocabulary)
    for term, index in vocabulary.items():
        terms[index] = term
    return terms


@dataclass
class _LinearLayer:
    """A fitted linear model's margins as arrays: `values @ weights[indices] + bias`, one column per class."""

    classes: list[str]
    weights: Any  # (n_features, n_classes), float64
    bias: Any  # (n_classes,)

    @classmethod
    def of(cls, model: Any) -> _LinearLayer:
        import numpy

        weights = numpy.asarray(model.coef_, dtype=numpy.float64)
        bias = numpy.asarray(model.intercept_, dtype=numpy.float64).reshape(-1)
        if weights.shape[0] == 1:  # two classes: scikit-learn keeps the positive class's margin only
            weights, bias = numpy.vstack([-weights, weights]), numpy.concatenate([-bias, bias])
        return cls([str(label) for label in model.classes_], numpy.ascontiguousarray(weights.T), bias)

    def margins(self, indices: Any, values: Any) -> Any:
        return values @ self.weights[indices] + self.bias


@dataclass
class _Scorer:
    """The fitted model as plain numpy arrays: it scores tickets without importing scikit-learn or scipy.

    It computes what the scikit-learn pipeline computes (the word and `char_wb` TF-IDF of `_build_features`, the
    linear models' decision functions, the cosine similarity to the training examples), in float32 where the
    pipeline uses float32, so the results agree to rounding (`tests/unit/test_local_classifier.py` checks it).
    """

    word_terms: list[str]
    word_idf: Any
    char_terms: list[str]
    char_idf: Any
    route: _LinearLayer
    intent: _LinearLayer | None
    neighbour_rows: Any  # training example of each stored non-zero
    neighbour_columns: Any  # its word feature
    neighbour_values: Any  # its weight (rows L2-normalised)
    neighbour_routes: Any  # route index of each training example
    vocabulary: frozenset[str]
    stop_words: frozenset[str]
    _word_index: dict[str, int] = field(init=False, repr=False)
    _idf: Any = field(init=False, repr=False)
    """The word features' IDF, then the character n-grams' (numbered as `features` numbers them)."""
    _char_index: dict[str, int] = field(init=False, repr=False)
    _word_chars: dict[str, list[int]] = field(init=False, repr=False)
    """The known character n-grams of each training word met so far, numbered as `features` numbers them (never a
    word of the training vocabulary's outside: no customer's text is kept)."""
    _postings: tuple[Any, Any, Any] = field(init=False, repr=False)
    """The neighbour index by word feature: where each feature's entries start, their rows and their values."""
    _route_columns: list[int] = field(init=False, repr=False)
    """The `ROUTES` index of each of the route model's classes."""
    _intents_of_route: list[list[int]] = field(init=False, repr=False)
    """By `ROUTES` index: the intent model's columns whose intent belongs to that route, in column order."""
    _neighbours_of_route: list[Any] = field(init=False, repr=False)
    """By `ROUTES` index: the training examples of that route."""

    def __post_init__(self) -> None:
        import numpy

        self._word_index = {term: index for index, term in enumerate(self.word_terms)}
        self._char_index = {term: index for index, term in enumerate(self.char_terms)}
        self._idf = numpy.concatenate([self.word_idf, self.char_idf])
        self._word_chars = {}
        order = numpy.argsort(self.neighbour_columns, kind="stable")
        starts = numpy.searchsorted(self.neighbour_columns[order], numpy.arange(self.n_word_features + 1))
        self._postings = (starts, self.neighbour_rows[order], self.neighbour_values[order])
        self._route_columns = [ROUTES.index(_as_route(label)) for label in self.route.classes]
        intents = self.intent.classes if self.intent is not None else []
        self._intents_of_route = [
            [column for column, intent in enumerate(intents) if ROUTE_OF_INTENT[intent] == route] for route in ROUTES
        ]
        self._neighbours_of_route = [numpy.flatnonzero(self.neighbour_routes == k) for k in range(len(ROUTES))]
        layers = [self.route] if self.intent is None else [self.route, self.intent]
        numbers = [self.word_idf, self.char_idf, self.neighbour_values]
        numbers += [array for layer in layers for array in (layer.weights, layer.bias)]
        if not all(numpy.isfinite(array).all() for array in numbers):
            raise ValueError("the model's arrays hold a NaN or an infinity: the artifact is damaged; train it again")

    @property
    def n_word_features(self) -> int:
        return len(self.word_terms)

    def features(self, normalized: str) -> tuple[Any, Any, int]:
        """The TF-IDF vector of a normalised text: feature indices, their float32 values, how many are word features.

        The word features come first, in order; the character n-grams' indices follow, offset by `n_word_features`.
        Sublinear TF-IDF, each part L2-normalised on its own, as the word and `char_wb` `TfidfVectorizer`s of
        `_build_features` compute it. Both parts go through one set of array operations: a ticket's arrays are
        small, and each numpy call costs more than its arithmetic, most of all in a run whose caches the rest of the
        graph has just filled.
        """
        import numpy

        lowered = normalized.lower()
        tokens = _WORD_TOKEN.findall(lowered)
        known = self._word_index.get
        words = [index for index in map(known, tokens) if index is not None]
        words += [index for index in map(known, map(" ".join, itertools.pairwise(tokens))) if index is not None]
        split = len(set(words))
        # One `unique` sorts and counts both parts (the character n-grams' indices all come after the words'): the
        # Counter, sort and lists it replaced took 15% longer, a `unique` for each part 0.05 ms more a ticket.
        indices, counts = numpy.unique(
            numpy.array(words + self._char_features(lowered), dtype=numpy.int64), return_counts=True
        )
        values = numpy.log(counts.astype(numpy.float32)) + numpy.float32(1.0)
        values *= self._idf[indices]
        for part in (values[:split], values[split:]):
            norm = numpy.sqrt(numpy.dot(part, part))
            if norm > 0:
                part /= norm
        return indices, values, split

    def _char_features(self, lowered: str) -> list[int]:
        """The known character n-grams (2 to 5, inside word boundaries) of `lowered`, once per occurrence.

        Their indices are offset by `n_word_features`, as `features` numbers them. Each distinct word's n-grams are
        looked up once and repeated for its other occurrences: a long ticket (a quoted thread, a pasted log) says
        the same words hundreds of times. The order of the list is not the text's (`features` counts it).
        """
        found: list[int] = []
        index, known, offset = self._char_index, self._word_chars, self.n_word_features
        for word, times in Counter(lowered.split()).items():
            features = known.get(word)
            if features is None:
                features = [
                    offset + feature for feature in map(index.get, _word_char_ngrams(word, 2, 5)) if feature is not None
                ]
                if word in self._word_index:
                    known[word] = features
            found += features * times if times > 1 else features
        return found

    def raw(self, texts: Sequence[str]) -> _Raw:
        # Past the linear models' margins the work is a few numbers per text: it is done on Python floats, in the
        # order the array version summed them, which spares numpy's per-call cost (about 0.1 ms a ticket).
        import numpy

        normalized = [normalize_text(text) for text in texts]
        vectors = [self.features(text) for text in normalized]
        n_routes = len(ROUTES)
        route_rows = _softmax_rows(
            numpy.array([self.route.margins(idx, val) for idx, val, _ in vectors]).reshape(len(texts), -1), _SCORE_SCALE
        ).tolist()
        intent_classes = self.intent.classes if self.intent is not None else []
        intent_rows: list[list[float]] = []
        if self.intent is not None:
            intent_margins = numpy.array([self.intent.margins(idx, val) for idx, val, _ in vectors])
            intent_rows = _softmax_rows(intent_margins.reshape(len(texts), -1), _SCORE_SCALE).tolist()
        combined_rows: list[list[float]] = []
        bests: list[int] = []
        routes: list[Route] = []
        intents: list[str] = []
        intent_confidence: list[float] = []
        agree: list[bool] = []
        for row, route_row in enumerate(route_rows):
            by_route = [0.0] * n_routes
            for column, probability in zip(self._route_columns, route_row, strict=True):
                by_route[column] = probability
            if self.intent is not None:
                intent_row = intent_rows[row]
                from_intents = [0.0] * n_routes
                for k, columns in enumerate(self._intents_of_route):
                    for column in columns:
                        from_intents[k] += intent_row[column]
                combined = [(a + b) / 2 for a, b in zip(by_route, from_intents, strict=True)]
                agree.append(_argmax(by_route) == _argmax(from_intents))
            else:
                combined = by_route
                agree.append(True)
            best = _argmax(combined)
            route = ROUTES[best]
            combined_rows.append(combined)
            bests.append(best)
            routes.append(route)
            candidates = [(intent_rows[row][column], column) for column in self._intents_of_route[best]]
            if not candidates:
                intents.append(DEFAULT_INTENT[route])
                intent_confidence.append(0.0)
                continue
            chosen_probability, chosen = max(candidates, key=lambda candidate: candidate[0])  # the first of equals
            within = sum(probability for probability, _ in candidates)  # `sum`, as before: 3.12 compensates it
            intents.append(intent_classes[chosen])
            intent_confidence.append(chosen_probability / within if within > 0 else 1.0 / len(candidates))
        familiar: list[float] = []
        counts: list[int] = []
        for text in normalized:
            words = _content_words(text, self.stop_words)
            counts.append(len(words))
            familiar.append(sum(word in self.vocabulary for word in words) / len(words) if words else 0.0)
        nearest_route: list[float] = []
        nearest_any: list[float] = []
        for (idx, val, n_words), best in zip(vectors, bests, strict=True):
            similarity = self._similarities(idx[:n_words], val[:n_words])
            of_route = self._neighbours_of_route[best]
            nearest_route.append(_unit(float(similarity[of_route].max()) if of_route.size else 0.0))
            nearest_any.append(_unit(float(similarity.max()) if similarity.size else 0.0))
        return _Raw(
            routes=routes,
            combined=numpy.array(combined_rows, dtype=numpy.float64).reshape(len(texts), n_routes),
            intents=intents,
            intent_confidence=intent_confidence,
            views_agree=agree,
            familiar=familiar,
            content_words=counts,
            nearest_route=nearest_route,
            nearest_any=nearest_any,
        )

    def _similarities(self, columns: Any, word_values: Any) -> Any:
        """Cosine similarity of a text's word n-grams (their features and TF-IDF values) to every training example."""
        import numpy

        norm = numpy.sqrt(numpy.dot(word_values, word_values))
        if not norm > 0:
            return numpy.zeros(len(self.neighbour_routes))
        # Only the training examples that share a feature with the text: each feature's entries in the index.
        starts, rows, weights = self._postings
        first, lengths = starts[columns], starts[columns + 1] - starts[columns]
        entries = numpy.repeat(first - numpy.cumsum(lengths) + lengths, lengths) + numpy.arange(lengths.sum())
        products = weights[entries] * numpy.repeat(word_values / norm, lengths)
        return numpy.bincount(rows[entries], weights=products, minlength=len(self.neighbour_routes))

    def arrays(self) -> dict[str, Any]:
        """The arrays `from_arrays` reads back (for `numpy.savez`; no pickled objects)."""
        import numpy

        arrays = {
            "word_terms": _encode_lines(self.word_terms),
            "word_idf": self.word_idf,
            "char_terms": _encode_lines(self.char_terms),
            "char_idf": self.char_idf,
            "route_classes": _encode_lines(self.route.classes),
            "route_weights": self.route.weights,
            "route_bias": self.route.bias,
            "neighbour_rows": self.neighbour_rows,
            "neighbour_columns": self.neighbour_columns,
            "neighbour_values": self.neighbour_values,
            "neighbour_routes": self.neighbour_routes,
            "vocabulary": _encode_lines(sorted(self.vocabulary)),
            "stop_words": _encode_lines(sorted(self.stop_words)),
        }
        if self.intent is not None:
            arrays |= {
                "intent_classes": _encode_lines(self.intent.classes),
                "intent_weights": self.intent.weights,
                "intent_bias": self.intent.bias,
            }
        return {name: numpy.asarray(value) for name, value in arrays.items()}

    @classmethod
    def from_arrays(cls, arrays: Any) -> _Scorer:
        intent = None
        if "intent_weights" in arrays:
            intent = _LinearLayer(
                _decode_lines(arrays["intent_classes"]), arrays["intent_weights"], arrays["intent_bias"]
            )
        return cls(
            word_terms=_decode_lines(arrays["word_terms"]),
            word_idf=arrays["word_idf"],
            char_terms=_decode_lines(arrays["char_terms"]),
            char_idf=arrays["char_idf"],
            route=_LinearLayer(_decode_lines(arrays["route_classes"]), arrays["route_weights"], arrays["route_bias"]),
            intent=intent,
            neighbour_rows=arrays["neighbour_rows"],
            neighbour_columns=arrays["neighbour_columns"],
            neighbour_values=arrays["neighbour_values"],
            neighbour_routes=arrays["neighbour_routes"],
            vocabulary=frozenset(_decode_lines(arrays["vocabulary"])),
            stop_words=frozenset(_decode_lines(arrays["stop_words"])),
        )


def _word_char_ngrams(word: str, min_n: int, max_n: int) -> list[str]:
    """A word's character n-grams, the word padded with a space (scikit-learn's `char_wb`, for one word)."""
    ngrams: list[str] = []
    padded = f" {word} "
    length = len(padded)
    for n in range(min_n, max_n + 1):
        if length <= n:  # a word no longer than n counts once, whole
            ngrams.append(padded)
            break
        ngrams.extend(padded[offset : offset + n] for offset in range(length - n + 1))
    return ngrams


def _unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _argmax(values: Sequence[float]) -> int:
    """The index of the largest value, the first of equal ones (as `numpy.argmax`)."""
    best = 0
    for index, value in enumerate(values):
        if value > values[best]:
            best = index
    return best


def _encode_lines(lines: Sequence[str]) -> Any:
    import numpy

    if any("\n" in line for line in lines):
        raise ValueError("a term contains a line break")
    return numpy.frombuffer("\n".join(lines).encode("utf-8"), dtype=numpy.uint8)


def _decode_lines(data: Any) -> list[str]:
    text = bytes(data).decode("utf-8")
    return text.split("\n") if text else []


def _calibration_folds(
    examples: Sequence[Example], folds: int, seed: int = 7
) -> list[tuple[list[int], list[int], list[bool]]]:
    """Folds whose held-out part is a group of whole intents (unseen requests) plus random examples (seen kinds).

    Intents are dealt to the folds round-robin in route order, so every fold keeps examples of most routes.
    """
    groups = sorted({_stratum(example) for example in examples}, key=lambda s: (_route_of_stratum(s, examples), s))
    group_fold = {group: index % folds for index, group in enumerate(groups)}
    rng = random.Random(seed)
    random_fold = [rng.randrange(folds) for _ in examples]
    result = []
    for fold in range(folds):
        held = [
            i for i, example in enumerate(examples) if group_fold[_stratum(example)] == fold or random_fold[i] == fold
        ]
        held_set = set(held)
        train = [i for i in range(len(examples)) if i not in held_set]
        result.append((train, held, [group_fold[_stratum(examples[i])] == fold for i in held]))
    return result


def _route_of_stratum(stratum: str, examples: Sequence[Example]) -> str:
    if stratum.startswith("route:"):
        return stratum.removeprefix("route:")
    return ROUTE_OF_INTENT.get(stratum, "")


class LocalClassifier:
    """Route and intent classifier over TF-IDF features, with a confidence that knows unfamiliar tickets.

    Build one with `train` or `load_or_train`; `triage.models.registry` saves and loads trained ones.
    """

    def __init__(
        self,
        scorer: _Scorer,
        calibration: Any,
        *,
        languages: frozenset[str],
        fingerprint: str,
        data_fingerprint: str,
        examples: int,
        fitted: tuple[_Core, Any] | None = None,
    ) -> None:
        self._scorer = scorer
        self._calibration = calibration  # the calibrator's coefficients, then its intercept; None without one
        self._fitted = fitted  # the scikit-learn objects, when trained in this process (saved in the joblib file)
        self.languages = languages
        """The languages the training data is written in (ISO 639-1)."""
        self.fingerprint = fingerprint
        """Names this model: `local-` and a hash of its training data, scikit-learn version and code version."""
        self.data_fingerprint = data_fingerprint
        """Hash of the examples it was trained on."""
        self.examples = examples
        """How many examples it was trained on."""

    @classmethod
    def train(
        cls,
        examples: Sequence[Example],
        *,
        progress: ProgressCallback | None = None,
        calibration_folds: int = CALIBRATION_FOLDS,
    ) -> LocalClassifier:
        """Fit a classifier on labelled examples, and its calibrator on held-out folds of them.

        Args:
            examples: Training examples, at least two per route (far more for a useful model).
            progress: Told the name of each step as it starts.
            calibration_folds: Folds of held-out predictions the confidence is calibrated on.

        Returns:
            The fitted classifier.

        Raises:
            ValueError: `examples` is empty or covers fewer than two routes.
        """
        import numpy
        from sklearn.linear_model import LogisticRegression

        if not examples:
            raise ValueError("Cannot train the local classifier on zero examples.")
        if len({example.route for example in examples}) < 2:
            raise ValueError("The local classifier needs examples of at least two routes.")
        tell = progress or (lambda _step: None)
        features: list[Any] = []
        correct: list[Any] = []
        weights: list[Any] = []
        folds = _calibration_folds(examples, calibration_folds)
        for number, (train_rows, held_rows, novel) in enumerate(folds, start=1):
            tell(f"calibration fold {number}/{calibration_folds}")
            part = [examples[i] for i in train_rows]
            if len({example.route for example in part}) < 2 or not held_rows:
                continue
            raw = _Core.fit(part).scorer().raw([examples[i].text for i in held_rows])
            features.append(raw.calibration_features())
            weights.append(numpy.where(numpy.array(novel), NOVEL_WEIGHT, 1.0))
            correct.append(
                numpy.array(
                    [
                        raw.routes[k] == examples[i].route and raw.intents[k] != OUT_OF_SCOPE_INTENT
                        for k, i in enumerate(held_rows)
                    ]
                )
            )
        tell("final fit")
        core = _Core.fit(examples)
        calibrator = None
        if features:
            x, y = numpy.vstack(features), numpy.concatenate(correct)
            if 0 < y.sum() < len(y):
                calibrator = LogisticRegression(C=1.0, max_iter=1000)
                calibrator.fit(x, y, sample_weight=numpy.concatenate(weights))
        tell("languages")
        return cls(
            core.scorer(),
            _calibration_of(calibrator),
            languages=_languages_of(examples),
            fingerprint=model_fingerprint(examples),
            data_fingerprint=data_fingerprint(examples),
            examples=len(examples),
            fitted=(core, calibrator),
        )

    @classmethod
    def load_or_train(cls, cache_dir: Path) -> LocalClassifier:
        """Load the classifier trained on the packaged examples from a cache, training it on first use.

        The cache file name carries the model fingerprint (training data, scikit-learn version and
        `MODEL_VERSION`), so any change to them trains a fresh model. The file is written atomically; a cache that
        cannot be read is replaced by a freshly trained model. The cache is a pickle: point `cache_dir` only at a
        directory that untrusted users cannot write to. A loaded model is kept for the life of the process.

        Args:
            cache_dir: Directory for the cache file; created if missing.

        Returns:
            The classifier.
        """
        data, source = _training_bytes(None)
        examples = _parse_examples(data, source)
        cache_path = cache_dir / f"local-classifier-{model_fingerprint(examples).removeprefix('local-')}.joblib"
        cached = load_model_file(cache_path)
        if cached is not None:
            return cached
        classifier = cls.train(examples)
        classifier.save(cache_path)
        _remember(cache_path, classifier)
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
        from triage.models.language import detect_language

        if not texts:
            return []
        raw = self._scorer.raw(texts)
        if self._calibration is not None:
            import numpy

            margins = raw.calibration_features() @ self._calibration[:-1] + self._calibration[-1]
            confidences = (1.0 / (1.0 + numpy.exp(-margins))).tolist()
        else:
            confidences = raw.combined.max(axis=1).tolist()
        predictions = []
        for row, (text, scores) in enumerate(zip(texts, raw.combined.tolist(), strict=True)):
            language = detect_language(text)
            foreign = (
                language.code not in self.languages
                and language.probability >= FOREIGN_LANGUAGE_PROBABILITY
                and raw.familiar[row] <= FOREIGN_MAX_FAMILIAR
            )
            confidence = min(confidences[row], FOREIGN_CONFIDENCE) if foreign else confidences[row]
            ordered = sorted(scores)
            predictions.append(
                Prediction(
                    route=raw.routes[row],
                    intent=raw.intents[row],
                    confidence=confidence,
                    intent_confidence=raw.intent_confidence[row],
                    route_scores=dict(zip(ROUTES, scores, strict=True)),
                    evidence=Evidence(
                        familiar_words=raw.familiar[row],
                        content_words=raw.content_words[row],
                        nearest_similarity=raw.nearest_route[row],
                        views_agree=raw.views_agree[row],
                        margin=ordered[-1] - ordered[-2],
                        language=language.code,
                        language_probability=language.probability,
                        foreign_language=foreign,
                    ),
                )
            )
        return predictions

    def save(self, path: Path, *, metadata: dict[str, Any] | None = None) -> None:
        """Write the model to `path`, and its arrays beside it, each atomically (a temporary file, then a rename).

        `path` gets the joblib pickle of the scikit-learn objects (what older versions of triage read); the arrays
        that predict go to `scorer_path(path)` (an `.npz` file that loads without scikit-learn), written first.

        Args:
            path: The artifact file; its folder is created if missing.
            metadata: Extra JSON-able facts to keep with it (held-out figures, source file).

        Raises:
            ValueError: the classifier was loaded from a file rather than trained in this process.
        """
        import joblib

        if self._fitted is None:
            raise ValueError("only a classifier trained in this process can be saved")
        core, calibrator = self._fitted
        payload = {
            "model_version": MODEL_VERSION,
            "core": core,
            "calibrator": calibrator,
            "languages": sorted(self.languages),
            "fingerprint": self.fingerprint,
            "data_fingerprint": self.data_fingerprint,
            "examples": self.examples,
            "metadata": metadata or {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as tmp_file:
                joblib.dump(payload, tmp_file)
                tmp_file.flush()
                os.fsync(tmp_file.fileno())
            self._save_scorer(path, metadata or {}, artifact_bytes=os.path.getsize(tmp_name))
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def _save_scorer(self, artifact: Path, metadata: dict[str, Any], *, artifact_bytes: int) -> None:
        """Write the arrays beside `artifact`, tied to it by its size (a replaced artifact voids them)."""
        import numpy

        facts = {
            "artifact_bytes": artifact_bytes,
            "format": SCORER_FORMAT,
            "model_version": MODEL_VERSION,
            "languages": sorted(self.languages),
            "fingerprint": self.fingerprint,
            "data_fingerprint": self.data_fingerprint,
            "examples": self.examples,
            "metadata": metadata,
        }
        arrays = self._scorer.arrays()
        arrays["facts"] = numpy.frombuffer(json.dumps(facts).encode("utf-8"), dtype=numpy.uint8)
        if self._calibration is not None:
            arrays["calibration"] = numpy.asarray(self._calibration, dtype=numpy.float64)
        _write_atomically(scorer_path(artifact), lambda file: numpy.savez(file, allow_pickle=False, **arrays))


def scorer_path(artifact: Path) -> Path:
    """The `.npz` file of plain arrays written beside a joblib artifact; it is what a run loads."""
    return artifact.with_suffix(".npz")


def _calibration_of(calibrator: Any) -> Any:
    """A fitted binary logistic regression as one array: its coefficients, then its intercept (None stays None)."""
    import numpy

    if calibrator is None:
        return None
    return numpy.concatenate([numpy.asarray(calibrator.coef_, dtype=numpy.float64).reshape(-1), calibrator.intercept_])


def _write_atomically(path: Path, write: Callable[[Any], object]) -> None:
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as tmp_file:
            write(tmp_file)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


_loaded: dict[tuple[str, int, int], LocalClassifier] = {}
_loaded_lock = threading.Lock()


def _remember(path: Path, classifier: LocalClassifier) -> None:
    stat = path.stat()
    with _loaded_lock:
        _loaded[(str(path.resolve()), stat.st_mtime_ns, stat.st_size)] = classifier


def load_model_file(path: Path) -> LocalClassifier | None:
    """Load a saved model, once per process and file version; None when it is missing, corrupt or stale.

    The arrays beside the artifact (`scorer_path`) are read when they are there and name the same model; they
    load without scikit-learn. Otherwise the joblib artifact itself is read (it needs scikit-learn), and the arrays
    are written beside it for the next process.

    Args:
        path: An artifact written by `LocalClassifier.save`.

    Returns:
        The classifier, or None when the file cannot be used (the caller retrains or falls back).
    """
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _loaded_lock:
        if key in _loaded:
            return _loaded[key]
    classifier = _load_scorer_file(scorer_path(path), artifact_bytes=stat.st_size)
    if classifier is None:
        loaded = _load_joblib_file(path)
        if loaded is None:
            return None
        classifier, metadata = loaded
        with contextlib.suppress(OSError):  # a read-only folder: the next process reads the joblib file again
            classifier._save_scorer(path, metadata, artifact_bytes=stat.st_size)
    with _loaded_lock:
        _loaded[key] = classifier
    return classifier


def _load_scorer_file(path: Path, *, artifact_bytes: int) -> LocalClassifier | None:
    import numpy

    try:
        with path.open("rb") as file, numpy.load(file, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        facts = json.loads(bytes(arrays.pop("facts")).decode("utf-8"))
        if (facts.get("format"), facts.get("model_version"), facts.get("artifact_bytes")) != (
            SCORER_FORMAT,
            MODEL_VERSION,
            artifact_bytes,
        ):
            return None
        return LocalClassifier(
            _Scorer.from_arrays(arrays),
            arrays.get("calibration"),
            languages=frozenset(facts["languages"]),
            fingerprint=str(facts["fingerprint"]),
            data_fingerprint=str(facts["data_fingerprint"]),
            examples=int(facts["examples"]),
        )
    except Exception:
        # Missing, truncated or foreign: the joblib artifact is read instead.
        return None


def _load_joblib_file(path: Path) -> tuple[LocalClassifier, dict[str, Any]] | None:
    import joblib

    try:
        payload = joblib.load(path)
        if not isinstance(payload, dict) or payload.get("model_version") != MODEL_VERSION:
            return None
        core, calibrator = payload["core"], payload["calibrator"]
        classifier = LocalClassifier(
            core.scorer(),
            _calibration_of(calibrator),
            languages=frozenset(payload["languages"]),
            fingerprint=str(payload["fingerprint"]),
            data_fingerprint=str(payload["data_fingerprint"]),
            examples=int(payload["examples"]),
            fitted=(core, calibrator),
        )
        return classifier, dict(payload.get("metadata") or {})
    except Exception:
        # A truncated, corrupt or foreign file is not worth failing over: the caller retrains or falls back.
        return None


def read_model_metadata(path: Path) -> dict[str, Any]:
    """The metadata saved with a model artifact (empty when it cannot be read)."""
    import numpy

    try:
        with scorer_path(path).open("rb") as file, numpy.load(file, allow_pickle=False) as data:
            facts = json.loads(bytes(data["facts"]).decode("utf-8"))
        if facts.get("artifact_bytes") == path.stat().st_size:
            return dict(facts.get("metadata", {}))
    except Exception:
        pass  # no arrays beside the artifact, or not its own: read the artifact
    import joblib

    try:
        payload = joblib.load(path)
    except Exception:
        return {}
    return dict(payload.get("metadata", {})) if isinstance(payload, dict) else {}


def _languages_of(examples: Sequence[Example]) -> frozenset[str]:
    """The languages that a real share of the examples is confidently written in (English when none is)."""
    from triage.models.language import detect_language

    counts: Counter[str] = Counter()
    for example in examples:
        if len(example.text.split()) < 4:
            continue
        language = detect_language(example.text)
        if language.probability >= FOREIGN_LANGUAGE_PROBABILITY:
            counts[language.code] += 1
    total = sum(counts.values())
    found = {code for code, count in counts.items() if count >= max(3, math.ceil(0.05 * total))}
    return frozenset(found or {"en"})


def _as_route(label: object) -> Route:
    for route in ROUTES:
        if route == label:
            return route
    raise ValueError(f"The route model predicts {label!r}, which is not a route in triage.taxonomy.")
