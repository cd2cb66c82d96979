"""Table-driven tests of the personal data detectors (hypothesis is not available)."""

from __future__ import annotations

import itertools

import pytest

from classifiers.pii import IBAN_LENGTHS, PiiFinding, PiiKind, find_pii, redact

# (text, region, kind, the substring that must be found)
POSITIVES: list[tuple[str, str | None, PiiKind, str]] = [
    # payment cards
    ("4111 1111 1111 1111", None, "card", "4111 1111 1111 1111"),
    ("4111-1111-1111-1111", None, "card", "4111-1111-1111-1111"),
    ("pay with 4111111111111111 please", None, "card", "4111111111111111"),
    ("amex: 3782 822463 10005", None, "card", "3782 822463 10005"),
    ("my mastercard is 5555 5555 5555 4444.", None, "card", "5555 5555 5555 4444"),
    ("discover 6011-1111-1111-1117, exp 12/29", None, "card", "6011-1111-1111-1117"),
    ("visa 13 digits 4222222222222", None, "card", "4222222222222"),
    ("(4111 1111 1111 1111)", "GB", "card", "4111 1111 1111 1111"),
    # IBANs
    ("GB82 WEST 1234 5698 7654 32", None, "iban", "GB82 WEST 1234 5698 7654 32"),
    ("GB82WEST12345698765432", None, "iban", "GB82WEST12345698765432"),
    ("iban: DE89 3704 0044 0532 0130 00, thanks", None, "iban", "DE89 3704 0044 0532 0130 00"),
    ("lower case fr1420041010050500013m02606 works", None, "iban", "fr1420041010050500013m02606"),
    ("shortest NO93 8601 1117 947.", None, "iban", "NO93 8601 1117 947"),
    ("to GB82 WEST 1234 5698 7654 32 then back", None, "iban", "GB82 WEST 1234 5698 7654 32"),
    ("ab12 cdef GB82 WEST 1234 5698 7654 32", None, "iban", "GB82 WEST 1234 5698 7654 32"),
    ("NL91ABNA0417164300", "NL", "iban", "NL91ABNA0417164300"),
    # phone numbers
    ("call me on +44 20 7946 0958", None, "phone", "+44 20 7946 0958"),
    ("US office: +1 415-555-2671.", None, "phone", "+1 415-555-2671"),
    ("bureau +33 1 23 45 67 89", None, "phone", "+33 1 23 45 67 89"),
    ("mobile +447911123456", None, "phone", "+447911123456"),
    ("call 020 7946 0958 now", "GB", "phone", "020 7946 0958"),
    ("call 020 7946 0958 now", "gb", "phone", "020 7946 0958"),
    ("ring (415) 555-2671", "US", "phone", "(415) 555-2671"),
    ("international still found: +44 20 7946 0958", "US", "phone", "+44 20 7946 0958"),
    # e-mail addresses
    ("write to joe.bloggs+tag@mail.example.co.uk.", None, "email", "joe.bloggs+tag@mail.example.co.uk"),
    ("<jane_doe@example.org>", None, "email", "jane_doe@example.org"),
    ("mailto:o'brien@example.ie", None, "email", "o'brien@example.ie"),
    ("quoted 'joe@example.com' here", None, "email", "joe@example.com"),
    ('"ann@example.com"', None, "email", "ann@example.com"),
    ("wait...joe@example.com", None, "email", "joe@example.com"),
    ("https://x.example/?user=joe@example.com", None, "email", "joe@example.com"),
    ("Grüße an hans-peter@sub-domain.example.de!", None, "email", "hans-peter@sub-domain.example.de"),
    ("4111111111111111@sms.example.com", None, "email", "4111111111111111@sms.example.com"),
]

NEGATIVES: list[tuple[str, str | None]] = [
    ("4111 1111 1111 1112", None),  # fails Luhn
    ("4111111111111112", None),
    ("0000 0000 0000 0000", None),  # passes Luhn, but no card network starts with 0
    ("order 12345678901234567890", None),  # 20 digits
    ("4111 1111-1111 1111", None),  # mixed separators
    ("41 11 11 11 11 11 11 11", None),  # phone-like grouping
    ("token 4111111111111111abc", None),  # part of an identifier
    ("v4111111111111111", None),
    ("pi is 3.14159265358979323846", None),  # digits after a decimal point
    ("x 1.4111111111111111", None),
    ("ISBN 978-3-16-148410-0", None),
    ("1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", None),
    ("GB83 WEST 1234 5698 7654 32", None),  # wrong IBAN check digits
    ("GB82 WEST 1234 5698 7654 3", None),  # too short for GB
    ("GB82 WEST 1234 5698 7654 321", None),  # too long for GB
    ("GB82 WEST 1234 5698 7654 32X", None),
    ("XX82 WEST 1234 5698 7654 32", None),  # no such country
    ("GB82 WES T123 4569 8765 432", None),  # not grouped in fours
    ("meeting at 10:30 on 2026-11-21", None),
    ("meeting at 10:30 on 2026-11-21", "GB"),
    ("meeting at 10:30 on 2026-11-21", "US"),
    ("2026-11-21 10:30:00", "DE"),
    ("on 21/11/2026 and 01.02.2026", "FR"),
    ("ticket 1234567", None),
    ("ticket 1234567", "GB"),
    ("ticket 1234567", "US"),
    ("order 12345678", "DE"),
    ("version 4.11.1111.1111.1111", "GB"),
    ("release 2026.11.21-rc1", None),
    ("ip 192.168.100.200", "US"),
    ("price 1,234,567.89", "GB"),
    ("call 020 7946 0958 now", None),  # a national number needs a default region
    ("user@localhost", None),  # no top-level domain
    ("a@b.c", None),
    ("joe..bloggs@", None),
    ("@example.com", None),
    ("", None),
]


def _found(text: str, region: str | None) -> list[tuple[PiiKind, str]]:
    return [(f.kind, text[f.start : f.end]) for f in find_pii(text, default_region=region)]


@pytest.mark.parametrize(("text", "region", "kind", "expected"), POSITIVES, ids=[p[0] for p in POSITIVES])
def test_personal_data_is_found_with_exact_span(text: str, region: str | None, kind: PiiKind, expected: str) -> None:
    assert _found(text, region) == [(kind, expected)]


@pytest.mark.parametrize(("text", "region"), NEGATIVES, ids=[f"{n[0]!r}-{n[1]}" for n in NEGATIVES])
def test_lookalikes_are_not_flagged(text: str, region: str | None) -> None:
    assert _found(text, region) == []


def test_findings_are_sorted_and_do_not_overlap() -> None:
    text = (
        "Hi, I'm at jane@example.org or +44 20 7946 0958; refund to GB82 WEST 1234 5698 7654 32 "
        "or card 4111 1111 1111 1111. Ticket 1234567 on 2026-11-21."
    )
    findings = find_pii(text)
    assert [f.kind for f in findings] == ["email", "phone", "iban", "card"]
    assert all(a.end <= b.start for a, b in itertools.pairwise(findings))


def test_longer_or_stronger_finding_wins_an_overlap() -> None:
    # The card number is the local part of an e-mail address: one finding, the whole address.
    assert _found("4111111111111111@example.com", None) == [("email", "4111111111111111@example.com")]


def test_iban_length_table_covers_common_european_countries() -> None:
    for country in ("AT", "BE", "CH", "DE", "DK", "ES", "FI", "FR", "GB", "IE", "IT", "LU", "NL", "NO", "PL"):
        assert country in IBAN_LENGTHS
    assert all(15 <= n <= 34 for n in IBAN_LENGTHS.values())


def test_unknown_region_is_rejected() -> None:
    with pytest.raises(ValueError, match="region"):
        find_pii("call 020 7946 0958", default_region="XQ")


def test_redact_replaces_every_span_with_its_placeholder() -> None:
    text = "mail jane@example.org, phone +44 20 7946 0958, iban GB82 WEST 1234 5698 7654 32, card 4111-1111-1111-1111."
    assert redact(text) == "mail [EMAIL], phone [PHONE], iban [IBAN], card [CARD]."


@pytest.mark.parametrize(("text", "region", "kind", "expected"), POSITIVES, ids=[p[0] for p in POSITIVES])
def test_redacted_text_contains_no_original_personal_data(
    text: str, region: str | None, kind: PiiKind, expected: str
) -> None:
    findings = find_pii(text, default_region=region)
    redacted = redact(text, findings)
    assert expected not in redacted
    assert "[" + kind.upper() + "]" in redacted


def test_redacting_a_mixed_comment_leaves_none_of_its_personal_data() -> None:
    secrets = [
        "jane.doe@example.org",
        "+44 20 7946 0958",
        "GB82 WEST 1234 5698 7654 32",
        "4111 1111 1111 1111",
        "020 7946 0958",
    ]
    text = "Contact " + ", ".join(secrets) + " — thanks!"
    redacted = redact(text, find_pii(text, default_region="GB"))
    for secret in secrets:
        assert secret not in redacted
    assert redacted.startswith("Contact [EMAIL], [PHONE], [IBAN], [CARD], [PHONE]")


def test_redact_leaves_text_without_findings_unchanged() -> None:
    assert redact("meeting at 10:30 on 2026-11-21", []) == "meeting at 10:30 on 2026-11-21"
    assert redact("") == ""


def test_redact_accepts_unsorted_findings() -> None:
    text = "a@example.com b@example.com"
    findings = list(reversed(find_pii(text)))
    assert redact(text, findings) == "[EMAIL] [EMAIL]"


def test_redact_rejects_overlapping_or_out_of_range_findings() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        redact("0123456789", [PiiFinding("card", 0, 5), PiiFinding("phone", 4, 8)])
    with pytest.raises(ValueError, match="outside"):
        redact("0123", [PiiFinding("card", 2, 9)])


ADVERSARIAL = {
    "a@ x30000": "a@" * 30000,
    "1space x40000": "1 " * 40000,
    "letters": "a" * 100_000,
    "dotted local part": "a." * 50_000 + "@",
    "apostrophes": "a'" * 50_000 + "@",
    "dots": "." * 50_000 + "a@b",
    "hyphenated host": "x@" + "a-" * 50_000,
    "dotted host, bad tld": "x@" + "a." * 50_000 + "1",
    "digits": "4" * 100_000,
    "card-like groups": "4111 " * 20_000,
    "iban-like groups": "GB82 " * 20_000,
    "iban-like run": "AB12" + "C" * 100_000,
    "plus signs": "+4" * 50_000,
    "dots and digits": "1." * 50_000,
    "parentheses": "(" * 100_000,
}


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_adversarial_input_is_handled(text: str) -> None:
    # The regexes are linear (see classifiers/pii.py); each of these takes well under a second. No timing
    # assertion: a quadratic regex would show up as a test run that never finishes.
    findings = find_pii(text, default_region="GB")
    assert redact(text, findings).count("[") == len(findings)


def test_many_phone_numbers_in_a_long_text_are_all_found() -> None:
    text = "call +44 20 7946 0958 now. " * 4000
    assert len(find_pii(text)) == 4000
