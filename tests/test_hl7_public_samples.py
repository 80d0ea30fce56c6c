"""Public HL7 v2 sample messages (tests/hl7/README.md names their sources) are read or refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.flows.dispatch import Pipeline, transform
from integration.formats.er7 import Hl7Problem, parse_er7
from tests.conftest import FIXED_NOW

PUBLIC = Path(__file__).parent / "hl7" / "public"


@pytest.mark.parametrize(
    ("name", "place", "code"),
    [
        ("python-hl7-sample-oru-r01.er7", "MSH-9.1", "200"),
        ("python-hl7-sample-adt-a04.er7", "MSH-9.2", "201"),
        ("hl7-v2.5-example-adt-a01.er7", "MSH-9.2", "201"),
    ],
)
def test_a_public_sample_on_the_discharge_queue_is_refused_naming_the_field(
    name: str, place: str, code: str, pipeline: Pipeline
) -> None:
    raw = (PUBLIC / name).read_bytes()
    assert parse_er7(raw, 100_000).control_id  # readable ER7
    with pytest.raises(Hl7Problem) as caught:
        transform(raw, pipeline, FIXED_NOW, "discharge")
    assert (caught.value.field, caught.value.code) == (place, code)


def test_a_public_batch_file_is_not_one_message(pipeline: Pipeline) -> None:
    """On the queue too: a file (FHS/BHS) reaches the ER7 reader (it was once refused as malformed JSON)."""
    raw = (PUBLIC / "python-hl7-sample-file-adt-a04.er7").read_bytes()
    with pytest.raises(Hl7Problem) as caught:
        parse_er7(raw, 100_000)
    assert (caught.value.field, caught.value.code) == ("MSH", "100")
    with pytest.raises(Hl7Problem) as caught:
        transform(raw, pipeline, FIXED_NOW, "discharge")
    assert (caught.value.field, caught.value.code) == ("MSH", "100")


def test_the_standards_admission_example_as_a_discharge_is_refused_at_the_first_field_it_lacks(
    pipeline: Pipeline,
) -> None:
    """The HL7 v2.5 example with MSH-9 made an A03: a foreign hospital's discharge has no visit number where our
    profile reads it (nor a CPR number, nor a SOR code), and is refused naming that field, not with a crash."""
    raw = (PUBLIC / "hl7-v2.5-example-adt-a01.er7").read_bytes().replace(b"ADT^A01^ADT_A01", b"ADT^A03^ADT_A03")
    with pytest.raises(Hl7Problem) as caught:
        transform(raw, pipeline, FIXED_NOW, "discharge")
    assert (caught.value.field, caught.value.code) == ("PV1-19.1", "101")
