"""Language detection: the heads say so instead of guessing on languages they were not trained on."""

from __future__ import annotations

import pytest

from classifiers.language import LanguageDetector


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector()


@pytest.mark.parametrize(
    ("text", "code", "supported"),
    [
        ("Will the canteen open earlier for the night shift?", "en", True),
        ("Wann öffnet die Kantine morgens für die Nachtschicht?", "de", False),
        ("La cantine ouvrira-t-elle plus tôt pour l'équipe de nuit ?", "fr", False),
        ("¿Abrirá la cafetería más temprano para el turno de noche?", "es", False),
        ("Gaat de kantine eerder open voor de nachtploeg?", "nl", False),
    ],
)
def test_comment_language_is_detected(detector: LanguageDetector, text: str, code: str, supported: bool) -> None:
    [result] = detector.detect([text])
    assert (result.code, result.supported) == (code, supported)
    assert result.confidence > 0.25


def test_text_too_short_to_tell_is_undetermined_and_still_classified(detector: LanguageDetector) -> None:
    [empty, short] = detector.detect(["   ", "ok"])
    assert empty.code == "und"
    assert empty.supported
    assert short.supported
