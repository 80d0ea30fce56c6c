"""One CPR mask for every output (`integration.log`): a CPR number written together, with a dash or with a
space is masked anywhere in a text, but not inside a longer run of digits; values of any type in log
fields and AMQP headers are masked; the suite's scanner finds every form; a number typed as an operator
types it is read into its stored form."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest
import structlog

from integration.domain.cpr import read_cpr
from integration.log import configure_logging, cpr_numbers_in, mask_cpr, masked, masked_headers, one_line

CPR = "2512489996"


@pytest.mark.parametrize(
    "written",
    [
        "2512489996",
        "251248-9996",
        "251248 9996",
        "251248\u00a09996",  # a no-break space, as a word processor writes it
        "251248\u20139996",  # an en dash
        "251248\t9996",
    ],
)
@pytest.mark.parametrize("around", ["{}", "patient {}.", "x-patient:{};", "cpr={}&x", "id-{}-x", "abc{}def"])
def test_every_written_form_is_masked_anywhere_in_a_text(written: str, around: str) -> None:
    text = around.format(written)
    assert mask_cpr(text) == around.format("<cpr>")
    assert cpr_numbers_in(text) == ["2512…"]


@pytest.mark.parametrize(
    "text",
    [
        "12512489996",  # eleven digits: part of a longer number
        "25124899961",
        "1251248 9996",
        "251248 99961",
        "SOR 715541000016001, EAN 5790001382445",
        "251248  9996",  # two separators: not how a CPR number is written
        "2026-11-30T23:58:41.642385Z",
    ],
)
def test_longer_digit_runs_and_other_numbers_are_left_alone(text: str) -> None:
    assert mask_cpr(text) == text


def test_masked_reaches_into_every_value_an_amqp_header_or_a_log_field_can_hold() -> None:
    value = {
        "text": f"for {CPR}",
        "spaced": "251248 9996",
        "bytes": f"b{CPR}".encode(),
        "number": int(CPR),
        "list": [CPR, {"deep": (CPR,)}],
        CPR: "a key",
        "moment": datetime(2026, 1, 1, tzinfo=UTC),
        "fine": 42,
        "flag": True,
    }
    result = masked(value)
    assert CPR not in repr(result) and "251248 9996" not in repr(result)
    assert result["number"] == "<cpr>" and result["bytes"] == "b<cpr>" and result["list"][1] == {"deep": ("<cpr>",)}
    assert result["<cpr>"] == "a key"
    assert result["moment"] == value["moment"] and result["fine"] == 42 and result["flag"] is True


def test_masked_headers_keeps_what_holds_no_cpr_number_as_it_was() -> None:
    headers = {"x-patient": CPR, "x-count": 3, "x-raw": b"\xff\x00", "x-list": ["a", 1]}
    assert masked_headers(headers) == {"x-patient": "<cpr>", "x-count": 3, "x-raw": b"\xff\x00", "x-list": ["a", 1]}
    assert masked_headers(None) == {} and masked_headers(["not", "a", "table"]) == {}


def test_one_line_masks_the_spaced_form_too() -> None:
    assert one_line("patient 251248 9996\nforged line") == "patient <cpr>\\nforged line"


def test_a_log_field_holding_a_cpr_number_as_a_number_or_with_a_space_is_masked() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    structlog.get_logger("test").info("lookup", cpr=int(CPR), note="for 251248 9996", raw=CPR.encode())
    record = json.loads(stream.getvalue())
    assert (record["cpr"], record["note"]) == ("<cpr>", "for <cpr>")
    assert CPR not in stream.getvalue() and "251248 9996" not in stream.getvalue()


def test_an_unknown_log_level_is_refused_naming_the_levels() -> None:
    with pytest.raises(ValueError, match="DEBUG, INFO, WARNING, ERROR, CRITICAL"):
        configure_logging("bogus", io.StringIO())


@pytest.mark.parametrize("typed", ["2512489996", "251248-9996", "251248 9996", " 251248-9996 "])
def test_a_cpr_number_is_read_as_an_operator_types_it(typed: str) -> None:
    assert read_cpr(typed).value == CPR


@pytest.mark.parametrize("typed", ["251248--9996", "25124-89996", "3212489996", "12345", "２５１２４８９９９６", ""])
def test_what_is_not_a_cpr_number_is_refused_without_repeating_it(typed: str) -> None:
    with pytest.raises(ValueError) as refused:
        read_cpr(typed)
    assert typed.strip() not in str(refused.value) or not typed.strip()


@pytest.mark.parametrize(
    "written",
    [
        "２５１２４８９９９６",  # full-width digits
        "٢٥١٢٤٨٩٩٩٦",  # Arabic-Indic digits
        "25１２48-9996",  # mixed scripts
    ],
)
def test_a_cpr_number_in_digits_of_another_script_is_masked_and_found(written: str) -> None:
    assert mask_cpr(f"patient {written}.") == "patient <cpr>."
    assert one_line(f"x{written}x") == "x<cpr>x"
    assert cpr_numbers_in(f"log {written}") != []


def test_a_cpr_number_held_as_a_decimal_or_a_float_header_value_is_masked() -> None:
    from decimal import Decimal

    headers = {"patient": Decimal(CPR), "list": [Decimal(CPR), float(CPR)], "price": Decimal("12.50")}
    assert masked_headers(headers) == {"patient": "<cpr>", "list": ["<cpr>", "<cpr>"], "price": Decimal("12.50")}


def test_an_echo_cut_short_is_masked_before_the_cut() -> None:
    """A declared XML encoding is echoed at most 24 characters long: cut first, the mask would not see the
    CPR number's last digit and would let the birth date and three serial digits through."""
    from integration.errors import InvalidInput
    from integration.formats.safe_xml import parse_xml

    with pytest.raises(InvalidInput) as refused:
        parse_xml(f'<?xml version="1.0" encoding="abcdefghijk{CPR}"?><a/>'.encode(), 10_000)
    assert CPR[:9] not in str(refused.value)
    assert "<cpr>" in str(refused.value)
