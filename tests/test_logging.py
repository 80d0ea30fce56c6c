"""No CPR number reaches log output."""

import io
import json
import logging
from pathlib import Path

import pytest
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


def _failing_flow(body: bytes, now: object, state: object) -> object:
    patient = "2512489996"  # a local of the frame: never rendered, whatever the renderer
    raise ValueError(f"no course for {patient} in {body[:30]!r} (251248-9996)")


def _failing_flow_logged(fmt: str, tmp_path: Path) -> str:
    from integration.adapters.memory import InMemoryBroker
    from integration.adapters.sql.sqlite import SqliteAuditStore
    from integration.bootstrap import build
    from integration.config import Settings
    from integration.service.processor import Delivery
    from tests.conftest import FIXED_NOW

    stream = io.StringIO()
    configure_logging("INFO", stream, fmt)
    store = SqliteAuditStore(str(tmp_path / "audit.sqlite3"))
    try:
        handlers = {"discharge": _failing_flow}
        wiring = build(
            Settings.from_env({}), bus=InMemoryBroker(), store=store, clock=lambda: FIXED_NOW, handlers=handlers
        )
        processor = wiring.processor
        outcome = processor.process(Delivery("discharge", b'{"cpr": "2512489996"}', "m-1", delivery_tag=7))
    finally:
        store.close()
    assert outcome.disposition == "failed" and outcome.error == "ValueError"
    return stream.getvalue()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_failing_flows_exception_is_logged_with_its_traceback_and_masked(fmt: str, tmp_path: Path) -> None:
    output = _failing_flow_logged(fmt, tmp_path)
    assert "handler failed" in output and "Traceback (most recent call last)" in output
    assert "_failing_flow" in output and "ValueError: no course for <cpr>" in output
    assert "2512489996" not in output and "251248-9996" not in output


def test_every_line_about_a_message_carries_its_flow_correlation_id_and_delivery_tag(tmp_path: Path) -> None:
    lines = [json.loads(line) for line in _failing_flow_logged("json", tmp_path).splitlines()]
    (failed,) = [line for line in lines if line["event"] == "handler failed"]
    assert failed["flow"] == "discharge" and failed["correlation_id"] == "m-1" and failed["error"] == "ValueError"
    assert failed["delivery_tag"] == 7
    assert "exception" in failed  # the traceback, masked
    assert structlog.contextvars.get_contextvars() == {}, "the context is the message's only"


def test_library_log_lines_are_rendered_and_masked_like_ours() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream, "json")
    logging.getLogger("some.library").warning("could not reach %s for 2512489996", "db")
    logging.getLogger("some.library").info("routine")  # a library's INFO is below what we show
    (line,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert line["event"] == "could not reach db for <cpr>" and line["logger"] == "some.library"


class _Writes(io.StringIO):
    """A stream that keeps each write apart, as the kernel sees them on a file or pipe shared by processes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_each_log_line_is_one_write_with_its_newline() -> None:
    """The workers of `run --processes N` share the supervisor's stderr: a line written in two parts (the text,
    then its newline, as print() does) lets another process's line in between, and both lines are lost to a
    JSON reader (seen as 'Extra data' in a SIGHUP test with two workers)."""
    stream = _Writes()
    configure_logging("INFO", stream, "json")
    try:
        structlog.get_logger("test").info("one line", worker=1)
        logging.getLogger("library").warning("from the standard library")
    finally:
        configure_logging("INFO")
    assert stream.writes, "nothing was written"
    for written in stream.writes:
        assert written.endswith("\n") and written.count("\n") == 1, stream.writes
        json.loads(written)
