"""Few-shot topics from the organisation's own taxonomy, over the shared sentence embeddings.

Each topic is its examples plus its description ("name: description") as one more example. A comment's score for
a topic is two things added:

- its similarity to the topic: the mean cosine similarity of its k nearest examples of that topic (k = 3 by
  default, fewer when the topic has fewer), in [-1, 1];
- ``classifier_weight`` (0.1) times the log-probability of the topic under a multinomial logistic regression fitted
  on all the examples at refit time (L2-regularised, on embeddings centred on the examples' mean and renormalised).
  A log-probability is at most 0, so the score is the similarity lowered by how unsure the regression is: about
  the similarity itself for the topic the regression is sure of, much lower for topics it rules out.

The topic with the highest score wins unless that score is below ``other_threshold``, and then the answer is
"other". Scores are reported floored at -1, so ``other_threshold=-1`` never says "other". With
``classifier_weight=0`` (or a single topic) the score is the plain similarity: the nearest-examples rule alone.
The regression is what tells topics apart (it weighs every example of every topic, not only the nearest few); the
similarity keeps what nearest examples do better (topics of several kinds of comment, many examples). Both say
"other": a comment close to no topic's examples has a low similarity, one between topics a low probability
(see classifiers/training/TOPICS.md for the evaluation).

The nearest examples are returned as the explanation; the closest example of the chosen topic is always among them.
Refitting is embedding the examples again, which costs about a second per few hundred examples, plus fitting the
regression (:mod:`classifiers.logistic`, the deterministic L-BFGS that fits the heads too; well under a second for 50
topics of 30 examples), so it happens whenever the taxonomy or the corrections change (the caller keys a cache by a
fingerprint of them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from classifiers.logistic import fit_logistic

OTHER = "other"
DEFAULT_OTHER_THRESHOLD = 0.13  # tuned on clinc150 with 8 examples per class, k=3 (switchboard evaluate-topics)
DEFAULT_K = 3  # best at 8 examples per class on clinc150 (OOS recall; switchboard evaluate-topics)
DEFAULT_CLASSIFIER_WEIGHT = 0.1  # chosen on data kept apart from the evaluation sets (classifiers/training/TOPICS.md)
L2 = 3e-5  # regularisation of the regression's weights, per example (ditto)
NEAREST_SHOWN = 3
MAX_ITERATIONS = 300  # of L-BFGS: a cap; it stops earlier, when no gradient component exceeds TOLERANCE
TOLERANCE = 1e-5  # looser than the heads' 1e-6: half the refit time; scores move by < 0.005 (x classifier_weight)

Embed = Callable[[list[str]], npt.NDArray[np.float32]]
Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as the taxonomy defines it."""

    name: str
    description: str | None = None
    examples: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Neighbour:
    """An example that decided a topic, and how close it is to the comment."""

    text: str
    topic: str
    similarity: float


@dataclass(frozen=True, slots=True)
class TopicResult:
    """The chosen topic (or "other"), its score, every topic's score and the nearest examples."""

    label: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    nearest: list[Neighbour] = field(default_factory=list)


def fingerprint(topics: Sequence[TopicSpec]) -> str:
    """A short hash that changes whenever any topic, description or example changes."""
    canonical = json.dumps([[t.name, t.description, list(t.examples)] for t in topics], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _unit(rows: Matrix) -> Matrix:
    unit: Matrix = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return unit


def _log_softmax(logits: Matrix) -> Matrix:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p: Matrix = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return log_p


@dataclass(frozen=True, slots=True)
class LinearClassifier:
    """Multinomial logistic regression on centred, renormalised embeddings."""

    centre: Matrix  # (dim,): the mean example embedding
    weights: Matrix  # (dim, classes)
    bias: Matrix  # (classes,)

    @classmethod
    def fit(
        cls, vectors: Matrix, classes: npt.NDArray[np.int64], n_classes: int, *, l2: float = L2
    ) -> LinearClassifier:
        """Minimise the mean cross-entropy plus l2/2 |weights|² by L-BFGS from zero (deterministic)."""
        centre = vectors.mean(axis=0)
        features = _unit(vectors - centre)
        weights, bias = fit_logistic(
            features, classes, n_classes, weight_decay=l2, max_iter=MAX_ITERATIONS, tolerance=TOLERANCE
        )
        return cls(centre, weights.T, bias)

    def log_probabilities(self, embeddings: Matrix) -> Matrix:
        """(n, classes) log-probabilities of the rows of ``embeddings``."""
        return _log_softmax(_unit(embeddings - self.centre) @ self.weights + self.bias)


class TopicModel:
    """A fitted taxonomy: example embeddings grouped by topic, and the regression fitted on them."""

    def __init__(
        self,
        topics: Sequence[TopicSpec],
        texts: list[str],
        owners: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.float32],
        *,
        other_threshold: float,
        k: int,
        classifier_weight: float = DEFAULT_CLASSIFIER_WEIGHT,
    ) -> None:
        self.topics = list(topics)
        self.names = [t.name for t in topics]
        self.texts = texts
        self.owners = owners
        self.vectors = vectors
        self.other_threshold = other_threshold
        self.k = k
        self.classifier_weight = classifier_weight
        self.version = f"topics-{fingerprint(topics)}"
        self.present = np.unique(owners)  # the topics with at least one example, in taxonomy order
        self.classifier: LinearClassifier | None = None
        if classifier_weight > 0 and len(self.present) > 1:
            classes = np.searchsorted(self.present, owners).astype(np.int64)
            self.classifier = LinearClassifier.fit(vectors.astype(np.float64), classes, len(self.present))

    @classmethod
    def fit(
        cls,
        topics: Sequence[TopicSpec],
        embed: Embed,
        *,
        other_threshold: float = DEFAULT_OTHER_THRESHOLD,
        k: int = DEFAULT_K,
        classifier_weight: float = DEFAULT_CLASSIFIER_WEIGHT,
    ) -> TopicModel:
        """Embed every example (and description) of every topic and fit the regression on them."""
        texts, owners = cls.examples_of(topics)
        vectors = embed(texts) if texts else np.zeros((0, 1), dtype=np.float32)
        return cls(
            topics, texts, owners, vectors, other_threshold=other_threshold, k=k, classifier_weight=classifier_weight
        )

    @staticmethod
    def examples_of(topics: Sequence[TopicSpec]) -> tuple[list[str], npt.NDArray[np.int64]]:
        """The texts to embed (descriptions as "name: description", then examples) and whose topic each is."""
        if any(t.name.strip().lower() == OTHER for t in topics):
            raise ValueError(f"'{OTHER}' is reserved for comments that fit no topic")
        texts: list[str] = []
        owners: list[int] = []
        for index, topic in enumerate(topics):
            if topic.description:
                texts.append(f"{topic.name}: {topic.description}")
                owners.append(index)
            for example in topic.examples:
                texts.append(example)
                owners.append(index)
        return texts, np.asarray(owners, dtype=np.int64)

    def topic_scores(self, embeddings: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], Matrix]:
        """(similarities, scores): each (n, topics with examples), columns in the order of ``present``."""
        similarities = embeddings @ self.vectors.T  # cosine: both sides are unit vectors
        nearest = np.empty((len(embeddings), len(self.present)))
        for column, index in enumerate(self.present):
            mine = similarities[:, self.owners == index]
            k = min(self.k, mine.shape[1])
            nearest[:, column] = -np.partition(-mine, k - 1, axis=1)[:, :k].mean(axis=1)
        if self.classifier is None:
            return similarities, nearest
        log_p = self.classifier.log_probabilities(embeddings.astype(np.float64))
        return similarities, nearest + self.classifier_weight * log_p

    def classify(self, embeddings: npt.NDArray[np.float32]) -> list[TopicResult]:
        """One result per row of (L2-normalised) embeddings."""
        if not self.texts:
            return [TopicResult(label=OTHER, score=0.0) for _ in range(len(embeddings))]
        similarities, scores = self.topic_scores(embeddings)
        reported = np.round(np.maximum(scores, -1.0), 4)
        names = [self.names[int(i)] for i in self.present]
        results = []
        for row, topic_row, shown in zip(similarities, scores, reported, strict=True):
            best = int(np.argmax(topic_row))
            score = float(shown[best])
            label = names[best] if score >= self.other_threshold else OTHER
            order = [int(i) for i in np.argsort(-row, kind="stable")[:NEAREST_SHOWN]]
            mine = np.flatnonzero(self.owners == self.present[best])
            closest = int(mine[np.argmax(row[mine])])
            if label != OTHER and closest not in order:  # the explanation shows the chosen topic's closest example
                order[-1] = closest
            nearest = [
                Neighbour(text=self.texts[i], topic=self.names[self.owners[i]], similarity=round(float(row[i]), 4))
                for i in order
            ]
            scores_by_name = {name: float(value) for name, value in zip(names, shown, strict=True)}
            results.append(TopicResult(label=label, score=score, scores=scores_by_name, nearest=nearest))
        return results
