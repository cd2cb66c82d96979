"""Synchronous classification, for pre-publication checks and evaluation."""

from __future__ import annotations

from routers.deps import ClassifierDep, SessionDep, SettingsDep, StaffDep
from routers.edge import api_router
from routers.problems import problem_responses
from service.classification import classifier as classification
from service.classification.classifier import ClassifyIn, ClassifyPublic

router = api_router(tags=["classify"])


@router.post("/v1/classify", operation_id="classify", responses=problem_responses(401, 403, 404, 422))
async def classify(
    data: ClassifyIn, session: SessionDep, settings: SettingsDep, _staff: StaffDep, classifier: ClassifierDep
) -> ClassifyPublic:
    """Classify up to 256 texts now: every head, the topic with its nearest examples, language, personal data.

    404 if `source` names no source."""
    return await classification.classify_texts(session, classifier, data, settings=settings)
