"""Classification as the product sees it: the analyser's pass plus the organisation's topics, as one document.

`Classifier` wraps an Analyser (the model pass) and adds the topic from the taxonomy stored in the database,
refitting the topic model whenever topics, their examples or responders' topic corrections change. The document
it produces is what processing stores in comment_analysis.classification and what POST /v1/classify returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from service.database import SessionFactory, end_transaction
from service.errors import InvalidPayload
from service.models import Comment, Label, Topic
from service.settings import Settings

HEAD_NAMES = ("sentiment", "offensive", "hate", "emotion", "needs_answer")
BINARY_HEADS = {  # positive and negative label, as named in the training data
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


@dataclass(frozen=True, slots=True)
class Taxonomy:
    """The topics as one short read saw them, the fingerprint of that taxonomy, and the read's order."""

    specs: list[TopicSpec]
    fingerprint: str
    # Reads are numbered as they start; the model kept for later callers is the latest read's. No caller depends
    # on it for correctness: each gets the model of exactly the taxonomy it read.
    generation: int


class Classifier:
    """An Analyser that also assigns the organisation's topic (an Analyser itself: processing uses it as one).

    The topic model is refitted outside any database transaction: callers read the taxonomy in a short read
    (`taxonomy`), end that transaction, and only then classify; the refit (embedding the examples, fitting the
    regression) runs in the analyser's and a worker thread while the event loop and the database stay free.
    A caller always gets the model of the taxonomy it read: during a refit it waits for the fresh model rather
    than use the previous one, so classify, explain and processing never show a topic from a taxonomy that has
    already changed (re-classification after a change must use the new one). Callers that read the same
    taxonomy share one refit; the model kept for later callers is the one of the latest read, whichever refit
    finishes first, so concurrent refits converge on the latest taxonomy. Examples whose text is unchanged keep
    their embeddings from the previous model, so a refit embeds only what changed.
    """

    def __init__(
        self, analyser: Analyser, factory: SessionFactory, *, other_threshold: float = DEFAULT_OTHER_THRESHOLD
    ) -> None:
        self.analyser = analyser
        self.factory = factory
        self.other_threshold = other_threshold
        self.model_version = analyser.model_version
        self._model: TopicModel | None = None
        self._fingerprint: str | None = None
        self._generation = 0  # of the taxonomy that self._model was fitted on
        self._reads = itertools.count(1)
        self._fits: dict[str, asyncio.Future[TopicModel]] = {}  # refits in progress, by fingerprint
        self._wanted: dict[str, int] = {}  # the latest read waiting for each refit in progress

    async def taxonomy(self, session: AsyncSession) -> Taxonomy:
        """Read the live taxonomy (end the session's transaction before classifying: refits take seconds)."""
        generation = next(self._reads)
        specs = await topic_specs(session)
        return Taxonomy(specs=specs, fingerprint=fingerprint(specs), generation=generation)

    async def topic_model(self, taxonomy: Taxonomy) -> TopicModel:
        """The model fitted on exactly this taxonomy: the current one, a refit in progress, or a new refit."""
        if self._model is not None and self._fingerprint == taxonomy.fingerprint:
            return self._model
        key = taxonomy.fingerprint
        self._wanted[key] = max(self._wanted.get(key, 0), taxonomy.generation)
        fit = self._fits.get(key)
        if fit is None:
            fit = self._fits[key] = asyncio.ensure_future(self._refit(taxonomy.specs, key))
            fit.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved if nobody waits
        return await asyncio.shield(fit)  # a caller that gives up does not cancel the others' refit

    async def _refit(self, specs: list[TopicSpec], key: str) -> TopicModel:
        try:
            texts, owners = TopicModel.examples_of(specs)
            known = {} if self._model is None else dict(zip(self._model.texts, self._model.vectors, strict=True))
            missing = [t for t in dict.fromkeys(texts) if t not in known]
            if missing:
                known.update(zip(missing, (a.embedding for a in await self.analyser.analyse(missing)), strict=True))
            vectors = np.stack([known[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)
            model = await asyncio.to_thread(  # fitting the regression takes up to a second or so
                TopicModel, specs, texts, owners, vectors, other_threshold=self.other_threshold, k=DEFAULT_K
            )
        finally:
            del self._fits[key]
            generation = self._wanted.pop(key)
        if generation > self._generation:
            self._model, self._fingerprint, self._generation = model, key, generation
        return model

    async def classify(self, texts: Sequence[str], taxonomy: Taxonomy) -> list[Analysis]:
        """Analyse texts and add their topics under `taxonomy` (no database access: hold no transaction)."""
        analyses = await self.analyser.analyse(texts)
        if not analyses:
            return []
        model = await self.topic_model(taxonomy)
        topics = model.classify(np.stack([a.embedding for a in analyses]))
        return [dataclasses.replace(a, topic=t) for a, t in zip(analyses, topics, strict=True)]

    async def analyse(self, texts: Sequence[str]) -> list[Analysis]:
        """Analyser protocol: read the taxonomy in a short session of our own, then classify outside it."""
        async with self.factory() as session:
            taxonomy = await self.taxonomy(session)
        return await self.classify(texts, taxonomy)

    async def warm_up(self) -> None:
        """Run the whole path once (first inference, the live taxonomy's fit) so that no comment waits for it."""
        await self.analyse(["Is the canteen open earlier for the night shift?"])

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


class ClassifyIn(BaseModel):
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


class TopicResultPublic(BaseModel):
    """The topic, its score and every topic's score (the similarity of its nearest examples, lowered when the topic
    classifier is unsure), and the nearest examples."""

    label: str
    score: float
    scores: dict[str, float]
    nearest: list[NeighbourPublic]


class LanguagePublic(BaseModel):
    """The comment's language, and whether the heads read it: they are withheld (null) only when a language they
    were not trained on is confidently detected."""

    code: str = Field(
        description="ISO 639-1 code, or 'und' when too short or too mixed to tell (e.g. '?', 'Okay.'): such texts "
        "are treated as the organisation's main language and classified."
    )
    confidence: float = Field(description="The detector's confidence in `code` (0 for 'und').")
    supported: bool = Field(
        description="False exactly when another language than the heads' (English) is confidently detected: the "
        "detector's best guess is that language and English is all but ruled out. Then every head is null; "
        "otherwise (including 'und') the heads ran."
    )


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
    topic: TopicResultPublic | None
    language: LanguagePublic | None
    pii: list[PiiPublic]
    model_version: str


class ClassifyPublic(BaseModel):
    """One result per text, in order."""

    results: list[ClassificationPublic]


async def classify_texts(
    session: AsyncSession, classifier: Classifier, data: ClassifyIn, *, settings: Settings
) -> ClassifyPublic:
    """Classify texts synchronously (the caller has an admin or responder key)."""
    if len(data.texts) > settings.classify_max_texts:
        raise InvalidPayload(f"At most {settings.classify_max_texts} texts per request.")
    too_long = [i for i, t in enumerate(data.texts) if len(t) > settings.classify_max_chars]
    if too_long:
        raise InvalidPayload(f"Texts may have at most {settings.classify_max_chars} characters (text {too_long[0]}).")
    source_thresholds = None
    if data.source is not None:
        source_thresholds = (await sources.get_by_slug(session, data.source)).thresholds
    thresholds = thresholds_for(settings, source_thresholds)
    taxonomy = await classifier.taxonomy(session)
    await end_transaction(session)  # the model's work below needs no database: hold no connection or lock meanwhile
    analyses = await classifier.classify(data.texts, taxonomy)
    return ClassifyPublic(results=[ClassificationPublic.model_validate(document(a, thresholds)) for a in analyses])
