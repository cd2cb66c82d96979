"""Deterministic detectors for personal data in free text.

Four kinds are detected:

* ``email`` -- a pragmatic subset of RFC 5322 ``addr-spec`` (dot-atom local part of the commonly used
  characters, dotted host name with an alphabetic TLD). Quoted local parts and IP-literal domains are
  deliberately not supported.
* ``phone`` -- the ``phonenumbers`` port of libphonenumber (``PhoneNumberMatcher`` with leniency VALID).
  Numbers written with a leading ``+`` are found whatever the region; national numbers (``020 7946 0958``)
  only when a ``default_region`` is given.
* ``card`` -- payment card numbers: 13-19 digits, optionally grouped with single spaces or dashes, that
  pass the Luhn check (``python-stdnum``) and start with a major industry identifier 2-6 (the card networks).
* ``iban`` -- IBANs in electronic (``GB82WEST12345698765432``) or print (``GB82 WEST 1234 5698 7654 32``)
  format, validated by ``python-stdnum``: the country's length and BBAN structure from the SWIFT IBAN registry,
  the ISO 7064 mod-97 check digits, and the national check digits where stdnum knows them (BE, ES, ME, NO).

Every regular expression here is linear in the length of the input: candidates may only *start* at a token
boundary (enforced with a fixed-width look-behind) and every repetition is either bounded or
unambiguous, so adversarial input such as ``"a@" * 30000`` or ``"1 " * 40000`` cannot cause catastrophic
(or quadratic) backtracking.

Offsets are Python ``str`` indices (code points), ``end`` exclusive, so ``text[f.start:f.end]`` is the
matched substring.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import phonenumbers
from stdnum import iban, luhn, numdb

__all__ = ["IBAN_LENGTHS", "PiiFinding", "PiiKind", "find_pii", "redact"]

PiiKind = Literal["email", "phone", "card", "iban"]


@dataclass(frozen=True, slots=True)
class PiiFinding:
    """One detected span: ``text[start:end]`` is the personal data (``end`` exclusive)."""

    kind: PiiKind
    start: int
    end: int


_PLACEHOLDERS: Final[dict[PiiKind, str]] = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "card": "[CARD]",
    "iban": "[IBAN]",
}

# --------------------------------------------------------------------------------------------------------
# e-mail

# Characters of a local-part atom. A subset of RFC 5322 atext: the rarely used ``! # $ & * / = ? ^ ` { | } ~``
# are left out because they make URL query strings (``?user=joe@example.com``) swallow their surroundings.
# The apostrophe (``o'brien@``) is only allowed inside the local part, like the dot, so that a quoted
# address ``'joe@example.com'`` does not take the opening quote with it.
_LOCAL_CHARS = r"A-Za-z0-9_%+\-"
_EMAIL_RE: Final = re.compile(
    # Start only where a local part can begin: not right after a local-part character, nor after a dot or
    # apostrophe that follows one. Besides giving the right span, this keeps the scan linear: without it a
    # long run of letters with no "@" would be rescanned from every position in it (quadratic).
    rf"(?<![{_LOCAL_CHARS}])(?<![{_LOCAL_CHARS}][.'])"
    rf"[{_LOCAL_CHARS}]+(?:[.'][{_LOCAL_CHARS}]+)*"  # no leading, trailing or doubled dots
    r"@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"  # host labels of at most 63 characters
    r"[A-Za-z]{2,63}"  # alphabetic top-level domain
    r"(?![A-Za-z0-9])",
)

# --------------------------------------------------------------------------------------------------------
# payment cards

_CARD_RE: Final = re.compile(
    # not preceded by a word character or "+" (phone numbers, identifiers like "ABC4111..."), nor by a digit
    # and a separator (the middle of a longer grouped number, a decimal, a date or a version string)
    r"(?<![\w+])(?<![0-9][ .,:/-])"
    r"[0-9](?:[ -]?[0-9]){12,18}"  # 13-19 digits; a separator is never ambiguous, so no backtracking blow-up
    # not followed by a word character, nor by a separator and a digit (the number goes on)
    r"(?!\w)(?![ .,:/-][0-9])",
)
_CARD_GROUP_SPLIT: Final = re.compile(r"[ -]")
# Major industry identifiers of the card networks: Mastercard 2-series, Amex/Diners/JCB, Visa, Mastercard and
# Maestro, Discover/UnionPay. Numbers starting 0, 1, 7, 8 or 9 are not payment cards.
_CARD_FIRST_DIGITS: Final = frozenset("23456")


def _plausible_card(candidate: str) -> bool:
    separators = {ch for ch in candidate if ch in " -"}
    if len(separators) > 1:  # "4111 1111-1111 1111": mixed separators are not how card numbers are written
        return False
    if separators:
        groups = _CARD_GROUP_SPLIT.split(candidate)
        # Printed card numbers are grouped 4-4-4-4, 4-6-5, 4-6-4, 4-4-4-4-3 ...: every group but the last
        # has 4-6 digits. This rejects phone-like groupings such as "41 11 11 11 11 11 11 1".
        if any(not 4 <= len(g) <= 6 for g in groups[:-1]) or len(groups[-1]) > 6:
            return False
    digits = candidate.replace(" ", "").replace("-", "")
    return digits[0] in _CARD_FIRST_DIGITS and luhn.is_valid(digits)


# --------------------------------------------------------------------------------------------------------
# IBAN


def _iban_lengths() -> dict[str, int]:
    """Total IBAN length (country code and check digits included) per country: 4 plus the length of the BBAN
    structure (``4!a6!n8!n``: fixed-length parts) in the SWIFT IBAN registry that python-stdnum ships."""
    lengths: dict[str, int] = {}
    for _, low, high, properties, _ in numdb.get("iban").prefixes:
        if low == high and "bban" in properties:
            lengths[low] = 4 + sum(int(n) for n in re.findall(r"(\d+)!?[nac]", properties["bban"]))
    return lengths


#: Total IBAN length per country (python-stdnum's copy of the SWIFT IBAN registry).
IBAN_LENGTHS: Final[dict[str, int]] = _iban_lengths()

_IBAN_RE: Final = re.compile(
    # Zero-width match at every token start that looks like "CCdd": the candidate is captured inside a
    # look-ahead so that candidates overlap (a failed "ab12 cdef" must not hide an IBAN that follows it).
    # All repetitions are bounded, so the work per start position is constant.
    r"(?<![A-Za-z0-9])"
    r"(?=("
    r"[A-Za-z]{2}[0-9]{2}"
    r"(?:"
    r"(?:\ [A-Za-z0-9]{4}){2,7}(?:\ [A-Za-z0-9]{1,4})?"  # print format: groups of four, last one shorter
    r"|[A-Za-z0-9]{11,30}(?![A-Za-z0-9])"  # electronic format
    r")"
    r"))",
)


def _iban_ok(compact: str) -> bool:
    # Check digits 00, 01 and 99 are never issued (valid ones are 02..98) but can pass the mod-97 check.
    return compact[2:4] not in ("00", "01", "99") and iban.is_valid(compact)


def _iban_length(candidate: str) -> int | None:
    """Length of the prefix of ``candidate`` (with its spaces) that is a valid IBAN, if any.

    A print-format candidate may have swallowed a following word of four letters ("... 7654 32 then"), so
    the candidate is cut after as many characters as the country's IBAN has, at a group boundary.
    """
    country = candidate[:2].upper()
    expected = IBAN_LENGTHS.get(country)
    if expected is None:
        return None
    count = 0
    for i, ch in enumerate(candidate):
        if ch == " ":
            continue
        count += 1
        if count == expected:
            end = i + 1
            if end < len(candidate) and candidate[end] != " ":
                return None  # the cut falls inside a group (or the electronic format is too long)
            compact = candidate[:end].replace(" ", "").upper()
            return end if _iban_ok(compact) else None
    return None  # too short for the country


# --------------------------------------------------------------------------------------------------------
# detection


def _find_emails(text: str) -> list[PiiFinding]:
    return [PiiFinding("email", m.start(), m.end()) for m in _EMAIL_RE.finditer(text)]


def _find_cards(text: str) -> list[PiiFinding]:
    return [PiiFinding("card", m.start(), m.end()) for m in _CARD_RE.finditer(text) if _plausible_card(m[0])]


def _find_ibans(text: str) -> list[PiiFinding]:
    found: list[PiiFinding] = []
    covered_until = 0
    for m in _IBAN_RE.finditer(text):
        start = m.start()
        if start < covered_until:
            continue
        length = _iban_length(m[1])
        if length is not None:
            found.append(PiiFinding("iban", start, start + length))
            covered_until = start + length
    return found


def _find_phones(text: str, region: str | None) -> list[PiiFinding]:
    # The matcher gives up after max_tries candidates (a denial-of-service guard). Every candidate consumes
    # input, so allowing one try per character keeps the cost linear while never leaving a phone number
    # at the end of a long text undetected.
    matcher = phonenumbers.PhoneNumberMatcher(
        text, region, leniency=phonenumbers.Leniency.VALID, max_tries=max(65535, len(text))
    )
    return [PiiFinding("phone", match.start, match.end) for match in matcher]


def _resolve_overlaps(findings: list[PiiFinding]) -> list[PiiFinding]:
    # Phone numbers are the loosest detector, so every other kind wins against them; among the others the
    # longer span wins (an IBAN whose digits look like a card number, a card number used as an e-mail local
    # part), then the earlier one.
    def preference(f: PiiFinding) -> tuple[bool, int, int]:
        return (f.kind == "phone", f.start - f.end, f.start)

    accepted: list[PiiFinding] = []  # kept sorted by start, never overlapping
    starts: list[int] = []
    for f in sorted(findings, key=preference):
        i = bisect.bisect_right(starts, f.start)
        if (i > 0 and accepted[i - 1].end > f.start) or (i < len(accepted) and accepted[i].start < f.end):
            continue
        accepted.insert(i, f)
        starts.insert(i, f.start)
    return accepted


def find_pii(text: str, *, default_region: str | None = None) -> list[PiiFinding]:
    """Find e-mail addresses, phone numbers, payment card numbers and IBANs in ``text``.

    ``default_region`` is an ISO 3166-1 alpha-2 code (``"GB"``, ``"DE"`` ...): with it, national phone numbers
    of that region (``020 7946 0958``) are found as well as international ones (``+44 20 7946 0958``).

    Returns non-overlapping findings sorted by ``start``.
    """
    region: str | None = None
    if default_region is not None:
        region = default_region.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone number region {default_region!r}")
    findings = [*_find_emails(text), *_find_cards(text), *_find_ibans(text), *_find_phones(text, region)]
    return _resolve_overlaps(findings)


def redact(text: str, findings: Sequence[PiiFinding] | None = None) -> str:
    """Replace every finding's span with ``[EMAIL]``, ``[PHONE]``, ``[CARD]`` or ``[IBAN]``.

    With ``findings=None`` the text is scanned with :func:`find_pii` (no default region). Findings given
    explicitly must lie within the text and must not overlap (as :func:`find_pii` returns them); they need
    not be sorted.
    """
    if findings is None:
        findings = find_pii(text)
    parts: list[str] = []
    position = 0
    for f in sorted(findings, key=lambda f: f.start):
        if not 0 <= f.start < f.end <= len(text):
            raise ValueError(f"finding {f} lies outside the text (length {len(text)})")
        if f.start < position:
            raise ValueError(f"finding {f} overlaps the previous one")
        parts.append(text[position : f.start])
        parts.append(_PLACEHOLDERS[f.kind])
        position = f.end
    parts.append(text[position:])
    return "".join(parts)
