"""HL7 v2 ADT (read by `formats.er7`) → the discharge event's JSON document, or a discharge cancellation.

ADT^A03 (discharge) becomes the document our JSON contract (schemas/discharge-event.schema.json) describes,
eventType `discharge`, which `formats.discharge_event.parse_discharge_event` then reads: one code path for
both, so ER7 and JSON yield the same record. ADT^A08 after a discharge becomes the same document with
eventType `discharge-update`. ADT^A13 (cancel discharge) and ADT^A11 (cancel admit) become a
`DischargeCancellation`. Which field carries what is the profile's (mappings/hl7.yaml, `adt_profile`).

Every value mapped remembers where it was read (`MappedDischarge.origins`), so that a contract error on
the document (`patient.cpr: …`) is reported at its HL7 place (`PID-3.1`) with its Table 0357 code.

Event ids (UUID 5 in EVENT_NAMESPACE): of the trigger, the sending facility (MSH-4) and the message control id
(MSH-10). A resent message keeps its control id (HL7 v2 original mode: the sender sends the same message again
when no ACK came), so it is the same event; a discharge sent again after its cancellation (A13, then a new A03
for the same visit) is a new message with a new control id, so its referral gets ids of its own — ids made of
the visit number would give it the cancelled referral's MessageHeader and ServiceRequest ids again.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from integration.domain.cpr import Cpr, parse_cpr
from integration.domain.moment import parse_moment
from integration.domain.records import DischargeCancellation, DischargeEvent, GeneralPractitioner, Patient
from integration.errors import InvalidInput
from integration.formats.adt_profile import Hl7Profile
from integration.formats.adt_sources import Reader
from integration.formats.adt_structure import check_structure
from integration.formats.discharge_event import parse_discharge_event
from integration.formats.er7 import Er7Message, ErrorCode, Hl7Problem
from integration.formats.event_parts import not_ahead_of_receipt
from integration.formats.hl7_values import At
from integration.formats.json_contract import JsonContract

EVENT_NAMESPACE = uuid.UUID("6f3c2a4e-8d1b-5c7e-9a40-2b7d1e5f0c93")  # this service's, for HL7 v2 event ids
VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2", "2.9"})
PROCESSING_IDS = frozenset({"P"})  # HL7 Table 0103: production only; a test system's T or D is refused
# HL7 Table 0207 (MSH-11.2): empty (current processing) or T (current processing, sent at intervals) are live
# messages; A (archive), R (restore from archive) and I (initial load) are history, not an event to act on.
PROCESSING_MODES = frozenset({"", "T"})
DISCHARGES = {"A03": "discharge", "A08": "discharge-update"}
CANCELLATIONS = frozenset({"A13", "A11"})
_INDEXED = re.compile(r"(\w+)\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class MappedDischarge:
    """The discharge event document made of an ADT^A03/A08, with where each contract path was read."""

    document: dict[str, Any]
    origins: Mapping[str, At]


def read_adt(
    message: Er7Message, profile: Hl7Profile, received_at: datetime
) -> MappedDischarge | DischargeCancellation:
    """An ADT message → the discharge event document (A03, A08) or a cancellation (A13, A11).

    Raises Hl7Problem: 200 not ADT or an MSH-9.3 that is not the trigger's structure, 201 another trigger,
    202 not production or not current processing (MSH-11.2), 203 a version before 2.3, 100 a required
    segment missing or a segment twice that may occur once (`adt_structure`), 101 a required field missing,
    102/103 a value of the wrong type or not in its table (naming the field)."""
    _check_header(message)
    check_structure(message, _single_value_segments(profile))
    reader = Reader(message, profile)
    if message.trigger in CANCELLATIONS:
        return _cancellation(message, reader, received_at)
    return _discharge(message, reader, DISCHARGES[message.trigger])


def _single_value_segments(profile: Hl7Profile) -> frozenset[str]:
    """The segments the profile reads one value from (not the repeating DG1, PR1 and OBX): each may occur
    once, or which of two would be read?"""
    places = (
        *profile.occurred_at,
        profile.patient_identifier,
        profile.name,
        profile.birth_date,
        profile.municipality_code,
        profile.gp_ydernummer,
        profile.gp_sor,
        profile.unit_sor,
        profile.visit_number,
        profile.admitted_at,
        profile.discharged_at,
        *(s.place for s in (*profile.exercise_test.values(), *profile.rehabilitation.values()) if s.place),
    )
    repeating = {profile.diagnosis_code.segment, profile.procedure_code.segment, "OBX"}
    return frozenset(place.segment for place in places) - repeating


def discharge_record(mapped: MappedDischarge, contract: JsonContract, received_at: datetime) -> DischargeEvent:
    """The record of a mapped document, read by the JSON contract's reader; its InvalidInput is raised again
    as an Hl7Problem at the HL7 place the value came from."""
    try:
        return parse_discharge_event(mapped.document, contract, received_at=received_at)
    except Hl7Problem:
        raise
    except InvalidInput as error:
        raise relabelled(error, mapped.origins) from None


def relabelled(error: InvalidInput, origins: Mapping[str, At]) -> Hl7Problem:
    """The contract's error at the HL7 place of its path (or of the nearest enclosing path)."""
    path, repetition = error.field, None
    while path and path not in origins:
        parent, _, last = path.rpartition(".")
        indexed = _INDEXED.fullmatch(last)
        if indexed:  # `rehabElements[2]`: the third repetition of the field the list came from
            repetition = int(indexed[2]) + 1
            path = f"{parent}.{indexed[1]}" if parent else indexed[1]
        else:
            path, repetition = parent, None
    problem = f"{error.problem} (discharge event {error.field})" if error.field else error.problem
    if not path:
        return Hl7Problem(problem, code=ErrorCode.DATA_TYPE)
    at = origins[path]
    return (replace(at, repetition=repetition) if repetition and at.repetition is None else at).problem(problem)


def _check_header(message: Er7Message) -> None:
    msh = message.msh
    if message.message_type != "ADT":
        raise msh.problem("only ADT messages are read here", 9, 1, code=ErrorCode.UNSUPPORTED_MESSAGE_TYPE)
    if message.trigger not in DISCHARGES and message.trigger not in CANCELLATIONS:
        raise msh.problem("only A03, A08, A11 and A13 are read", 9, 2, code=ErrorCode.UNSUPPORTED_EVENT_CODE)
    if message.processing_id not in PROCESSING_IDS:
        raise msh.problem("only production messages (P) are read", 11, 1, code=ErrorCode.UNSUPPORTED_PROCESSING_ID)
    if (msh.field(11).text(2) or "") not in PROCESSING_MODES:
        raise msh.problem(
            "only current processing (empty or T, HL7 Table 0207) is read: not an archive, restore or initial load",
            11,
            2,
            code=ErrorCode.UNSUPPORTED_PROCESSING_ID,
        )
    if message.version not in VERSIONS:
        raise msh.problem("HL7 v2.3 to v2.9 are read", 12, 1, code=ErrorCode.UNSUPPORTED_VERSION_ID)
    if not message.sending_facility:
        raise msh.problem("the sending facility is missing", 4, 1, code=ErrorCode.REQUIRED_FIELD_MISSING)


def event_id(*parts: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, "|".join(parts)))


def _facility(message: Er7Message) -> str:
    hd = message.msh.field(4)
    return "^".join(filter(None, (hd.text(1), hd.text(2), hd.text(3))))


def _discharge(message: Er7Message, reader: Reader, event_type: str) -> MappedDischarge:
    profile = reader.profile
    visit = reader.required(profile.visit_number, "episodeOfCare")
    ident = event_id(message.trigger, _facility(message), message.control_id)
    if event_type == "discharge-update":
        reader.required(profile.discharged_at, "admission.dischargedAt", "an A08 without a discharge time")
        reader.require_rehabilitation("an A08 without the referral's data is no update of a discharge")
    document: dict[str, Any] = {
        "schemaVersion": "1",
        "eventId": ident,
        "eventType": event_type,
        "episodeOfCare": visit,
        "occurredAt": reader.occurred_at(),
        "hospital": reader.hospital(),
        "patient": reader.patient(),
        "admission": {
            "admittedAt": reader.time(profile.admitted_at, "admission.admittedAt"),
            "dischargedAt": reader.time(profile.discharged_at, "admission.dischargedAt"),
        },
        "diagnoses": reader.diagnoses(),
        **reader.procedures_and_surgery(),
        **reader.rehabilitation(),
        "exerciseTest": reader.exercise_test(),
    }
    if message.trigger == "A03":
        _not_before_discharge(document, reader)
    return MappedDischarge(document, dict(reader.origins))


def _not_before_discharge(document: dict[str, Any], reader: Reader) -> None:
    """An A03 reports a discharge that has happened: its event time (EVN-2, else MSH-7) may not be before the
    discharge time (PV1-45). Both are RFC 3339 text here, already read by `hl7_time`."""
    try:
        occurred = parse_moment(document["occurredAt"])
        discharged = parse_moment(document["admission"]["dischargedAt"])
    except ValueError:
        return  # a time out of the plausible range: the contract refuses it at its own place
    if occurred < discharged:
        where = reader.profile.discharged_at
        raise reader.origins["occurredAt"].problem(
            f"the event time is before the discharge time ({where}): an A03 reports a discharge that happened"
        )


def _cancellation(message: Er7Message, reader: Reader, received_at: datetime) -> DischargeCancellation:
    profile = reader.profile
    episode = reader.required(profile.visit_number, "episodeOfCare")
    patient = reader.patient()
    at = reader.origins["patient.cpr"]
    try:
        number = parse_cpr(patient["cpr"])
    except ValueError as error:
        raise at.problem(str(error)) from None
    try:
        occurred = not_ahead_of_receipt(parse_moment(reader.occurred_at()), received_at, "occurredAt")
    except (ValueError, InvalidInput) as error:
        raise reader.origins["occurredAt"].problem(getattr(error, "problem", str(error))) from None
    return DischargeCancellation(
        event_id=event_id(message.trigger, _facility(message), message.control_id),
        episode=episode,
        patient=number,
        hospital_sor=reader.hospital()["sor"],
        occurred_at=occurred,
        trigger=message.trigger,
        person=_person(patient, number),
    )


def _person(patient: dict[str, Any], number: Cpr) -> Patient | None:
    """The patient as a cancellation names them (for the cancelling message), when PID says enough."""
    if "familyName" not in patient or "municipalityCode" not in patient:
        return None
    gp = patient.get("gp", {})
    return Patient(
        cpr=number,
        given_names=tuple(patient["givenNames"]),
        family_name=patient["familyName"],
        municipality_code=patient["municipalityCode"],
        gp=GeneralPractitioner(gp["sor"], gp["ydernummer"]) if {"sor", "ydernummer"} <= gp.keys() else None,
    )
