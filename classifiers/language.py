"""Which language a comment is written in, and whether the heads were trained on it.

lingua-language-detector carries its models inside the wheel (offline). We restrict it to languages that
staff in European and global organisations actually write, which makes it faster and more accurate than
choosing among all 75. A text too short or too mixed to tell is "und" (undetermined) and treated as the
organisation's main language: heads still run on "ok, thanks" rather than refusing it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SUPPORTED_LANGUAGES = frozenset({"en"})  # what the heads were trained on (all of ../shared/data is English)
UNDETERMINED = "und"
_MIN_CONFIDENCE = 0.25  # below this, lingua's best guess is no better than noise on short texts
_CANDIDATES = (
    "ENGLISH", "GERMAN", "FRENCH", "SPANISH", "ITALIAN", "PORTUGUESE", "DUTCH", "POLISH", "CZECH", "SLOVAK",
    "HUNGARIAN", "ROMANIAN", "BULGARIAN", "GREEK", "SWEDISH", "DANISH", "BOKMAL", "FINNISH", "ESTONIAN",
    "LATVIAN", "LITHUANIAN", "CROATIAN", "SERBIAN", "SLOVENE", "TURKISH", "RUSSIAN", "UKRAINIAN", "ARABIC",
    "HEBREW", "HINDI", "CHINESE", "JAPANESE", "KOREAN", "VIETNAMESE", "INDONESIAN", "MALAY", "TAGALOG",
    "AFRIKAANS", "IRISH", "WELSH", "CATALAN",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LanguageResult:
    """ISO 639-1 code (or "und"), lingua's confidence, and whether the heads were trained on it."""

    code: str
    confidence: float
    supported: bool


class LanguageDetector:
    """Thread-safe, lazily built lingua detector (building it loads models: about a second)."""

    def __init__(self, supported: frozenset[str] = SUPPORTED_LANGUAGES) -> None:
        self.supported = supported
        self._detector: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._detector is None:
                from lingua import Language, LanguageDetectorBuilder

                languages = [getattr(Language, name) for name in _CANDIDATES]
                self._detector = LanguageDetectorBuilder.from_languages(*languages).build()
            return self._detector

    def detect(self, texts: Sequence[str]) -> list[LanguageResult]:
        """One result per text."""
        detector = self._get()
        results = []
        for text in texts:
            confidences = detector.compute_language_confidence_values(text) if text.strip() else []
            if not confidences or confidences[0].value < _MIN_CONFIDENCE:
                results.append(LanguageResult(UNDETERMINED, 0.0, True))
                continue
            best = confidences[0]
            code = best.language.iso_code_639_1.name.lower()
            results.append(LanguageResult(code, round(float(best.value), 4), code in self.supported))
        return results
