"""A MedCom HospitalNotification 3.0 (FHIR R4 message Bundle, JSON or XML) → a hospital-stay notice.

The hospital tells the patient's home municipality that the patient was admitted, went on or came back
from leave, was discharged home or died, or corrects or cancels what it said before. What it says is the
activity of the latest Provenance (the one whose target is this MessageHeader, MedCom governance for
HospitalNotification §2.3); a death is an admission activity with `Patient.deceased` set (MORS).

Before anything is read, the message passes the fast layers of `integration validate` (`fhir.receipt`), as
a CareCommunication does. Then: exactly one Provenance for this MessageHeader with an activity from the
HospitalNotification value set; a real CPR number (invariant medcom-hospitalNotification-4: no replacement
number); the MessageHeader's focus an Encounter with status, class, period.start, an episodeOfCare
identifier and a serviceProvider with a SOR code. Each refusal names the field.

Sources: medcom.fhir.dk.hospitalnotification 3.0.2 (MedComHospitalNotification*.fsh), the terminology's
CodeSystem medcom-messaging-activityCodes and ValueSet medcom-hospitalNotification-messageActivities
(1.5.0), the letter codes of MedCom's TouchStone test scripts (../shared/medcom/README.md §5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from integration.conformance.messaging_rules import as_dict, as_list, message_header
from integration.conformance.receipt import check_on_receipt
from integration.domain.cpr import Cpr, born_by
from integration.domain.identifiers import patient_number
from integration.domain.moment import read_moment
from integration.errors import InvalidInput
from integration.formats.care_communication import SOR, SOR_CODE

HOSPITAL_NOTIFICATION_EVENT = "hospital-notification-message"
ACTIVITY_SYSTEM = "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-messaging-activityCodes"
ENCOUNTER_CLASS_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
LEAVE_PERIOD = (
    # "notifiation": the official id is misspelled so (MedComHospitalNotificationLeavePeriodExtension.fsh)
    "http://medcomfhir.dk/ig/hospitalnotification/StructureDefinition/medcom-hospitalnotifiation-leave-period-extension"
)
ENCOUNTER_STATUSES = frozenset({"in-progress", "onleave", "finished", "entered-in-error"})  # $HNEncounterStatus
ENCOUNTER_CLASSES = frozenset({"IMP", "EMER"})  # $HNEncounterClass: inpatient, acute ambulant


class Movement(StrEnum):
    """What happened to the hospital stay."""

    ADMISSION = "admission"  # start of a stay, admitted or acute ambulant
    LEAVE_START = "leave-start"
    LEAVE_END = "leave-end"
    DISCHARGE = "discharge"  # the stay ended, the patient completed to home or the primary sector


class Change(StrEnum):
    """Whether the notification says something new, corrects an earlier one (RE_) or cancels it (AN_); the
    Provenance's entity role is then `revision` or `removal`."""

    NEW = "new"
    REVISION = "revision"
    CANCELLATION = "cancellation"


@dataclass(frozen=True, slots=True)
class Activity:
    """One code of the HospitalNotification activity value set."""

    code: str  # medcom-messaging-activityCodes
    letters: str  # MedCom's letter code: STIN, STAA, STOR, SLOR, SLHJ (RE_/AN_ prefixed for a change)
    movement: Movement
    change: Change
    encounter_class: str  # v3-ActCode: IMP or EMER


def _activities() -> Mapping[str, Activity]:
    """The value set medcom-hospitalNotification-messageActivities (terminology 1.5.0): six activities, each
    new, revised (`revise-`, RE_) or cancelled (`cancel-`, AN_)."""
    base = (
        ("admit-inpatient", "STIN", Movement.ADMISSION, "IMP"),
        ("admit-emergency", "STAA", Movement.ADMISSION, "EMER"),
        ("start-leave-inpatient", "STOR", Movement.LEAVE_START, "IMP"),
        ("end-leave-inpatient", "SLOR", Movement.LEAVE_END, "IMP"),
        ("discharge-inpatient-home", "SLHJ", Movement.DISCHARGE, "IMP"),
        ("discharge-emergency-home", "SLHJ", Movement.DISCHARGE, "EMER"),
    )
    changes = (("", "", Change.NEW), ("revise-", "RE_", Change.REVISION), ("cancel-", "AN_", Change.CANCELLATION))
    table = {
        prefix + code: Activity(prefix + code, letter_prefix + letters, movement, change, encounter_class)
        for code, letters, movement, encounter_class in base
        for prefix, letter_prefix, change in changes
    }
    return MappingProxyType(table)


ACTIVITIES: Mapping[str, Activity] = _activities()
DECEASED = "MORS"  # letter code of a death: an admission activity with Patient.deceased set


@dataclass(frozen=True, slots=True)
class HospitalNotification:
    """What a HospitalNotification says. `episode` is the first episodeOfCare identifier's value (the
    hospital's id of the whole stay; `episodes` all of them, as `system|value`), what joins it to a discharge
    event's `episode`; `unit` the serviceProvider's SOR code: the admitting, or discharging, unit."""

    header_id: str  # MessageHeader.id
    sent_at: datetime  # Bundle.timestamp
    activity: Activity
    deceased: bool  # Patient.deceasedBoolean true or a Patient.deceasedDateTime (MORS)
    patient: Cpr
    sender: str  # SOR of MessageHeader.sender
    unit: str  # SOR of Encounter.serviceProvider
    encounter_status: str  # in-progress | onleave | finished | entered-in-error
    encounter_class: str  # IMP | EMER
    started_at: datetime  # Encounter.period.start
    ended_at: datetime | None  # Encounter.period.end: set on discharge or death
    episode: str
    episodes: tuple[str, ...]
    leave_start: datetime | None = None  # the leave-period extension
    leave_end: datetime | None = None

    @property
    def letters(self) -> str:
        """MedCom's letter code of the notification: MORS for a death, else the activity's (STIN, AN_STIN, …)."""
        return DECEASED if self.deceased and self.activity.change is Change.NEW else self.activity.letters


def is_hospital_notification(doc: Any) -> bool:
    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        return False
    header = message_header(doc)
    return (
        header.get("resourceType") == "MessageHeader"
        and as_dict(header.get("eventCoding")).get("code") == HOSPITAL_NOTIFICATION_EVENT
    )


def _by_reference(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    resources = (as_dict(as_dict(e).get("resource")) for e in as_list(bundle.get("entry")))
    return {f"{r.get('resourceType')}/{r.get('id')}": r for r in resources}


def _resolve(resources: dict[str, dict[str, Any]], reference: Any, field: str, rtype: str) -> dict[str, Any]:
    resource = resources.get(reference) if isinstance(reference, str) else None
    if resource is None or resource.get("resourceType") != rtype:
        raise InvalidInput(field, f"must reference a {rtype} inside the Bundle")
    return resource


def _sor(organization: dict[str, Any], field: str) -> str:
    values = [
        as_dict(i).get("value") for i in as_list(organization.get("identifier")) if as_dict(i).get("system") == SOR
    ]
    sor = next((v for v in values if isinstance(v, str)), None)
    if sor is None:
        raise InvalidInput(field, "the Organization has no SOR identifier")
    if not SOR_CODE.fullmatch(sor):
        raise InvalidInput(field, "the Organization's SOR identifier is not 11 to 18 digits")
    return sor


def _activity(bundle: dict[str, Any], header_id: str) -> Activity:
    """The activity of the Provenance whose target is this MessageHeader (there must be exactly one)."""
    mine = f"MessageHeader/{header_id}"
    provenances = [
        r
        for r in (as_dict(as_dict(e).get("resource")) for e in as_list(bundle.get("entry")))
        if r.get("resourceType") == "Provenance"
        and any(as_dict(t).get("reference") == mine for t in as_list(r.get("target")))
    ]
    if len(provenances) != 1:
        raise InvalidInput("Provenance.target", "exactly one Provenance must have this MessageHeader as its target")
    codings = [as_dict(c) for c in as_list(as_dict(provenances[0].get("activity")).get("coding"))]
    codes = [c.get("code") for c in codings if c.get("system") == ACTIVITY_SYSTEM]
    code = codes[0] if len(codes) == 1 else None
    if not isinstance(code, str) or code not in ACTIVITIES:
        raise InvalidInput(
            "Provenance.activity",
            "not an activity of the HospitalNotification value set (medcom-messaging-activityCodes)",
        )
    return ACTIVITIES[code]


def _moment(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidInput(field, "missing")
    return read_moment(value, field)


def _optional_moment(value: Any, field: str) -> datetime | None:
    return None if value is None else _moment(value, field)


def _cpr(patient: dict[str, Any], *moments: datetime) -> Cpr:
    identifiers = [as_dict(i) for i in as_list(patient.get("identifier"))]
    try:
        number = patient_number((i.get("system"), i.get("value")) for i in identifiers)
        if isinstance(number, Cpr):
            born_by(number, *moments)
    except ValueError as exc:
        raise InvalidInput("Patient.identifier", str(exc)) from None
    if not isinstance(number, Cpr):  # invariant medcom-hospitalNotification-4
        raise InvalidInput("Patient.identifier", "a HospitalNotification names the patient by a CPR number")
    return number


def _episodes(encounter: dict[str, Any]) -> tuple[str, ...]:
    identifiers = [as_dict(as_dict(e).get("identifier")) for e in as_list(encounter.get("episodeOfCare"))]
    episodes = tuple(
        f"{i.get('system')}|{i.get('value')}"
        for i in identifiers
        if isinstance(i.get("system"), str) and isinstance(i.get("value"), str) and i.get("value")
    )
    if not episodes:
        raise InvalidInput("Encounter.episodeOfCare.identifier", "missing: it identifies the hospital stay")
    return episodes


def _coded(value: Any, allowed: frozenset[str], field: str) -> str:
    if value not in allowed:
        raise InvalidInput(field, f"not one of {', '.join(sorted(allowed))}")
    return str(value)


def _leave(encounter: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    extensions = (as_dict(x) for x in as_list(encounter.get("extension")))
    leave = next((as_dict(x.get("valuePeriod")) for x in extensions if x.get("url") == LEAVE_PERIOD), {})
    field = "Encounter.extension[leavePeriod]"
    start = _optional_moment(leave.get("start"), f"{field}.valuePeriod.start")
    if encounter.get("status") == "onleave" and start is None:  # invariant medcom-hospitalNotification-6
        raise InvalidInput(f"{field}.valuePeriod.start", "required while the Encounter is onleave")
    return start, _optional_moment(leave.get("end"), f"{field}.valuePeriod.end")


def parse_hospital_notification(bundle: dict[str, Any], *, received_at: datetime | None = None) -> HospitalNotification:
    """The notice a HospitalNotification gives. Raises NotConformant (every finding of the fast layers) or
    InvalidInput naming the field (see the module); `received_at` is when it came, if known."""
    if not is_hospital_notification(bundle):
        raise InvalidInput("MessageHeader.eventCoding", f"not a {HOSPITAL_NOTIFICATION_EVENT}")
    check_on_receipt(bundle)
    sent_at = _moment(bundle.get("timestamp"), "Bundle.timestamp")
    header = message_header(bundle)
    header_id = str(header.get("id"))
    resources = _by_reference(bundle)
    activity = _activity(bundle, header_id)
    sender = _resolve(resources, as_dict(header.get("sender")).get("reference"), "MessageHeader.sender", "Organization")
    focus = as_list(header.get("focus"))
    encounter = _resolve(
        resources, as_dict(focus[0] if len(focus) == 1 else None).get("reference"), "MessageHeader.focus", "Encounter"
    )
    patient = _resolve(resources, as_dict(encounter.get("subject")).get("reference"), "Encounter.subject", "Patient")
    provider = _resolve(
        resources,
        as_dict(encounter.get("serviceProvider")).get("reference"),
        "Encounter.serviceProvider",
        "Organization",
    )
    period = as_dict(encounter.get("period"))
    encounter_class = as_dict(encounter.get("class"))
    if encounter_class.get("system") != ENCOUNTER_CLASS_SYSTEM:
        raise InvalidInput("Encounter.class", "must be coded in v3-ActCode")
    episodes = _episodes(encounter)
    leave_start, leave_end = _leave(encounter)
    deceased = patient.get("deceasedBoolean") is True or isinstance(patient.get("deceasedDateTime"), str)
    return HospitalNotification(
        header_id=header_id,
        sent_at=sent_at,
        activity=activity,
        deceased=deceased,
        patient=_cpr(patient, sent_at, *([received_at] if received_at else [])),
        sender=_sor(sender, "MessageHeader.sender"),
        unit=_sor(provider, "Encounter.serviceProvider"),
        encounter_status=_coded(encounter.get("status"), ENCOUNTER_STATUSES, "Encounter.status"),
        encounter_class=_coded(encounter_class.get("code"), ENCOUNTER_CLASSES, "Encounter.class"),
        started_at=_moment(period.get("start"), "Encounter.period.start"),
        ended_at=_optional_moment(period.get("end"), "Encounter.period.end"),
        episode=episodes[0].split("|", 1)[1],
        episodes=episodes,
        leave_start=leave_start,
        leave_end=leave_end,
    )
