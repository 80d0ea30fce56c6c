"""ADT → discharge event (`formats.adt`, mappings/hl7.yaml): every mapping rule of the default profile, and
every bad input refused naming its HL7 field with its Table 0357 code (never a value)."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from integration.domain.records import DischargeCancellation, DischargeEvent
from integration.flows.dispatch import Pipeline, read_inbound, transform
from integration.formats.adt import MappedDischarge, discharge_record, event_id, read_adt
from integration.formats.er7 import Hl7Problem
from tests.conftest import FIXED_NOW

FIXTURE = Path(__file__).parent / "hl7" / "01-municipal-gop-general-sternotomy.a03.er7"
CPR = "2512489996"


def segments() -> dict[str, str]:
    lines = FIXTURE.read_bytes().decode("utf-8").split("\r")
    return {line[:3]: line for line in lines if line}


def message(changes: dict[str, str | None] | None = None, extra: tuple[str, ...] = ()) -> bytes:
    """Fixture 01 with segments replaced (None: removed) and extra segments appended."""
    parts = segments()
    for key, value in (changes or {}).items():
        if value is None:
            parts.pop(key, None)
        else:
            parts[key] = value
    return ("\r".join([*parts.values(), *extra]) + "\r").encode("utf-8")


def replaced(segment: str, old: str, new: str) -> dict[str, str | None]:
    line = segments()[segment]
    assert old in line, old
    return {segment: line.replace(old, new, 1)}


def read(raw: bytes, pipeline: Pipeline) -> MappedDischarge | DischargeCancellation:
    er7 = read_inbound(raw, pipeline.max_payload_bytes).er7
    assert er7 is not None
    return read_adt(er7, pipeline.hl7_profile, FIXED_NOW)


def record(raw: bytes, pipeline: Pipeline) -> DischargeEvent:
    mapped = read(raw, pipeline)
    assert isinstance(mapped, MappedDischarge)
    return discharge_record(mapped, pipeline.discharge_contract, FIXED_NOW)


def document(raw: bytes, pipeline: Pipeline) -> dict[str, Any]:
    mapped = read(raw, pipeline)
    assert isinstance(mapped, MappedDischarge)
    return mapped.document


def refused(raw: bytes, pipeline: Pipeline) -> Hl7Problem:
    with pytest.raises(Hl7Problem) as caught:
        record(raw, pipeline)
    assert CPR not in str(caught.value) and "Berggren" not in str(caught.value)
    return caught.value


# -- mapping rules -------------------------------------------------------------------------------------------


def test_the_cpr_is_the_repetition_under_the_assigning_authority(pipeline: Pipeline) -> None:
    swapped = replaced("PID", "2512489996^^^CPR^NI~778899^^^RHN^MR", "778899^^^RHN^MR~2512489996^^^CPR^NI")
    assert document(message(swapped), pipeline)["patient"]["cpr"] == CPR
    by_oid = replaced("PID", "2512489996^^^CPR^NI", "2512489996^^^&1.2.208.176.1.2&ISO")
    assert document(message(by_oid), pipeline)["patient"]["cpr"] == CPR


def test_names_municipality_and_gp(pipeline: Pipeline) -> None:
    patient = document(message(), pipeline)["patient"]
    assert (patient["familyName"], patient["givenNames"], patient["municipalityCode"]) == (
        "Berggren",
        ["Nancy", "Ann"],
        "851",
    )
    assert patient["gp"] == {"sor": "123451000016008", "ydernummer": "012345"}
    assert "gp" not in document(message({"PD1": None}), pipeline)["patient"]


def test_escaped_names_are_decoded(pipeline: Pipeline) -> None:
    escaped = replaced("PID", "Berggren^Nancy^Ann", "Berggren\\T\\S\\XC3B8\\n^Nancy^Ann")
    assert document(message(escaped), pipeline)["patient"]["familyName"] == "Berggren&Søn"


def test_the_unit_is_looked_up_in_departments(pipeline: Pipeline) -> None:
    hospital = document(message(), pipeline)["hospital"]
    assert hospital == {"sor": "715541000016001", "ean": "5790001382445", "name": "Aalborg UH, Kardiologisk Afdeling"}


def test_times_without_offset_are_copenhagen_time_dst_correct(pipeline: Pipeline) -> None:
    summer = replaced("PV1", "20261114091200|20261120133000", "20260614091200|20260620133000")
    admission = document(message({**summer, "EVN": "EVN|A03|202606201405"}), pipeline)["admission"]
    assert admission == {"admittedAt": "2026-06-14T09:12:00+02:00", "dischargedAt": "2026-06-20T13:30:00+02:00"}
    offset = replaced("PV1", "20261120133000", "20261120123000.25+0000")
    assert document(message(offset), pipeline)["admission"]["dischargedAt"] == "2026-11-20T12:30:00.25+00:00"


def test_evn_2_else_msh_7_is_when_it_occurred(pipeline: Pipeline) -> None:
    assert document(message(), pipeline)["occurredAt"] == "2026-11-20T14:05:00+01:00"
    assert document(message({"EVN": "EVN|A03"}), pipeline)["occurredAt"] == "2026-11-20T14:05:12+01:00"


def test_diagnoses_primary_by_type_or_priority_and_sks_kept(pipeline: Pipeline) -> None:
    dg1 = ("DG1|1||DE119^^SKS", "DG1|2||DI214^^SKS||||||||||||1")
    assert document(message({"DG1": None}, dg1), pipeline)["diagnoses"] == [
        {"system": "SKS", "code": "DE119"},
        {"system": "SKS", "code": "DI214", "primary": True},
    ]
    assert document(message(), pipeline)["diagnoses"] == [{"system": "ICD-10", "code": "I21.4", "primary": True}]


def test_procedures_and_the_earliest_sternotomy(pipeline: Pipeline) -> None:
    pr1 = ("PR1|1||BFCA0^^SKS||20261105", "PR1|2||KFNA00^^SKS||20261116", "PR1|3||KFKD00^^||20261115")
    mapped = document(message({"PR1": None}, pr1), pipeline)
    assert [p["code"] for p in mapped["procedures"]] == ["BFCA0", "KFNA00", "KFKD00"]
    assert mapped["surgery"] == {"sternotomy": True, "date": "2026-11-15"}
    without = document(message({"PR1": "PR1|1||BFCA0^^SKS||20261105"}), pipeline)
    assert "surgery" not in without


def test_exercise_test_results_from_obx_as_written(pipeline: Pipeline) -> None:
    obx = (
        "OBX|1|ID|RH-EXT-PERFORMED||Y",
        "OBX|2|DT|RH-EXT-DATE||20261119",
        "OBX|3|NM|RH-EXT-WATT||150.0",
        "OBX|4|NM|RH-EXT-METS||7.50",
        "OBX|5|NM|RH-EXT-PEAK-HR||142",
        "OBX|6|TX|RH-EXT-CONCLUSION||Ingen iskæmi~kan træne",
    )
    test = record(message({"OBX": None}, obx), pipeline).exercise_test
    assert test is not None and (str(test.max_workload_watt), str(test.mets), test.peak_heart_rate) == (
        "150.0",
        "7.50",
        142,
    )
    assert test.conclusion == "Ingen iskæmi\nkan træne"


def test_rehabilitation_from_the_z_segment_with_coded_values(pipeline: Pipeline) -> None:
    event = record(message(), pipeline)
    assert (event.clinician_risk_group.value if event.clinician_risk_group else None) == "moderate"
    assert event.referral.decision == "municipal" and event.referral.training_needed
    assert event.risk_criteria == ("incomplete-revascularisation",)
    assert event.referral.rehab_elements == ("physical-activity", "diet", "patient-education", "smoking-cessation")
    assert (event.referral.ambulatory_control, event.referral.ambulatory_control_at_end) == (True, False)
    words = replaced("ZRH", "ZRH|M|", "ZRH|high|")
    assert document(message(words), pipeline)["clinicianRiskGroup"] == "high"


def test_an_empty_or_null_optional_field_is_absent(pipeline: Pipeline) -> None:
    null_note = replaced("ZRH", "|free text", '|""')
    assert "note" not in document(message(null_note), pipeline)["referral"]


# -- event ids -----------------------------------------------------------------------------------------------


def test_a08_is_a_discharge_update_identified_by_its_control_id(pipeline: Pipeline) -> None:
    a08 = replaced("MSH", "ADT^A03^ADT_A03", "ADT^A08^ADT_A01")
    mapped = document(message(a08), pipeline)
    assert mapped["eventType"] == "discharge-update" and mapped["episodeOfCare"] == "V-2026-0042"
    assert mapped["eventId"] == event_id("A08", "RHN^1.2.208.176.1.1^ISO", "RHN-0001")
    assert record(message(a08), pipeline).event_type == "discharge-update"


def test_an_a08_without_discharge_or_referral_data_is_refused_naming_the_field(pipeline: Pipeline) -> None:
    a08 = replaced("MSH", "ADT^A03^ADT_A03", "ADT^A08^ADT_A01")
    no_discharge = {**a08, **replaced("PV1", "|20261120133000", "|")}
    problem = refused(message(no_discharge), pipeline)
    assert (problem.field, problem.code) == ("PV1-45.1", "101")
    no_referral = {**a08, "ZRH": None}
    assert refused(message(no_referral), pipeline).field == "ZRH-3.1"


@pytest.mark.parametrize("trigger", ["A13", "A11"])
def test_a13_and_a11_are_cancellations(trigger: str, pipeline: Pipeline) -> None:
    structure = {"A13": "ADT_A01", "A11": "ADT_A09"}[trigger]  # HL7 v2.5 Table 0003's structure of the trigger
    raw = message(replaced("MSH", "ADT^A03^ADT_A03", f"ADT^{trigger}^{structure}"))
    cancel = read(raw, pipeline)
    assert isinstance(cancel, DischargeCancellation)
    assert (cancel.episode, cancel.trigger, cancel.hospital_sor) == ("V-2026-0042", trigger, "715541000016001")
    assert cancel.event_id == event_id(trigger, "RHN^1.2.208.176.1.1^ISO", "RHN-0001")
    assert cancel.occurred_at == datetime.fromisoformat("2026-11-20T14:05:00+01:00")
    assert cancel.person is not None and cancel.person.family_name == "Berggren"
    result = transform(raw, pipeline, FIXED_NOW)  # no course known: nothing to cancel, audited
    assert [f.kind for f in result.facts] == ["nothing-to-cancel"] and not result.outgoing


# -- refusals ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "extra", "place", "code"),
    [
        (replaced("MSH", "ADT^A03^ADT_A03", "ORU^R01^ORU_R01"), (), "MSH-9.1", "200"),
        (replaced("MSH", "ADT^A03^ADT_A03", "ADT^A01^ADT_A01"), (), "MSH-9.2", "201"),
        (replaced("MSH", "|P|2.5", "|T|2.5"), (), "MSH-11.1", "202"),
        (replaced("MSH", "|P|2.5", "|P|2.2"), (), "MSH-12.1", "203"),
        (replaced("MSH", "RHN^1.2.208.176.1.1^ISO", ""), (), "MSH-4.1", "101"),
        ({"PID": None}, (), "PID", "100"),  # a required segment missing (HL7 Table 0357: 100)
        (replaced("PID", "^^^CPR^NI", "^^^XYZ^NI"), (), "PID-3.4", "101"),
        (replaced("PID", "2512489996^", "3212489996^"), (), "PID-3.1", "102"),  # the contract: no real date
        (replaced("PID", "19481225", "19481226"), (), "PID-7.1", "102"),
        (replaced("PID", "|851", "|85X"), (), "PID-12.1", "102"),
        (replaced("PID", "Berggren^Nancy^Ann", ""), (), "PID-5.1", "102"),
        (replaced("PD1", "|012345^", "|^"), (), "PD1-4.1", "102"),
        (replaced("PV1", "715541000016001", "715541000099999"), (), "PV1-3.10", "103"),
        (replaced("PV1", "V-2026-0042", ""), (), "PV1-19.1", "101"),
        (replaced("PV1", "20261120133000", "20261120"), (), "PV1-45.1", "102"),
        (replaced("PV1", "20261120133000", "2026112013"), (), "PV1-45.1", "102"),
        (replaced("PV1", "20261120133000", "20261131133000"), (), "PV1-45.1", "102"),
        (replaced("PV1", "20261120133000", "20261120133000+1500"), (), "PV1-45.1", "102"),
        (replaced("PV1", "20261114091200", "20260329023000"), (), "PV1-44.1", "102"),  # skipped by DST
        (replaced("PV1", "20261114091200", "20261025023000"), (), "PV1-44.1", "102"),  # repeated by DST
        (replaced("PV1", "20261114091200", "20261121091200"), (), "PV1-45.1", "102"),  # before admission
        (
            {
                **replaced("MSH", "ADT^A03^ADT_A03", "ADT^A08^ADT_A01"),
                **replaced("PV1", "20261120133000", "20271120133000"),
            },
            (),
            "PV1-45.1",
            "102",
        ),  # a year on (an A08: an A03's event time would be before such a discharge, refused at EVN-2)
        ({"DG1": None}, (), "DG1-3.1", "102"),
        (replaced("DG1", "^I10", "^ICPC"), (), "DG1-3.3", "103"),
        (replaced("DG1", "I21.4^", "i21^"), (), "DG1-3.1", "102"),
        (replaced("PR1", "^SKS", "^OPCS"), (), "PR1-3.3", "103"),
        (replaced("PR1", "20261115083000", ""), (), "PR1-5.1", "102"),  # a sternotomy needs its date
        (replaced("PR1", "20261115083000", "2026111"), (), "PR1-5.1", "102"),
        (replaced("OBX", "||N|", "||J|"), (), "OBX-5.1", "103"),
        ({"OBX": None}, (), "OBX-5.1", "102"),  # the contract requires exerciseTest.performed
        ({}, ("OBX|2|ID|RH-EXT-PERFORMED||N",), "OBX(2)-3.1", "100"),
        ({"OBX": "OBX|1|ID|RH-EXT-PERFORMED||Y"}, ("OBX|2|NM|RH-EXT-WATT||1e2",), "OBX(2)-5.1", "102"),
        (replaced("ZRH", "ZRH|M|", "ZRH|X|"), (), "ZRH-1.1", "102"),
        (replaced("ZRH", "|municipal|", "|elsewhere|"), (), "ZRH-3.1", "102"),
        (replaced("ZRH", "|municipal|Y|", "|municipal|J|"), (), "ZRH-4.1", "103"),
        (replaced("ZRH", "~diet~", "~diet~swimming~"), (), "ZRH-5[3].1", "102"),
        ({"ZRH": None}, (), "ZRH-3.1", "102"),  # the contract requires referral.decision
        (replaced("EVN", "20261120140500", "20271120140500"), (), "EVN-2.1", "102"),
    ],
)
def test_bad_input_is_refused_naming_the_hl7_field(
    changes: dict[str, str | None], extra: tuple[str, ...], place: str, code: str, pipeline: Pipeline
) -> None:
    problem = refused(message(changes, extra), pipeline)
    assert (problem.field, problem.code) == (place, code), str(problem)


def test_dispatch_refuses_a_non_adt_naming_msh_9(pipeline: Pipeline) -> None:
    with pytest.raises(Hl7Problem) as caught:
        transform(message(replaced("MSH", "ADT^A03^ADT_A03", "ORU^R01")), pipeline, FIXED_NOW, "discharge")
    assert caught.value.field == "MSH-9.1"


def test_a_flow_refusal_names_the_hl7_field_too(pipeline: Pipeline) -> None:
    unknown = replaced("PID", "|851", "|999")  # a municipality code of the right shape that mappings do not know
    with pytest.raises(Hl7Problem) as caught:
        transform(message(unknown), pipeline, FIXED_NOW, "discharge")
    assert (caught.value.field, caught.value.code) == ("PID-12.1", "102") and CPR not in str(caught.value)


# -- the attacker's files (tests/hl7/hostile/, tests/hl7/README.md) ------------------------------------------

HOSTILE = FIXTURE.parent / "hostile"


@pytest.mark.parametrize(
    ("name", "place", "code"),
    [
        # escapes: an undefined or malformed sequence is refused at its field, never dropped, never a crash
        ("esc-Fxyz.er7", "PID-5.1", "102"),
        ("esc-Eextra.er7", "PID-5.1", "102"),
        ("esc-X41ZZ.er7", "PID-5.1", "102"),
        ("esc-X_odd.er7", "PID-5.1", "102"),
        ("esc-sp_huge.er7", "PID-5.1", "102"),
        ("esc-in_huge.er7", "PID-5.1", "102"),
        ("esc-in-cpr-Fxyz.er7", "PID-3.1", "102"),
        ("esc-in-cpr-X41ZZ.er7", "PID-3.1", "102"),
        # control characters and bidirectional controls in a name: refused at the HL7 field
        ("esc-X00.er7", "PID-5.1", "102"),
        ("esc-X07.er7", "PID-5.1", "102"),
        ("esc-X0D.er7", "PID-5.1", "102"),
        ("esc-brk.er7", "PID-5.1", "102"),
        ("c1-control.er7", "PID-5.1", "102"),
        ("rtl-override.er7", "PID-5.1", "102"),
        # a segment twice that the structure allows once; two different CPR numbers
        ("dup-pid.er7", "PID(2)", "100"),
        ("dup-pv1.er7", "PV1(2)", "100"),
        ("dup-zrh.er7", "ZRH(2)", "100"),
        ("dup-evn.er7", "EVN(2)", "100"),
        ("cpr-two-reps.er7", "PID-3[2]", "102"),
        # envelopes: a batch or a first segment that is not MSH reach the ER7 reader and are refused at MSH
        ("batch.er7", "MSH", "100"),
        ("msh-not-first.er7", "MSH", "100"),
        # header and structure
        ("type-structure-mismatch.er7", "MSH-9.3", "200"),
        ("pv1-missing.er7", "PV1", "100"),
        ("msh-only.er7", "PID", "100"),
        # times: the spring gap named for what it is; an A03 whose event time is before its discharge
        ("dst-gap-admit.er7", "PV1-44.1", "102"),
        ("dst-spring-gap-disch.er7", "PV1-45.1", "102"),
        ("evn-before-disch.er7", "EVN-2.1", "102"),
    ],
)
def test_hostile_files_are_refused_naming_the_hl7_field(
    name: str, place: str, code: str, pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Hl7Problem) as caught:
        transform((HOSTILE / name).read_bytes(), pipeline, FIXED_NOW, "discharge")
    assert (caught.value.field, caught.value.code) == (place, code), str(caught.value)
    for value in (CPR, "0101701234", "Berg", "Nancy"):
        assert value not in str(caught.value) and value not in caplog.text


@pytest.mark.parametrize("name", ["bom.er7", "leading-ws.er7"])
def test_a_byte_order_mark_or_leading_white_space_is_read_as_the_message(name: str, pipeline: Pipeline) -> None:
    assert document((HOSTILE / name).read_bytes(), pipeline) == document(FIXTURE.read_bytes(), pipeline)


def test_the_spring_gap_and_the_autumn_repeat_are_told_apart(pipeline: Pipeline) -> None:
    gap = refused((HOSTILE / "dst-gap-admit.er7").read_bytes(), pipeline)
    assert "does not exist" in gap.problem and "forward" in gap.problem and "twice" not in gap.problem
    repeat = refused(message(replaced("PV1", "20261114091200", "20261025023000")), pipeline)
    assert "occurs twice" in repeat.problem and "back" in repeat.problem


def test_the_same_cpr_number_twice_is_one_patient(pipeline: Pipeline) -> None:
    twice = replaced("PID", "~778899^^^RHN^MR", f"~{CPR}^^^&1.2.208.176.1.2&ISO")
    assert document(message(twice), pipeline)["patient"]["cpr"] == CPR


@pytest.mark.parametrize(
    ("changes", "place", "code"),
    [
        (replaced("MSH", "|P|2.5", "|P^A|2.5"), "MSH-11.2", "202"),  # archive
        (replaced("MSH", "|P|2.5", "|P^R|2.5"), "MSH-11.2", "202"),  # restore from archive
        (replaced("MSH", "|P|2.5", "|P^I|2.5"), "MSH-11.2", "202"),  # initial load
        (replaced("MSH", "ADT^A03^ADT_A03", "ADT^A08^ADT_A03"), "MSH-9.3", "200"),
        (replaced("MSH", "ADT^A03^ADT_A03", "ADT^A13^ADT_A03"), "MSH-9.3", "200"),
        (replaced("MSH", "ADT^A03^ADT_A03", "ADT^A11^ADT_A01"), "MSH-9.3", "200"),  # A11 is ADT_A09
        ({"PV1": None}, "PV1", "100"),
        (replaced("MSH", "|EPJ|", "|E\\X0D\\PJ|"), "MSH-3.1", "102"),  # a header value with a control character
        (replaced("PID", "|851", "|85\u202e1"), "PID-12.1", "102"),
        (replaced("DG1", "I21.4^", "I21.4\\X09\\^"), "DG1-3.1", "102"),
        (replaced("ZRH", "|physical-activity~diet~", "|physical-activity~di\u2028et~"), "ZRH-5[2].1", "102"),
        (replaced("ZRH", "|free text", "|free\\X07\\text"), "ZRH-8.1", "102"),  # free text: a bell is no break
        (replaced("ZRH", "|free text", "|free \u202etext"), "ZRH-8.1", "102"),
    ],
)
def test_header_structure_and_characters_refused_naming_the_field(
    changes: dict[str, str | None], place: str, code: str, pipeline: Pipeline
) -> None:
    problem = refused(message(changes), pipeline)
    assert (problem.field, problem.code) == (place, code), str(problem)


def test_current_processing_and_the_right_structure_are_read(pipeline: Pipeline) -> None:
    assert document(message(replaced("MSH", "|P|2.5", "|P^T|2.5")), pipeline)["eventType"] == "discharge"
    assert document(message(replaced("MSH", "ADT^A03^ADT_A03", "ADT^A03")), pipeline)["eventType"] == "discharge"


def test_free_text_keeps_its_line_breaks(pipeline: Pipeline) -> None:
    note = replaced("ZRH", "|free text", "|line 1\\.br\\line 2\\X0D0A\\line 3")
    assert document(message(note), pipeline)["referral"]["note"] == "line 1\nline 2\r\nline 3"


def test_a_second_z_segment_of_the_profile_is_refused_whatever_its_name(pipeline: Pipeline) -> None:
    moved = {**pipeline.hl7_profile.rehabilitation}
    assert "decision" in moved
    from dataclasses import replace as replaced_profile

    from integration.formats.adt_profile import Place, Source

    profile = replaced_profile(
        pipeline.hl7_profile, rehabilitation={**moved, "decision": Source(place=Place("ZXX", 1))}
    )
    er7 = read_inbound(message(extra=("ZXX|municipal", "ZXX|hospital")), pipeline.max_payload_bytes).er7
    assert er7 is not None
    with pytest.raises(Hl7Problem) as caught:
        read_adt(er7, profile, FIXED_NOW)
    assert (caught.value.field, caught.value.code) == ("ZXX(2)", "100")
