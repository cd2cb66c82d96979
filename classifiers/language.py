"""Which language a comment is written in, and whether the heads may read it.

lingua-language-detector carries its models inside the wheel (offline). We restrict it to languages that
staff in European and global organisations actually write, which makes it faster and more accurate than
choosing among all 75.

The heads were trained on English only, but lingua often names another language for short English texts ("Wow!"
is Polish to it, "Okay." Tagalog), so the heads are withheld only when another language is *confidently* detected:
lingua's best guess is a language the heads were not trained on, with confidence at least 0.25, and every language
they were trained on is all but ruled out (below 0.05). That is exactly what ``supported: false`` means. A text
whose best guess is too weak, or that could still be English, is "und" (undetermined) and treated as the
organisation's main language: the heads run on "ok, thanks" and on "?" rather than refusing them. Measured on the
English validation splits of the labelled data (docs/data-and-models.md) by ``python -m benchmarks.language``:
0.41 % of English texts were refused under the earlier rule (best guess another language at 0.25), 0.04 % now,
while as many of the hand-written non-English comments in that benchmark are withheld as before.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SUPPORTED_LANGUAGES = frozenset({"en"})  # what the heads were trained on (all of their data is English)
UNDETERMINED = "und"
_MIN_CONFIDENCE = 0.25  # below this, lingua's best guess is no better than noise on short texts
_RULED_OUT = 0.05  # another language is confident only if every supported one is below this (benchmarks.language)
_CANDIDATES = (
    "ENGLISH", "GERMAN", "FRENCH", "SPANISH", "ITALIAN", "PORTUGUESE", "DUTCH", "POLISH", "CZECH", "SLOVAK",
    "HUNGARIAN", "ROMANIAN", "BULGARIAN", "GREEK", "SWEDISH", "DANISH", "BOKMAL", "FINNISH", "ESTONIAN",
    "LATVIAN", "LITHUANIAN", "CROATIAN", "SERBIAN", "SLOVENE", "TURKISH", "RUSSIAN", "UKRAINIAN", "ARABIC",
    "HEBREW", "HINDI", "CHINESE", "JAPANESE", "KOREAN", "VIETNAMESE", "INDONESIAN", "MALAY", "TAGALOG",
    "AFRIKAANS", "IRISH", "WELSH", "CATALAN",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LanguageResult:
    """ISO 639-1 code (or "und"), lingua's confidence (0 for "und"), and whether the heads may read the text:
    False exactly when a language they were not trained on is confidently detected."""

    code: str
    confidence: float
    supported: bool


class LanguageDetector:
    """Thread-safe, lazily built lingua detector (building it loads models: about a second)."""

    def __init__(self, supported: frozenset[str] = SUPPORTED_LANGUAGES) -> None:
        self.supported = supported
        self._detector: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load lingua's models now rather than on the first text (seconds, holding the GIL: every thread waits)."""
        self._get().compute_language_confidence_values("warm up")

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
            code = _code(confidences[0])
            supported = max((c.value for c in confidences if _code(c) in self.supported), default=0.0)
            if code not in self.supported and supported >= _RULED_OUT:  # could still be English: not confident
                results.append(LanguageResult(UNDETERMINED, 0.0, True))
                continue
            results.append(LanguageResult(code, round(float(confidences[0].value), 4), code in self.supported))
        return results


def _code(confidence: Any) -> str:
    code: str = confidence.language.iso_code_639_1.name.lower()
    return code
