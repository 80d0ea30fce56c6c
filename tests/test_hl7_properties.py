"""Properties of the ER7 reader and the ADT mapping: whatever bytes follow an MSH header, the only failure is a
refusal (Hl7Problem, an InvalidInput) that names no value; never another exception."""

from __future__ import annotations

from pathlib import Path

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


def _read(raw: bytes, pipeline: Pipeline) -> None:
    try:
        message = parse_er7(raw, 100_000)
        mapped = read_adt(message, pipeline.hl7_profile, FIXED_NOW)
        if isinstance(mapped, MappedDischarge):
            discharge_record(mapped, pipeline.discharge_contract, FIXED_NOW)
    except Hl7Problem as problem:
        assert problem.code in {"100", "101", "102", "103", "200", "201", "202", "203", "207"}
        assert "2512489996" not in str(problem)


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
