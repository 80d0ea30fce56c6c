"""No CPR number reaches log output."""

import io
import json

import structlog

from integration.log import configure_logging, mask_cpr


def test_cpr_numbers_are_masked_in_every_field_and_traceback() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    log = structlog.get_logger("test")
    try:
        raise ValueError("patient 2512489996 not found")
    except ValueError:
        log.exception("lookup failed", cpr="2512489996", nested={"ids": ["251248-9996", "x"]}, note="for 0107729995")
    output = stream.getvalue()
    assert "2512489996" not in output and "251248-9996" not in output and "0107729995" not in output
    record = json.loads(output)
    assert record["cpr"] == "<cpr>" and record["nested"]["ids"] == ["<cpr>", "x"]
    assert "<cpr>" in record["exception"]


def test_mask_leaves_other_numbers_alone() -> None:
    assert (
        mask_cpr("SOR 715541000016001, EAN 5790001382445, id 12345")
        == "SOR 715541000016001, EAN 5790001382445, id 12345"
    )
    assert mask_cpr("cpr 2512489996.") == "cpr <cpr>."


def test_the_suite_scanner_finds_cpr_numbers_and_only_them() -> None:
    from integration.log import cpr_numbers_in

    assert cpr_numbers_in('{"x": "2512489996", "y": "251248-9996"}') == ["2512…", "2512…"]
    assert cpr_numbers_in("SOR 715541000016001, 9999999999, event 3213489996") == []  # no real birth date
