"""The hospital's own closing (schemas/hospital-closing.schema.json): read into a HospitalClosing, and the GP's
follow-up plan built from it, as a FHIR document and a CareCommunication (flows.hospital_closing).

The samples in tests/golden/hospital-closing use GPs, departments and CPR numbers of the other golden data
(mappings/gp-clinics.yaml, mappings/departments.yaml, tests/golden/discharge), each beside the outputs it
must produce (`--update-golden` rewrites them).
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from lxml import etree

from integration.bootstrap import load_contract
from integration.config import Settings
from integration.conformance.validation import (
    document_problems,
    fhir_problems,
    messaging_problems,
    validate_document,
    validate_message,
)
from integration.domain.course import Responsible
from integration.domain.hospital_closing import HospitalClosing, HospitalClosingKind
from integration.domain.identifiers import ReplacementCpr
from integration.domain.records import Organisation, Patient
from integration.errors import ConfigurationError, InvalidInput
from integration.fhir import fhir_json
from integration.flows.closing import ClosingContext
from integration.flows.dispatch import Pipeline
from integration.flows.hospital_closing import follow_up_outputs
from integration.formats.hospital_closing import (
    EVENT_TYPES,
    SCHEMA_FILE,
    is_hospital_closing,
    parse_hospital_closing,
)
from integration.formats.json_contract import JsonContract, RefusedContent, decode_json
from integration.messages.follow_up_plan import HANDOVER
from tests.conftest import GOLDEN
from tests.golden_normalise import generated_ids, normalise

SAMPLES = sorted((GOLDEN / "hospital-closing").glob("*.event.json"))
FOLLOW_UP = GOLDEN / "hospital-closing" / "01-follow-up-plan.event.json"
OUTPATIENT = GOLDEN / "hospital-closing" / "02-outpatient-discharge.event.json"
NOW = datetime(2027, 5, 12, 10, 0, tzinfo=ZoneInfo("Europe/Copenhagen"))
FOLLOW_UP_SENTENCE = "Med denne opfølgningsplan overgår det lægefaglige behandlingsansvar fra hospitalet til egen læge."
OUTPATIENT_SENTENCE = (
    "Patienten er afsluttet fra hospitalets ambulante forløb; det lægefaglige behandlingsansvar overgår hermed "
    "til egen læge."
)
CPRS = ("0211223989", "2512489996", "1502779995")


@pytest.fixture(scope="module")
def contract() -> JsonContract:
    return load_contract(Settings.from_env({}).schemas_dir, SCHEMA_FILE)


@pytest.fixture
def ctx(pipeline: Pipeline) -> ClosingContext:
    return pipeline.closing


def sample(path: Path = FOLLOW_UP) -> dict[str, Any]:
    return decode_json(path.read_bytes())


def changed(path: Path = FOLLOW_UP, **fields: Any) -> dict[str, Any]:
    """A sample with `fields` changed: a dotted key (`patient.gp`) reaches into objects; None removes it."""
    document = copy.deepcopy(sample(path))
    for dotted, value in fields.items():
        *parents, last = dotted.split(".")
        target = document
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return document


def refused(document: Any, contract: JsonContract, received_at: datetime = NOW) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_hospital_closing(document, contract, received_at)
    error = caught.value
    for number in (*CPRS, "0101505000"):
        assert number not in str(error), "an error never repeats a CPR number"
    return error


# -- reading -------------------------------------------------------------------------------------------


def test_there_are_samples_of_both_kinds() -> None:
    kinds = {sample(p)["eventType"] for p in SAMPLES}
    assert kinds == {"follow-up-plan", "outpatient-discharge"} == set(EVENT_TYPES)


def test_a_follow_up_plan_is_read_into_its_record(contract: JsonContract) -> None:
    closing = parse_hospital_closing(sample(FOLLOW_UP), contract, NOW)
    assert closing.kind is HospitalClosingKind.FOLLOW_UP_PLAN
    assert closing.event_id == "41ae8528-ef7d-431c-9cda-f9a829b8aff8"
    assert closing.occurred_at == datetime.fromisoformat("2027-03-04T11:40:00+01:00")
    assert closing.occurred_at_text == "2027-03-04T11:40:00+01:00"
    assert closing.hospital == Organisation("715541000016001", "5790001382445", "Aalborg UH, Kardiologisk Afdeling")
    assert closing.patient.cpr.birth_date == date(1922, 11, 2)
    assert (closing.patient.given_names, closing.patient.family_name) == (("Karl", "Otto"), "Test")
    assert (closing.gp.sor, closing.gp.ydernummer) == ("123451000016008", "012345")
    assert closing.closing_date == date(2027, 3, 4)
    assert closing.plan.startswith("Fortsat fysisk aktivitet") and "\n" in closing.plan
    assert closing.author == ("Mette Kjær Sørensen", "Overlæge", "+45 97 66 00 00")
    assert closing.responsible_after is Responsible.GP and closing.responsibility_transferred


def test_an_outpatient_discharge_is_read_with_its_time_in_fhir_form(contract: JsonContract) -> None:
    closing = parse_hospital_closing(sample(OUTPATIENT), contract, NOW)
    assert closing.kind is HospitalClosingKind.OUTPATIENT_DISCHARGE
    assert closing.occurred_at_text == "2027-05-12T09:15:00+02:00"  # seconds added: FHIR needs them
    assert closing.responsible_after is Responsible.GP


def test_event_id_is_lower_cased_and_municipality_code_loses_its_leading_zero(contract: JsonContract) -> None:
    document = changed(eventId="41AE8528-EF7D-431C-9CDA-F9A829B8AFF8", **{"patient.municipalityCode": "0846"})
    closing = parse_hospital_closing(document, contract, NOW)
    assert (closing.event_id, closing.patient.municipality_code) == ("41ae8528-ef7d-431c-9cda-f9a829b8aff8", "846")


def test_a_patient_without_cpr_is_named_by_a_replacement_number(contract: JsonContract) -> None:
    replacement = {"system": "urn:oid:1.2.208.176.1.6.1.3.179", "value": "0211225AB1"}
    document = changed(**{"patient.cpr": None, "patient.replacementCpr": replacement})
    closing = parse_hospital_closing(document, contract, NOW)
    assert isinstance(closing.patient.cpr, ReplacementCpr) and closing.patient.cpr.birth_date is None


def test_is_hospital_closing_tells_the_kinds_apart() -> None:
    assert is_hospital_closing(sample(FOLLOW_UP)) and is_hospital_closing(sample(OUTPATIENT))
    assert not is_hospital_closing({"eventType": "discharge"}) and not is_hospital_closing([])


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"patient.gp": None}, "patient.gp"),
        ({"plan": None}, "plan"),
        ({"author.phone": None}, "author.phone"),
        ({"closingDate": None}, "closingDate"),
        ({"schemaVersion": "2"}, "schemaVersion"),
        ({"eventType": "discharge"}, "eventType"),
        ({"eventId": "not-a-uuid"}, "eventId"),
        ({"occurredAt": "2027-03-04T11:40:00"}, "occurredAt"),  # no zone
        ({"occurredAt": "2227-03-04T11:40:00+01:00"}, "occurredAt"),  # a year no message carries
        ({"closingDate": "04-03-2027"}, "closingDate"),
        ({"plan": " \n\t "}, "plan"),  # blank
        ({"plan": "x" * 4001}, "plan"),
        ({"hospital.ean": "579000138244"}, "hospital.ean"),  # 12 digits
        ({"hospital.name": ""}, "hospital.name"),
        ({"patient.gp.ydernummer": "12345"}, "patient.gp.ydernummer"),
        ({"patient.cpr": "02112239"}, "patient.cpr"),
        ({"patient.replacementCpr": {"system": "urn:oid:1.2.208.176.1.6.1.1", "value": "0211221AB1"}}, "patient.cpr"),
        ({"author.phone": "ring til os"}, "author.phone"),
        ({"note": "unknown field"}, "note"),
    ],
    ids=lambda v: json.dumps(v, ensure_ascii=False)[:60] if isinstance(v, dict) else v,
)
def test_the_schema_refuses_naming_the_field(fields: dict[str, Any], field: str, contract: JsonContract) -> None:
    assert refused(changed(**fields), contract).field == field


def test_a_plan_of_4000_characters_is_accepted(contract: JsonContract) -> None:
    assert len(parse_hospital_closing(changed(plan="x" * 4000), contract, NOW).plan) == 4000


def test_an_ean_with_a_wrong_check_digit_is_refused(contract: JsonContract) -> None:
    error = refused(changed(**{"hospital.ean": "5790001382446"}), contract)
    assert (error.field, error.problem) == ("hospital.ean", "EAN location number has a wrong check digit")


def test_occurred_at_more_than_an_hour_after_receipt_is_refused(contract: JsonContract) -> None:
    occurred = datetime.fromisoformat(sample()["occurredAt"])
    error = refused(sample(), contract, received_at=occurred - timedelta(hours=1, seconds=1))
    assert error.field == "occurredAt" and "hour after" in error.problem
    assert parse_hospital_closing(sample(), contract, occurred - timedelta(hours=1)).occurred_at == occurred


def test_a_cpr_born_after_the_event_is_refused(contract: JsonContract) -> None:
    error = refused(changed(**{"patient.cpr": "0101505000"}), contract)  # 7th digit 5, year 50: born 2050
    assert error.field == "patient.cpr" and "after the event" in error.problem


def test_a_cpr_born_after_receipt_is_refused(contract: JsonContract) -> None:
    # born 2027-03-03 (7th digit 4, year 27: the 2000s); occurredAt is that day, within the hour after a
    # receipt on the day before: the number cannot be right when the event came
    document = changed(
        **{"patient.cpr": "0303274000"}, occurredAt="2027-03-03T00:30:00+01:00", closingDate="2027-03-03"
    )
    received = datetime.fromisoformat("2027-03-02T23:45:00+01:00")
    assert refused(document, contract, received_at=received).field == "patient.cpr"
    assert parse_hospital_closing(document, contract, received + timedelta(minutes=15)).closing_date == date(2027, 3, 3)


@pytest.mark.parametrize(
    ("closing_date", "problem"),
    [
        ("2027-02-30", "not a real date"),
        ("2027-03-05", "is after occurredAt"),  # the day after occurredAt's date
        ("1922-11-01", "is before the patient's birth date"),  # the day before the CPR's birth date
        ("1899-12-31", "does not have the required format"),  # the schema's years, 1900 to 2199
    ],
)
def test_closing_date_rules(closing_date: str, problem: str, contract: JsonContract) -> None:
    error = refused(changed(closingDate=closing_date), contract)
    assert error.field == "closingDate" and problem in error.problem


def test_closing_date_on_the_birth_date_and_on_occurred_at_date_is_accepted(contract: JsonContract) -> None:
    for closing_date in ("1922-11-02", "2027-03-04"):
        assert parse_hospital_closing(changed(closingDate=closing_date), contract, NOW).closing_date.isoformat() == (
            closing_date
        )


def test_closing_date_is_compared_with_occurred_at_as_written(contract: JsonContract) -> None:
    # 00:30 on 5 March in Denmark is 4 March in UTC: the sender's own date is the one that counts
    document = changed(occurredAt="2027-03-05T00:30:00+01:00", closingDate="2027-03-05")
    assert parse_hospital_closing(document, contract, NOW).closing_date == date(2027, 3, 5)


def test_a_key_twice_is_refused_where_it_is_decoded() -> None:
    raw = FOLLOW_UP.read_bytes().replace(b'"plan":', b'"plan": "first",\n  "plan":', 1)
    with pytest.raises(RefusedContent) as caught:
        decode_json(raw)
    assert caught.value.field == "plan" and "twice" in caught.value.problem


def test_a_record_without_the_patients_gp_cannot_be_made(contract: JsonContract) -> None:
    closing = parse_hospital_closing(sample(), contract, NOW)
    without_gp = Patient(closing.patient.cpr, ("Karl",), "Test", "846", None)
    with pytest.raises(ValueError, match="GP"):
        replace(closing, patient=without_gp)


# -- the GP's follow-up plan ---------------------------------------------------------------------------


def closing_of(path: Path, contract: JsonContract, **fields: Any) -> HospitalClosing:
    return parse_hospital_closing(changed(path, **fields), contract, NOW)


def outputs(path: Path, contract: JsonContract, ctx: ClosingContext, now: datetime = NOW, **fields: Any):
    return follow_up_outputs(closing_of(path, contract, **fields), ctx, now)


def _composition(document: dict[str, Any]) -> dict[str, Any]:
    return document["entry"][0]["resource"]


def _sections(document: dict[str, Any]) -> dict[str, str]:
    return {s["title"]: s["text"]["div"] for s in _composition(document)["section"]}


def _communication(message: dict[str, Any]) -> dict[str, Any]:
    return next(e["resource"] for e in message["entry"] if e["resource"]["resourceType"] == "Communication")


def _by_reference(bundle: dict[str, Any], ref: dict[str, str]) -> dict[str, Any]:
    return next(
        e["resource"]
        for e in bundle["entry"]
        if f"{e['resource']['resourceType']}/{e['resource']['id']}" == ref["reference"]
    )


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name.removesuffix(".event.json"))
def test_both_outputs_pass_the_gate(path: Path, contract: JsonContract, ctx: ClosingContext) -> None:
    (document, message), _fact = outputs(path, contract, ctx)
    validate_document(document.message)
    validate_message(message.message)
    assert document_problems(document.message) == [] and fhir_problems(document.message) == []
    assert messaging_problems(message.message) == [] and fhir_problems(message.message) == []


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name.removesuffix(".event.json"))
def test_golden_sample_produces_expected_outputs(
    path: Path, contract: JsonContract, ctx: ClosingContext, request: pytest.FixtureRequest
) -> None:
    outgoing, fact = outputs(path, contract, ctx)
    published = [o.as_json() for o in outgoing]
    actual = normalise(
        {
            "outgoing": published,
            "messageIds": [o.id for o in outgoing],
            "expectsAck": [o.expects_ack for o in outgoing],
            "fact": {"kind": fact.kind, "detail": dict(fact.detail)},
        },
        NOW.isoformat(timespec="seconds"),
        generated_ids(published),
    )
    expected_path = path.with_name(path.name.replace(".event.json", ".expected.json"))
    text = fhir_json.dumps(actual, option=orjson.OPT_INDENT_2) + b"\n"
    if request.config.getoption("--update-golden"):
        expected_path.write_bytes(text)
    assert json.loads(text) == json.loads(expected_path.read_bytes())


def test_both_go_to_the_gps_status_route(contract: JsonContract, ctx: ClosingContext) -> None:
    (document, message), _fact = outputs(FOLLOW_UP, contract, ctx)
    assert [o.route.routing_key for o in (document, message)] == ["gp.status.012345", "gp.status.012345"]
    assert {o.route.exchange for o in (document, message)} == {ctx.exchange}
    assert (document.id, document.expects_ack) == (document.message["id"], False)
    assert message.expects_ack and message.id == message.message["entry"][0]["resource"]["id"]


def test_the_fact_says_the_plan_was_sent_and_responsibility_moved(contract: JsonContract, ctx: ClosingContext) -> None:
    _, fact = outputs(OUTPATIENT, contract, ctx)
    assert fact.kind == "follow-up-plan-sent"
    assert dict(fact.detail) == {
        "eventId": "a4102806-d2ec-4c9b-8d06-5e1ba1a7d6c2",
        "ydernummer": "012345",
        "kind": "outpatient-discharge",
        "responsibilityTransferred": True,
    }
    assert "2512489996" not in json.dumps(dict(fact.detail))


def test_outputs_are_deterministic(contract: JsonContract, ctx: ClosingContext) -> None:
    first, _ = outputs(FOLLOW_UP, contract, ctx)
    again, _ = outputs(FOLLOW_UP, contract, ctx)
    later, _ = outputs(FOLLOW_UP, contract, ctx, now=NOW + timedelta(minutes=5))
    assert [o.message for o in first] == [o.message for o in again]
    assert first[0].message == later[0].message  # the document does not depend on the clock
    assert first[1].message["id"] == later[1].message["id"]  # a redelivery rebuilds the same message
    other, _ = outputs(OUTPATIENT, contract, ctx)
    assert first[0].message["id"] != other[0].message["id"] and first[1].id != other[1].id


def test_the_document_is_a_follow_up_plan_that_transfers_responsibility(
    contract: JsonContract, ctx: ClosingContext
) -> None:
    (document, _), _ = outputs(FOLLOW_UP, contract, ctx)
    bundle = document.message
    composition = _composition(bundle)
    assert (bundle["type"], bundle["timestamp"], composition["date"]) == (
        "document",
        "2027-03-04T11:40:00+01:00",
        "2027-03-04T11:40:00+01:00",
    )
    assert composition["title"] == "Opfølgningsplan efter hjerterehabilitering"
    assert composition["type"]["coding"] == [
        {
            "system": ctx.terminology.code_systems["documentType"],
            "code": "hospital-follow-up-plan",
            "display": "Opfølgningsplan efter hjerterehabilitering",
        }
    ]
    assert composition["extension"] == [
        {"url": ctx.terminology.extensions["responsibilityTransferred"], "valueBoolean": True}
    ]
    assert composition["event"][0]["period"] == {"end": "2027-03-04"}
    author = _by_reference(bundle, composition["author"][0])
    assert author["identifier"][0]["value"] == "715541000016001"
    patient = _by_reference(bundle, composition["subject"])
    gp = _by_reference(bundle, patient["generalPractitioner"][0])
    assert [i["value"] for i in gp["identifier"]] == ["123451000016008", "012345"]
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "Composition",
        "Patient",
        "Organization",
        "Organization",
    ]


@pytest.mark.parametrize(
    ("path", "sentence", "closing_line"),
    [
        (FOLLOW_UP, FOLLOW_UP_SENTENCE, "Afsluttende samtale på hospitalet 2027-03-04"),
        (OUTPATIENT, OUTPATIENT_SENTENCE, "Afsluttet fra hospitalets ambulante forløb 2027-05-11"),
    ],
)
def test_the_narratives_say_the_plan_and_the_handover(
    path: Path, sentence: str, closing_line: str, contract: JsonContract, ctx: ClosingContext
) -> None:
    closing = closing_of(path, contract)
    assert HANDOVER[closing.kind] == sentence
    (document, message), _ = follow_up_outputs(closing, ctx, NOW)
    sections = _sections(document.message)
    assert list(sections) == ["Afslutning", "Opfølgningsplan", "Overdragelse"]
    assert closing_line in sections["Afslutning"]
    paragraphs = etree.fromstring(sections["Opfølgningsplan"]).xpath("//*[local-name()='p']/text()")
    assert paragraphs[:-1] == closing.plan.splitlines()
    assert paragraphs[-1] == f"Udarbejdet af {closing.author[0]}, {closing.author[1]}, tlf. {closing.author[2]}."
    assert sentence in sections["Overdragelse"]
    text = _communication(message.message)["payload"][0]["contentString"]
    assert text.startswith("Opfølgningsplan efter hjerterehabilitering fra Aalborg UH, Kardiologisk Afdeling.")
    assert closing_line in text and closing.plan in text and text.endswith(sentence)


def test_the_care_communication_goes_from_the_department_to_the_gp_clinic(
    contract: JsonContract, ctx: ClosingContext
) -> None:
    (_, message), _ = outputs(FOLLOW_UP, contract, ctx)
    bundle = message.message
    header = bundle["entry"][0]["resource"]
    sender = _by_reference(bundle, header["sender"])
    receiver = _by_reference(bundle, header["destination"][0]["receiver"])
    assert [i["value"] for i in sender["identifier"]] == ["715541000016001", "5790001382445"]
    clinic = ctx.gp_clinics["012345"]
    assert [i["value"] for i in receiver["identifier"]] == [clinic.sor, clinic.ean]
    communication = _communication(bundle)
    assert communication["topic"] == {"text": "Opfølgningsplan efter hjerterehabilitering"}
    assert communication["category"][0]["coding"][0]["code"] == "carecoordination"
    payload = communication["payload"][0]
    phone = next(e for e in payload["extension"] if e["url"].endswith("medcom-core-contact-extension"))
    assert phone["valueContactPoint"]["value"] == "+45 97 66 00 00"


def test_an_outpatient_discharge_is_an_outpatient_care_communication(
    contract: JsonContract, ctx: ClosingContext
) -> None:
    (_, message), _ = outputs(OUTPATIENT, contract, ctx)
    assert _communication(message.message)["category"][0]["coding"][0]["code"] == "outpatient"


def test_an_unknown_gp_clinic_is_a_configuration_error(contract: JsonContract, ctx: ClosingContext) -> None:
    with pytest.raises(ConfigurationError, match="099999"):
        outputs(FOLLOW_UP, contract, ctx, **{"patient.gp.ydernummer": "099999"})
    with pytest.raises(ConfigurationError, match="012345"):
        outputs(FOLLOW_UP, contract, replace(ctx, gp_clinics={}))


def test_an_unknown_municipality_code_is_invalid_input(contract: JsonContract, ctx: ClosingContext) -> None:
    with pytest.raises(InvalidInput) as caught:
        outputs(FOLLOW_UP, contract, ctx, **{"patient.municipalityCode": "999"})
    assert caught.value.field == "patient.municipalityCode"


def test_a_patient_with_a_replacement_number_gets_the_plan_too(contract: JsonContract, ctx: ClosingContext) -> None:
    replacement = {"system": "urn:oid:1.2.208.176.1.6.1.1", "value": "0211221AB1"}
    (document, message), _ = outputs(
        FOLLOW_UP, contract, ctx, **{"patient.cpr": None, "patient.replacementCpr": replacement}
    )
    patient = _by_reference(document.message, _composition(document.message)["subject"])
    assert patient["identifier"] == [{"use": "temp", "system": replacement["system"], "value": replacement["value"]}]
    assert "birthDate" not in patient
    assert messaging_problems(message.message) == []


def test_markup_in_the_plan_is_text_in_the_narrative(contract: JsonContract, ctx: ClosingContext) -> None:
    plan = '<script>alert("x")</script> & <b>fed</b>'
    (document, message), _ = outputs(FOLLOW_UP, contract, ctx, plan=plan)
    div = etree.fromstring(_sections(document.message)["Opfølgningsplan"])
    assert not div.xpath("//*[local-name()='script' or local-name()='b']")
    assert div.xpath("//*[local-name()='p']/text()")[0] == plan
    assert _communication(message.message)["payload"][0]["contentString"].count(plan) == 1
