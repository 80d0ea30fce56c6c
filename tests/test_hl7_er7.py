"""The ER7 reader (`formats.er7`): delimiters, escapes, repetitions, null versus empty, segment terminators,
character sets, and refusals that name the HL7 place with its Table 0357 code, never a value."""

from __future__ import annotations

import logging

import pytest

from integration.formats.er7 import Er7Message, Hl7Problem, looks_like_er7, parse_er7

HEAD = "MSH|^~\\&|EPJ|RHN|HJERTEREHAB|RN|20261120140512||ADT^A03^ADT_A03|C-1|P|2.5|||AL|NE||"
LIMIT = 1_000_000


def er7(*segments: str, head: str = HEAD + "UNICODE UTF-8", end: str = "\r", charset: str = "utf-8") -> bytes:
    return end.join((head, *segments)).encode(charset) + end.encode()


def read(*segments: str, **kw: str) -> Er7Message:
    return parse_er7(er7(*segments, **kw), LIMIT)


def pid(message: Er7Message) -> object:
    segment = message.segment("PID")
    assert segment is not None
    return segment


def test_the_header_is_read() -> None:
    m = read("PID|1")
    assert (m.control_id, m.message_type, m.trigger, m.structure) == ("C-1", "ADT", "A03", "ADT_A03")
    assert (m.version, m.processing_id, m.accept_ack_type, m.application_ack_type) == ("2.5", "P", "AL", "NE")
    assert (m.sending_application, m.sending_facility, m.receiving_application, m.receiving_facility) == (
        "EPJ",
        "RHN",
        "HJERTEREHAB",
        "RN",
    )
    assert (m.field_separator, m.encoding_characters, m.charset) == ("|", "^~\\&", "utf-8")
    assert m.raw.startswith(b"MSH|")
    assert m.msh.field(1).component() == "|" and m.msh.field(2).component() == "^~\\&"


@pytest.mark.parametrize(
    ("escaped", "decoded"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b", "a^b"),
        ("a\\T\\b", "a&b"),
        ("a\\R\\b", "a~b"),
        ("a\\E\\b", "a\\b"),
        ("\\XC3A6\\ble", "æble"),  # hex bytes in MSH-18's character set (UTF-8)
        ("line 1\\.br\\line 2", "line 1\nline 2"),
        ("\\H\\bold\\N\\", "bold"),  # highlighting is layout, dropped
        ("a\\.sp2\\b", "a\n\nb"),
        ("a\\.sk3\\b", "a   b"),
        ("\\.in+4\\indented", "indented"),
    ],
)
def test_escape_sequences_are_decoded(escaped: str, decoded: str) -> None:
    field = pid(read(f"PID|1||||Name^{escaped}")).field(5)  # type: ignore[attr-defined]
    assert field.text(2) == decoded


def test_other_delimiters_are_honoured() -> None:
    head = HEAD.replace("MSH|^~\\&|", "MSH#:*!@#").replace("|", "#").replace("ADT^A03^ADT_A03", "ADT:A03:ADT_A03")
    m = parse_er7(f"{head}UNICODE UTF-8\rPID#1##a!F!b:c*d:x@y!S!".encode(), LIMIT)
    field = m.segment("PID").field(3)  # type: ignore[union-attr]
    assert m.trigger == "A03" and field.text(1) == "a#b" and field.text(2) == "c" and field.text(1, 2) == "d"
    assert field.repetitions[1][1] == ("x", "y:")


def test_repetitions_components_and_subcomponents() -> None:
    field = pid(read("PID|1||111^^^CPR&1.2.208.176.1.2&ISO^NI~222^^^RHN^MR")).field(3)  # type: ignore[attr-defined]
    assert [field.text(1, r) for r in (1, 2)] == ["111", "222"]
    assert field.text(4, 1, 2) == "1.2.208.176.1.2" and field.text(5, 2) == "MR"


def test_empty_and_null_are_told_apart() -> None:
    segment = pid(read('PID|1||||""|'))
    empty, null = segment.field(4), segment.field(5)  # type: ignore[attr-defined]
    assert empty.is_empty and not empty.is_null and empty.text() is None
    assert null.is_null and not null.is_empty and null.text() is None and null.component() == '""'


@pytest.mark.parametrize("end", ["\r", "\r\n", "\n"])
def test_cr_crlf_and_lf_end_segments(end: str) -> None:
    m = read("EVN|A03", "PID|1||123", "", end=end)
    assert [s.id for s in m.segments_in_order] == ["MSH", "EVN", "PID"]
    assert m.segment("PID").field(3).text() == "123"  # type: ignore[union-attr]


def test_trailing_separators_and_missing_fields_read_as_empty() -> None:
    segment = pid(read("PID|1||123|||||"))
    assert len(segment.fields) == 3  # type: ignore[attr-defined]
    assert segment.field(99).is_empty  # type: ignore[attr-defined]


def test_segments_in_unusual_order_and_repeated_are_numbered() -> None:
    m = read("DG1|1", "PID|1", "DG1|2", "ZRH|x")
    assert [(s.id, s.sequence) for s in m.segments("DG1")] == [("DG1", 1), ("DG1", 2)]
    assert m.segment("ZRH") is not None


def test_iso_8859_1_is_read_when_msh_18_says_so() -> None:
    raw = er7("PID|1||||Sørensen^Åse", head=HEAD + "8859/1", charset="latin-1")
    assert parse_er7(raw, LIMIT).segment("PID").field(5).text(2) == "Åse"  # type: ignore[union-attr]


def test_hex_escape_in_8859_1_is_decoded_in_that_set() -> None:
    m = read("PID|1||||\\XE6\\", head=HEAD + "8859/1", charset="latin-1")
    assert m.segment("PID").field(5).text() == "æ"  # type: ignore[union-attr]


def problem(raw: bytes, limit: int = LIMIT) -> Hl7Problem:
    with pytest.raises(Hl7Problem) as caught:
        parse_er7(raw, limit)
    return caught.value


@pytest.mark.parametrize(
    ("raw", "place", "code"),
    [
        (er7("PID|1||2512489996\\Q\\"), "PID-3.1", "102"),  # no such escape
        (er7("PID|1||2512489996\\F"), "PID-3.1", "102"),  # escape not closed
        (er7("PID|1||25124899\\X9\\"), "PID-3.1", "102"),  # half a hex byte
        (er7("PID|1||^^^^\\XFF\\"), "PID-3.5", "102"),  # not UTF-8
        (er7("PID|1||~x\\Z2\\"), "PID-3[2].1", "102"),
        # a sequence that merely begins like a defined one is not that one (the whole must match)
        (er7("PID|1||||Berg\\Fxyz\\gren"), "PID-5.1", "102"),
        (er7("PID|1||||Berg\\EE\\gren"), "PID-5.1", "102"),
        (er7("PID|1||||Berg\\Hx\\gren"), "PID-5.1", "102"),
        (er7("PID|1||||Berg\\.brx\\gren"), "PID-5.1", "102"),
        (er7("PID|1||||Berg\\X41ZZ\\gren"), "PID-5.1", "102"),  # not hex
        (er7("PID|1||||Berg\\X414\\gren"), "PID-5.1", "102"),  # odd number of hex digits
        (er7("PID|1||||Berg\\X\\gren"), "PID-5.1", "102"),
        (er7("PID|1||||Berg\\.sp" + "9" * 5000 + "\\gren"), "PID-5.1", "102"),  # beyond int()'s digit limit
        (er7("PID|1||||Berg\\.in+" + "9" * 5000 + "\\gren"), "PID-5.1", "102"),
        (er7("PID|1||||Berg\\.sk1000\\gren"), "PID-5.1", "102"),  # a count of at most 3 digits
        (er7("PID|1||||Berg\\.sp\u0663\\gren"), "PID-5.1", "102"),  # digits are ASCII digits
        # envelopes and what precedes MSH
        (b"FHS|^~\\&|EPJ\rBHS|^~\\&|EPJ\r" + er7("PID|1") + b"BTS|1\rFTS|1\r", "MSH", "100"),
        (b"BHS|^~\\&|EPJ\r" + er7("PID|1"), "MSH", "100"),
        (b"EVN|A03\r" + er7("PID|1"), "MSH", "100"),
        (b"\xef\xbb\xbf" + er7("PID|1", head=HEAD + "8859/1"), "MSH-18", "102"),  # a UTF-8 mark, not UTF-8
        (er7("PID|1", head=HEAD.replace("C-1", "C\\X07\\1")), "MSH-10.1", "102"),  # a control in the header
        (er7("DG1|1", "DG1|2||\\Q\\"), "DG1(2)-3.1", "102"),
        (er7("PID|1", head=HEAD + "UNICODE UTF-16"), "MSH-18", "103"),
        (er7("PID|1||||Sørensen", head=HEAD + "ASCII"), "MSH-18", "102"),
        (er7("PID|1", head=HEAD.replace("ADT^A03^ADT_A03", "")), "MSH-9", "101"),
        (er7("PID|1", head=HEAD.replace("C-1", "")), "MSH-10", "101"),
        (er7("PID|1", head=HEAD.replace("2.5", "")), "MSH-12", "101"),
        (er7("PID|1", head="MSH|^~|x"), "MSH-2", "102"),
        (er7("PID|1", head="MSH|^~\\^|x"), "MSH-2", "102"),
        (er7("pid|1"), "", "100"),
        (er7("PID|1", HEAD), "MSH", "100"),  # a batch of two messages
        (b"PID|1\rMSH|^~\\&|", "MSH", "100"),  # MSH not first
        (b"", "", "100"),
        (b'{"eventType": "discharge"}', "", "100"),
        (er7("PID|1||\x00"), "", "102"),
        (b"\x0b" + er7("PID|1") + b"\x1c\r", "", "100"),  # an MLLP frame is the listener's to remove
    ],
)
def test_unreadable_input_is_refused_naming_the_place(raw: bytes, place: str, code: str) -> None:
    refused = problem(raw)
    assert (refused.field, refused.code) == (place, code)
    assert "2512489996" not in str(refused) and "Sørensen" not in str(refused)


def test_a_problem_carries_its_place_as_data() -> None:
    refused = problem(er7("DG1|1", "DG1|2||a~b^\\Q\\"))
    assert (refused.segment, refused.field_number, refused.component, refused.repetition) == ("DG1", 3, 2, 2)
    assert (refused.segment_sequence, refused.code, refused.field) == (2, "102", "DG1(2)-3[2].2")


def test_too_large_is_refused_before_reading() -> None:
    assert problem(er7("PID|1"), limit=20).code == "102"


def test_no_field_value_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for raw in (er7("PID|1||2512489996\\Q\\"), er7("PID|1||2512489996\\\\"), er7("PID|1||2512489996\\X9Z\\")):
        with pytest.raises(Hl7Problem):
            parse_er7(raw, LIMIT)
    assert "2512489996" not in caplog.text


@pytest.mark.parametrize(
    ("raw", "er7_or_not"),
    [
        (b"MSH|^~\\&|", True),
        (b"MSH#", True),
        (b"MSHX", False),
        (b"MSH ", False),
        (b"{}", False),
        (b"<a/>", False),
        (b"\xef\xbb\xbfMSH|^~\\&|", True),  # a byte order mark
        (b"\r\n  MSH|^~\\&|", True),  # leading white space and blank lines
        (b"FHS|^~\\&|\rBHS|^~\\&|\rMSH|^~\\&|", True),  # a file/batch: the ER7 reader refuses it naming MSH
        (b"EVN|A03\rMSH|^~\\&|", True),  # MSH not first: the same
        (b"EVN|A03\rPID|1", False),  # no MSH at all: not ER7
        (b"\xef\xbb\xbf{}", False),
    ],
)
def test_what_looks_like_er7(raw: bytes, er7_or_not: bool) -> None:
    assert looks_like_er7(raw) is er7_or_not


def test_a_byte_order_mark_and_leading_white_space_are_tolerated() -> None:
    plain = read("PID|1||123")
    for prefix in (b"\xef\xbb\xbf", b"\r\n \n", b"\xef\xbb\xbf\r\n"):
        m = parse_er7(prefix + er7("PID|1||123"), LIMIT)
        assert (m.control_id, m.segment("PID").field(3).text()) == (plain.control_id, "123")  # type: ignore[union-attr]


def test_python_hl7_never_logs_a_value(caplog: pytest.LogCaptureFixture) -> None:
    """Even python-hl7's own decoder, called directly with a sequence it cannot read, logs nothing: its
    loggers drop every record once `formats.er7` is imported."""
    import hl7

    caplog.set_level(logging.DEBUG)
    message = hl7.parse("MSH|^~\\&|\rPID|1||||Berg\\Fxyz\\gren")
    assert message.unescape("Berg\\Fxyz\\gren") == "Berggren"  # dropped by python-hl7: why we decode ourselves
    hl7.split_file("PID|1||||Berggren\rMSH|^~\\&|")  # "Segment received before message header [<line>]"
    hl7.util.logger.disabled = False  # what logging.config.dictConfig does to existing loggers: the filter stays
    message.unescape("Berg\\EE\\gren")
    assert "Berg" not in caplog.text and not caplog.records


def test_more_segments_than_any_message_are_refused_before_reading() -> None:
    """166,000 segments took 114 s to read, and the message was then accepted (attack on issue #16)."""
    assert len(read(*["ZZZ|1"] * 999).segments("ZZZ")) == 999
    refused = problem(er7(*["ZZZ|1"] * 1000))
    assert refused.code == "102" and "1001 segments: at most 1000 are read" in str(refused)


def test_more_delimiters_than_any_message_are_refused_before_reading() -> None:
    """1 MB of `|` in one segment took 5 s to refuse for its segment id."""
    read("ZZZ|" + "|" * 19_000)
    refused = problem(er7("ZZZ|" + "^" * 20_000))
    assert refused.code == "102" and "delimiters" in str(refused) and "at most 20000" in str(refused)
