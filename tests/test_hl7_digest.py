"""The content digest of an ER7 message (integration.formats.er7_digest): what a resend may change and still be
the same message (segment terminators, trailing delimiters, MSH-7), and what it may not."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.formats.er7_digest import content_digest

A03 = (Path(__file__).parent / "hl7" / "01-municipal-gop-general-sternotomy.a03.er7").read_bytes()
MSH_7 = b"|20261120140512|"


def test_the_fixture_has_what_the_variants_change() -> None:
    assert MSH_7 in A03 and A03.count(b"\r") > 3 and b"\n" not in A03


@pytest.mark.parametrize(
    "resend",
    [
        A03.replace(b"\r", b"\r\n"),  # CRLF
        A03.replace(b"\r", b"\n"),  # LF
        A03.replace(MSH_7, b"|20261120150000+0100|", 1),  # MSH-7 re-stamped
        A03.replace(b"\rEVN|", b"|\rEVN|", 1),  # a trailing field separator on MSH
        A03.replace(b"\rPD1|", b"^|||\rPD1|", 1),  # trailing component and field separators on PID
        A03 + b"\r\r",  # blank lines at the end
        b"\r\n" + A03,  # and at the start
        b"\xef\xbb\xbf" + A03,  # a byte-order mark
    ],
)
def test_a_resend_an_engine_changed_in_form_has_the_same_digest(resend: bytes) -> None:
    assert resend != A03 and content_digest(resend) == content_digest(A03)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"|RHN-0001|", b"|RHN-0002|"),  # MSH-10
        (b"|P|2.5|", b"|P|2.5.1|"),  # MSH-12
        (b"ADT^A03^ADT_A03", b"ADT^A08^ADT_A01"),  # MSH-9
        (b"2512489996^^^CPR^NI", b"2512489004^^^CPR^NI"),  # PID-3
        (b"|free text", b"|other text"),  # ZRH-8
        (b"|free text", b"|free text|x"),  # a field more at the end is not a trailing delimiter
        (b"|^~\\&|", b"|^~\\#|"),  # the encoding characters
    ],
)
def test_any_other_change_is_another_digest(old: bytes, new: bytes) -> None:
    assert old in A03
    assert content_digest(A03.replace(old, new, 1)) != content_digest(A03)


def test_a_body_that_is_not_er7_has_no_digest() -> None:
    assert content_digest(b'{"resourceType": "Bundle"}') is None
    assert content_digest(b"MSH\rPID|1") is None
    assert content_digest(b"") is None
