"""Cheap surface features of a text that a mean-pooled sentence embedding barely sees: question marks, wh-words,
auxiliaries opening a question, polite requests.

They are extra inputs of the ``needs_answer`` head's lexical variant (see :class:`classifiers.heads.Heads`, whose
``predict(..., texts=...)`` computes them). The feature order is part of the artefact: :data:`FEATURES` names it,
and a heads artefact records the names it was trained with.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["FEATURES", "lexical_features"]

_WH: Final = frozenset(["what", "why", "how", "when", "where", "who", "whom", "whose", "which"])
_AUX: Final = frozenset(
    [
        "can",
        "could",
        "would",
        "will",
        "shall",
        "should",
        "do",
        "does",
        "did",
        "is",
        "are",
        "am",
        "was",
        "were",
        "have",
        "has",
        "had",
        "may",
        "might",
        "must",
        "won't",
        "wouldn't",
        "can't",
        "couldn't",
        "don't",
        "doesn't",
        "didn't",
        "isn't",
        "aren't",
        "wasn't",
        "weren't",
        "haven't",
        "hasn't",
        "shouldn't",
    ]
)
_REQUEST: Final = re.compile(
    r"\b(please|can you|could you|would you|will you|would you mind|do you mind|let me know|tell me|"
    r"i wonder|any idea|let's|let us|shall we|how about|what about|why don't)\b"
)
_SENTENCE: Final = re.compile(r"[^.!?]+[.!?]*")
_LEADING: Final = re.compile(r"^[^a-z0-9']+")

FEATURES: Final[tuple[str, ...]] = (
    "contains_question_mark",
    "ends_with_question_mark",
    "question_marks_per_sentence",
    "starts_with_wh",
    "starts_with_auxiliary",
    "a_sentence_starts_with_wh",
    "a_sentence_starts_with_auxiliary",
    "last_sentence_is_question",
    "polite_request",
    "exclamation",
)


def _first_word(sentence: str) -> str:
    words = _LEADING.sub("", sentence.strip().lower()).split()
    return words[0] if words else ""


def _features(text: str) -> list[float]:
    stripped = text.strip()
    lowered = stripped.lower()
    sentences = [s for s in (m.group(0).strip() for m in _SENTENCE.finditer(stripped)) if s] or [stripped]
    firsts = [_first_word(s) for s in sentences]
    last = sentences[-1]
    return [
        float("?" in stripped),
        float(stripped.rstrip(" \"')]").endswith("?")),
        min(stripped.count("?"), len(sentences)) / len(sentences),
        float(firsts[0] in _WH),
        float(firsts[0] in _AUX),
        float(any(w in _WH for w in firsts)),
        float(any(w in _AUX for w in firsts)),
        float(last.endswith("?") or _first_word(last) in _WH or _first_word(last) in _AUX),
        float(_REQUEST.search(lowered) is not None),
        float("!" in stripped),
    ]


def lexical_features(texts: Sequence[str]) -> NDArray[np.float32]:
    """Shape ``(len(texts), len(FEATURES))``, values in [0, 1], columns in :data:`FEATURES` order."""
    if isinstance(texts, str):
        raise TypeError("lexical_features() takes a sequence of texts, not a single str")
    out = np.zeros((len(texts), len(FEATURES)), dtype=np.float32)
    for i, text in enumerate(texts):
        out[i] = _features(text)
    return out
