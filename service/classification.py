"""Classification as the product sees it: the analyser's pass plus the organisation's topics, as one document.

`Classifier` wraps an Analyser (the model pass) and adds the topic from the taxonomy stored in the database,
refitting the topic model whenever topics, their examples or responders' topic corrections change. The document
it produces is what processing stores in comment_analysis.classification and what POST /v1/classify returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from classifiers.pii import redact
from classifiers.pipeline import Analyser, Analysis
from classifiers.topics import DEFAULT_K, DEFAULT_OTHER_THRESHOLD, TopicModel, TopicSpec, fingerprint
from service import sources
from service.database import SessionFactory
from service.errors import InvalidPayload
from service.keys import Principal, require_role
from service.models import Comment, Label, Role, Topic
from service.settings import Settings

HEAD_NAMES = ("sentiment", "offensive", "hate", "emotion", "needs_answer")
BINARY_HEADS = {  # positive and negative label, as named in ../shared/data
    "offensive": ("offensive", "not-offensive"),
    "hate": ("hate", "not-hate"),
    "needs_answer": ("needs_answer", "no_answer"),
}
CORRECTIONS_PER_TOPIC = 50  # the most recent responder corrections that join a topic's examples


async def topic_specs(session: AsyncSession) -> list[TopicSpec]:
    """The live taxonomy, each topic's examples followed by the bodies of comments responders filed under it."""
    topics = (
        await session.execute(sa.select(Topic).where(col(Topic.deleted_at).is_(None)).order_by(col(Topic.id)))
    ).scalars()
    latest = (
        sa.select(col(Label.comment_id), sa.func.max(col(Label.id)).label("id"))
        .group_by(col(Label.comment_id))
        .subquery()
    )
    corrections = await session.execute(
        sa.select(col(Label.topic), col(Comment.body))
        .join(latest, col(Label.id) == latest.c.id)
        .join(Comment, col(Comment.id) == col(Label.comment_id))
        .where(col(Label.topic).is_not(None), col(Comment.deleted_at).is_(None))
        .order_by(col(Label.id).desc())
    )
    corrected: dict[str, list[str]] = defaultdict(list)
    for topic, body in corrections.all():
        if topic and body and len(corrected[topic]) < CORRECTIONS_PER_TOPIC:
            corrected[topic].append(body)
    return [
        TopicSpec(name=t.name, description=t.description, examples=(*t.examples, *corrected.get(t.name, ())))
        for t in topics
    ]


class Classifier:
    """An Analyser that also assigns the organisation's topic (an Analyser itself: processing uses it as one)."""

    def __init__(
        self, analyser: Analyser, factory: SessionFactory, *, other_threshold: float = DEFAULT_OTHER_THRESHOLD
    ) -> None:
        self.analyser = analyser
        self.factory = factory
        self.other_threshold = other_threshold
        self.model_version = analyser.model_version
        self._model: TopicModel | None = None
        self._fingerprint: str | None = None
        self._lock = asyncio.Lock()

    async def topic_model(self, session: AsyncSession) -> TopicModel:
        """The fitted taxonomy, refitted if it changed since the last call."""
        specs = await topic_specs(session)
        current = fingerprint(specs)
        async with self._lock:
            if self._model is None or self._fingerprint != current:
                texts, owners = TopicModel.examples_of(specs)
                analyses = await self.analyser.analyse(texts) if texts else []
                vectors = np.stack([a.embedding for a in analyses]) if analyses else np.zeros((0, 1), dtype=np.float32)
                self._model = await asyncio.to_thread(  # fitting the regression takes up to a second or so
                    TopicModel, specs, texts, owners, vectors, other_threshold=self.other_threshold, k=DEFAULT_K
                )
                self._fingerprint = current
            return self._model

    async def classify(self, session: AsyncSession, texts: Sequence[str]) -> list[Analysis]:
        """Analyse texts and add their topics (reads the taxonomy through `session`)."""
        analyses = await self.analyser.analyse(texts)
        if not analyses:
            return []
        model = await self.topic_model(session)
        topics = model.classify(np.stack([a.embedding for a in analyses]))
        return [dataclasses.replace(a, topic=t) for a, t in zip(analyses, topics, strict=True)]

    async def analyse(self, texts: Sequence[str]) -> list[Analysis]:
        """Analyser protocol: classify with a session of our own."""
        async with self.factory() as session:
            return await self.classify(session, texts)

    async def aclose(self) -> None:
        """Close the wrapped analyser."""
        await self.analyser.aclose()


def thresholds_for(settings: Settings, source_thresholds: Mapping[str, float] | None) -> dict[str, float]:
    """The binary heads' decision thresholds: the settings, overridden by the source's own."""
    merged = {
        "offensive": settings.offensive_threshold,
        "hate": settings.hate_threshold,
        "needs_answer": settings.needs_answer_threshold,
    }
    merged.update(source_thresholds or {})
    return merged


def decide(name: str, label: str, scores: Mapping[str, float], thresholds: Mapping[str, float]) -> str:
    """A binary head's label under these thresholds (other heads keep their label)."""
    if name not in BINARY_HEADS or name not in thresholds:
        return label
    positive, negative = BINARY_HEADS[name]
    if positive not in scores:
        return label
    return positive if scores[positive] >= thresholds[name] else negative


def document(analysis: Analysis, thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The classification document: every head, topic with its explanation, language, personal data, version.

    Binary heads (offensive, hate, needs_answer) decide with `thresholds` on their positive label's probability.
    """
    doc: dict[str, Any] = dict.fromkeys(HEAD_NAMES)
    for name, result in (analysis.heads or {}).items():
        doc[name] = {
            "label": decide(name, result.label, result.scores, thresholds or {}),
            "scores": {k: round(v, 4) for k, v in result.scores.items()},
        }
    topic = analysis.topic
    doc["topic"] = (
        None
        if topic is None
        else {
            "label": topic.label,
            "score": topic.score,
            "scores": topic.scores,
            # Examples may be real comments (corrections): what leaves the database is redacted.
            "nearest": [{"text": redact(n.text), "topic": n.topic, "similarity": n.similarity} for n in topic.nearest],
        }
    )
    language = analysis.language
    doc["language"] = (
        None
        if language is None
        else {"code": language.code, "confidence": language.confidence, "supported": language.supported}
    )
    doc["pii"] = [{"kind": p.kind, "start": p.start, "end": p.end} for p in analysis.pii]
    doc["model_version"] = analysis.model_version
    return doc


class ClassifyRequest(BaseModel):
    """Body of POST /v1/classify."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, description="Comments to classify (limits: settings).")
    source: str | None = Field(None, description="Apply this source's head thresholds (default: the settings').")


class HeadPublic(BaseModel):
    """One head's answer: the label and the calibrated probability of every label."""

    label: str
    scores: dict[str, float]


class NeighbourPublic(BaseModel):
    """An example (redacted) that decided the topic."""

    text: str
    topic: str
    similarity: float


class TopicPublic(BaseModel):
    """The topic, its score and every topic's score (the similarity of its nearest examples, lowered when the topic
    classifier is unsure), and the nearest examples."""

    label: str
    score: float
    scores: dict[str, float]
    nearest: list[NeighbourPublic]


class LanguagePublic(BaseModel):
    """The comment's language and whether the heads were trained on it (if not, heads are null)."""

    code: str
    confidence: float
    supported: bool


class PiiPublic(BaseModel):
    """A span of personal data."""

    kind: str
    start: int
    end: int


class ClassificationPublic(BaseModel):
    """What the classifiers say about one comment (exactly what processing stores)."""

    sentiment: HeadPublic | None
    offensive: HeadPublic | None
    hate: HeadPublic | None
    emotion: HeadPublic | None
    needs_answer: HeadPublic | None
    topic: TopicPublic | None
    language: LanguagePublic | None
    pii: list[PiiPublic]
    model_version: str


class ClassifyResponse(BaseModel):
    """One result per text, in order."""

    results: list[ClassificationPublic]


async def classify_texts(
    session: AsyncSession, classifier: Classifier, data: ClassifyRequest, *, settings: Settings, principal: Principal
) -> ClassifyResponse:
    """Classify texts synchronously (admin or responder keys)."""
    require_role(principal, Role.admin, Role.responder)
    if len(data.texts) > settings.classify_max_texts:
        raise InvalidPayload(f"At most {settings.classify_max_texts} texts per request.")
    too_long = [i for i, t in enumerate(data.texts) if len(t) > settings.classify_max_chars]
    if too_long:
        raise InvalidPayload(f"Texts may have at most {settings.classify_max_chars} characters (text {too_long[0]}).")
    source_thresholds = None
    if data.source is not None:
        source_thresholds = (await sources.get_by_slug(session, data.source)).thresholds
    thresholds = thresholds_for(settings, source_thresholds)
    analyses = await classifier.classify(session, data.texts)
    return ClassifyResponse(results=[ClassificationPublic.model_validate(document(a, thresholds)) for a in analyses])
