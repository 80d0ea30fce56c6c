"""Properties of the ER7 reader and the ADT mapping: whatever bytes follow an MSH header, the only failure is a
refusal (Hl7Problem, an InvalidInput) that names no value; never another exception, and nothing logged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration.errors import InvalidInput
from integration.flows.dispatch import Pipeline
from integration.formats.adt import MappedDischarge, discharge_record, read_adt
from integration.formats.er7 import Hl7Problem, parse_er7
from tests.conftest import FIXED_NOW

HEADER = b"MSH|^~\\&|"
TWIN = (Path(__file__).parent / "hl7" / "01-municipal-gop-general-sternotomy.a03.er7").read_bytes()
# bytes an ER7 message is made of, weighted towards its delimiters and escapes
ER7_BYTES = st.lists(
    st.one_of(
        st.sampled_from([b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b'""', b"\\X", b"\\.br\\", b"PID", b"PV1|"]),
        st.binary(min_size=1, max_size=4),
    ),
    max_size=60,
).map(b"".join)
# escape sequences: defined ones, ones that merely begin like them, malformed hex, huge and non-ASCII counts,
# unclosed ones, and what they decode to (controls, separators, bidirectional controls, invalid UTF-8)
_ESCAPE_BODIES = st.one_of(
    st.sampled_from(["F", "S", "T", "R", "E", "H", "N", ".br", ".sp", ".sp3", ".sk2", ".in+4", ".ti-2", ".fi", ".ce"]),
    st.sampled_from(["Fxyz", "EE", "Hx", "X", "X4", "X414", "X41ZZ", "Xzz", "C2842", "M", "Zabc", "", ".brx"]),
    st.sampled_from(["X00", "X07", "X0D", "X0A", "X1C", "XC285", "XE280AE", "XFF", "XC3A6", "XEDA080", "XC0AF"]),
    st.builds(lambda c, n: c + "9" * n, st.sampled_from([".sp", ".sk", ".in+", ".ti-", "X"]), st.integers(0, 5000)),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\\|\r\n"), max_size=6),
)
ESCAPE_HEAVY = st.lists(
    st.one_of(
        _ESCAPE_BODIES.map(lambda body: ("\\" + body + "\\").encode("utf-8")),
        st.sampled_from([b"\\", b"^", b"~", b"&", b"|", b"Berg", b"\xe2\x80\xae", b"\xc2\x85", b"\x07"]),
    ),
    max_size=12,
).map(b"".join)
# where an escape-heavy value goes in the A03: names, the CPR, codes, free text, the header
_PLACES = [b"Berggren", b"Nancy", b"2512489996^^^CPR", b"|851", b"I21.4", b"free text", b"V-2026-0042", b"RHN-0001"]


def _read(raw: bytes, pipeline: Pipeline) -> None:
    try:
        message = parse_er7(raw, 100_000)
        mapped = read_adt(message, pipeline.hl7_profile, FIXED_NOW)
        if isinstance(mapped, MappedDischarge):
            discharge_record(mapped, pipeline.discharge_contract, FIXED_NOW)
    except Hl7Problem as problem:
        assert problem.code in {"100", "101", "102", "103", "200", "201", "202", "203", "207"}
        assert "2512489996" not in str(problem) and "Berggren" not in str(problem)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tail=ER7_BYTES)
def test_arbitrary_bytes_after_an_msh_header_are_read_or_refused(tail: bytes, pipeline: Pipeline) -> None:
    _read(HEADER + tail, pipeline)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(min_value=9, max_value=len(TWIN) - 1), inserted=ER7_BYTES, cut=st.integers(0, 5))
def test_a_damaged_a03_is_read_or_refused(at: int, inserted: bytes, cut: int, pipeline: Pipeline) -> None:
    try:
        _read(TWIN[:at] + inserted + TWIN[at + cut :], pipeline)
    except InvalidInput as refused:  # only Hl7Problem may escape: any other InvalidInput is unlabelled
        raise AssertionError(f"an InvalidInput that is no Hl7Problem: {refused.field}") from None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tail=ESCAPE_HEAVY, segment=st.sampled_from([b"PID|1||", b"PID|1||||", b"ZRH|", b"DG1|1||", b"EVN|A03|"]))
def test_escape_heavy_bytes_after_an_msh_header_are_read_or_refused(
    tail: bytes, segment: bytes, pipeline: Pipeline
) -> None:
    _read(HEADER + b"|||||ADT^A03|1|P|2.5\r" + segment + tail, pipeline)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(place=st.sampled_from(_PLACES), inserted=ESCAPE_HEAVY)
def test_escapes_in_any_value_of_an_a03_are_read_or_refused_and_never_logged(
    place: bytes, inserted: bytes, pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    at = TWIN.index(place) + len(place) // 2
    try:
        _read(TWIN[:at] + inserted + TWIN[at:], pipeline)
    except InvalidInput as refused:
        raise AssertionError(f"an InvalidInput that is no Hl7Problem: {refused.field}") from None
    assert "Berg" not in caplog.text and "2512489996" not in caplog.text
