"""Few-shot topics from the organisation's own taxonomy, over the shared sentence embeddings.

Each topic is its examples plus its description ("name: description") as one more example. A comment's
similarity to a topic is the mean cosine similarity of its k nearest examples of that topic (k = 3 by default,
fewer when the topic has fewer); the most similar topic wins unless that similarity is below `other_threshold`, and then
the answer is "other". The nearest examples are returned as the explanation. Refitting is embedding the
examples again, which costs about a second per few hundred examples, so it happens whenever the taxonomy or the
corrections change (the caller keys a cache by a fingerprint of them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

OTHER = "other"
DEFAULT_OTHER_THRESHOLD = 0.31  # tuned on clinc150 with 8 examples per class, k=3 (switchboard evaluate-topics)
DEFAULT_K = 3  # best at 8 examples per class on clinc150 (OOS recall) and banking77 (switchboard evaluate-topics)
NEAREST_SHOWN = 3

Embed = Callable[[list[str]], npt.NDArray[np.float32]]


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
    """The chosen topic (or "other"), its similarity, every topic's similarity and the nearest examples."""

    label: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    nearest: list[Neighbour] = field(default_factory=list)


def fingerprint(topics: Sequence[TopicSpec]) -> str:
    """A short hash that changes whenever any topic, description or example changes."""
    canonical = json.dumps([[t.name, t.description, list(t.examples)] for t in topics], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class TopicModel:
    """A fitted taxonomy: example embeddings grouped by topic."""

    def __init__(
        self,
        topics: Sequence[TopicSpec],
        texts: list[str],
        owners: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.float32],
        *,
        other_threshold: float,
        k: int,
    ) -> None:
        self.topics = list(topics)
        self.names = [t.name for t in topics]
        self.texts = texts
        self.owners = owners
        self.vectors = vectors
        self.other_threshold = other_threshold
        self.k = k
        self.version = f"topics-{fingerprint(topics)}"

    @classmethod
    def fit(
        cls,
        topics: Sequence[TopicSpec],
        embed: Embed,
        *,
        other_threshold: float = DEFAULT_OTHER_THRESHOLD,
        k: int = DEFAULT_K,
    ) -> TopicModel:
        """Embed every example (and description) of every topic."""
        texts, owners = cls.examples_of(topics)
        vectors = embed(texts) if texts else np.zeros((0, 1), dtype=np.float32)
        return cls(topics, texts, owners, vectors, other_threshold=other_threshold, k=k)

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

    def classify(self, embeddings: npt.NDArray[np.float32]) -> list[TopicResult]:
        """One result per row of (L2-normalised) embeddings."""
        if not self.texts:
            return [TopicResult(label=OTHER, score=0.0) for _ in range(len(embeddings))]
        similarities = embeddings @ self.vectors.T  # (n, examples): cosine, both sides are unit vectors
        results = []
        for row in similarities:
            per_topic: dict[str, float] = {}
            for index, name in enumerate(self.names):
                mine = np.sort(row[self.owners == index])[::-1]
                if len(mine):
                    per_topic[name] = round(float(mine[: self.k].mean()), 4)
            best = max(per_topic, key=per_topic.__getitem__)
            label = best if per_topic[best] >= self.other_threshold else OTHER
            order = np.argsort(row)[::-1][:NEAREST_SHOWN]
            nearest = [
                Neighbour(text=self.texts[i], topic=self.names[self.owners[i]], similarity=round(float(row[i]), 4))
                for i in order
            ]
            results.append(TopicResult(label=label, score=per_topic[best], scores=per_topic, nearest=nearest))
        return results
