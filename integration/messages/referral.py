"""The referral's clinical content: ServiceRequest, RiskAssessment and the exercise-test Observation.

Times and measured values are carried as the discharge event wrote them: `authoredOn` and the risk
assessment's `occurrenceDateTime` are the sender's text (fraction and `Z` kept; `moment.fhir_date_time`),
and each exercise-test value is a Decimal written digit for digit by `fhir_json.dumps` (never a float).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from integration.domain.pathway import Pathway
from integration.domain.records import DischargeEvent, ExerciseTest
from integration.domain.referral_rules import ReferralRules
from integration.domain.risk import RiskAssessment
from integration.fhir.fhir_json import decimal_text
from integration.fhir.narrative import narrative
from integration.fhir.terminology import Coding, Terminology
from integration.messages.envelope import (
    Message,
    MessageIds,
    Party,
    Resource,
    Rows,
    fhir_instant,
    message_bundle,
    reference,
)


@dataclass(frozen=True, slots=True)
class ReferralIds:
    service_request: str
    risk_assessment: str
    exercise_test: str


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def risk_assessment(
    rid: str,
    risk: RiskAssessment,
    event: DischargeEvent,
    patient: Resource,
    performer: Resource,
    basis: Resource | None,
    rules: ReferralRules,
    terms: Terminology,
) -> Resource:
    criteria = [rules.label("dcsRiskCriterion", c) for c in risk.criteria]
    resource: Resource = {
        "resourceType": "RiskAssessment",
        "id": rid,
        "text": narrative(
            "RiskAssessment",
            rid,
            [
                ("Risikogruppe", rules.label("riskGroup", risk.group.value)),
                (
                    "Klinikerens vurdering",
                    risk.clinician_group and rules.label("riskGroup", risk.clinician_group.value),
                ),
                ("DCS-kriterier", "; ".join(criteria) or "ingen"),
                ("Patient", f"Patient/{patient['id']}"),
                ("Udført af", f"Organization/{performer['id']}"),
            ],
        ),
        "status": "final",
        "method": {"text": "Risikostratificering efter Dansk Cardiologisk Selskabs kriterier"},
        "subject": reference(patient),
        "occurrenceDateTime": event.discharged_at_text or fhir_instant(event.discharged_at),
        # R4 allows only a Practitioner, PractitionerRole or Device as performer; the department is named
        # in the narrative and is the message's sender.
        "prediction": [
            {
                "outcome": {"text": "Risiko ved fysisk træning"},
                "qualitativeRisk": {
                    "coding": [_coding(terms.risk_probability, risk.group.value, risk.group.value.capitalize())]
                },
            }
        ],
    }
    if risk.criteria:
        resource["reasonCode"] = [
            {"coding": [_coding(terms.code_systems["dcsRiskCriterion"], c, rules.label("dcsRiskCriterion", c))]}
            for c in risk.criteria
        ]
        resource["note"] = [{"text": "DCS-kriterier: " + "; ".join(criteria)}]
    if basis is not None:
        resource["basis"] = [reference(basis)]
    return resource


def _component(code: str, display: str, value: Decimal, unit: str, ucum: str, terms: Terminology) -> dict[str, Any]:
    return {
        "code": {"coding": [_coding(terms.code_systems["exerciseTest"], code, display)]},
        "valueQuantity": {"value": value, "unit": unit, "system": terms.ucum, "code": ucum},
    }


def _exact(value: int | Decimal) -> Decimal:
    """A measured value as the sender wrote it, for `fhir_json.dumps` (digit for digit, positional: `1e2` is
    written 100, `1e-7` 0.0000001, `-0.0` 0.0) and for the narrative (`decimal_text`, the same text)."""
    return Decimal(value)


def exercise_test_observation(
    rid: str, test: ExerciseTest, patient: Resource, performer: Resource, terms: Terminology
) -> Resource:
    sent = [
        ("max-workload", "Maksimal belastning", test.max_workload_watt, "W", "W"),
        ("mets", "METs", test.mets, "MET", "{MET}"),
        ("peak-heart-rate", "Maksimal puls", test.peak_heart_rate, "slag/min", "/min"),
    ]
    measured = [(c, d, _exact(v), u, ucum) for c, d, v, u, ucum in sent if v is not None]
    components = [_component(c, d, v, u, ucum, terms) for c, d, v, u, ucum in measured]
    resource: Resource = {
        "resourceType": "Observation",
        "id": rid,
        "text": narrative(
            "Observation",
            rid,
            [
                ("Undersøgelse", "Symptomlimiteret arbejdstest"),
                ("Dato", test.date.isoformat()),
                *((d, f"{decimal_text(v)} {u}") for _, d, v, u, _ in measured),
                ("Konklusion", test.conclusion),
                ("Patient", f"Patient/{patient['id']}"),
            ],
        ),
        "status": "final",
        "category": [{"coding": [_coding(terms.observation_category, "procedure", "Procedure")]}],
        "code": {
            "coding": [
                _coding(
                    terms.code_systems["exerciseTest"], "symptom-limited-exercise-test", "Symptomlimiteret arbejdstest"
                )
            ],
            "text": "Symptomlimiteret arbejdstest",
        },
        "subject": reference(patient),
        "effectiveDateTime": test.date.isoformat(),
        "performer": [reference(performer)],
        "valueString": test.conclusion,
    }
    if components:
        resource["component"] = components
    return resource


# "Henvist ved": the occasion of the referral, by DischargeEvent.event_type (KeyError: another type).
REFERRED_AT = {
    "discharge": "udskrivelse",
    "visitation": "visitationssamtale",
    "step-down": "overgang fra specialiseret genoptræning på hospital",
    "gp-referral": "egen læge",
    "discharge-update": "udskrivelse (rettet af hospitalet)",
    "discharge-cancellation": "udskrivelse (annulleret af hospitalet)",
}
# Who refers, by DischargeEvent.event_type: the hospital's department, or the GP (whose clinic is then `hospital`).
REQUESTER_LABEL = {"gp-referral": "Henvisende læge"}
DEPARTMENT_REQUESTER = "Henvisende afdeling"
# ServiceRequest.status (FHIR R4 request-status) in the narrative; `active`, a referral in force, gets no row.
STATUS_TEXT = {
    "draft": "kladde",
    "on-hold": "sat i bero",
    "revoked": "annulleret",
    "completed": "afsluttet",
    "entered-in-error": "fejlregistreret",
    "unknown": "ukendt",
}


@dataclass(frozen=True, slots=True)
class _Thread:
    """Where a ServiceRequest stands among the referrals of a course (`service_request`'s keywords): its
    status and the identifier values of what it replaces and follows."""

    status: str = "active"
    replaces: str | None = None
    based_on: str | None = None

    def rows(self) -> Rows:
        """Status when not active, and what it replaces and follows; none for a new referral's defaults."""
        status = None if self.status == "active" else f"{STATUS_TEXT.get(self.status, self.status)} ({self.status})"
        return (("Status", status), ("Erstatter henvisning", self.replaces), ("Følger henvisning", self.based_on))


def _service_request_rows(
    event: DischargeEvent,
    pathway: Pathway,
    notes: tuple[str, ...],
    parties: tuple[Resource, Resource, Resource],
    supporting: list[Resource],
    rules: ReferralRules,
    thread: _Thread,
) -> Rows:
    """The ServiceRequest's narrative; `parties` = (patient, requester, performer)."""
    patient, requester, performer = parties
    elements = event.referral.rehab_elements
    return (
        ("Henvisning", rules.label("referralCategory", pathway.category)),
        *thread.rows(),
        ("Rehabiliteringselementer", "; ".join(rules.label("rehabElement", e) for e in elements) or "ingen"),
        ("Diagnoser", ", ".join(d.code for d in event.diagnoses)),
        ("Afsluttende samtale", rules.label("closingConversation", pathway.closing_conversation.value)),
        ("Ambulant kontrol på hospitalet", rules.label("yesNo", str(pathway.ambulatory_control).lower())),
        ("Henvist ved", REFERRED_AT[event.event_type]),
        ("Patient", f"Patient/{patient['id']}"),
        (
            REQUESTER_LABEL.get(event.event_type, DEPARTMENT_REQUESTER),
            f"{requester['name']} (Organization/{requester['id']})",
        ),
        ("Modtager", f"{performer['name']} (Organization/{performer['id']})"),
        ("Bilag", ", ".join(f"{r['resourceType']}/{r['id']}" for r in supporting)),
        *(("Note", line) for line in notes),
    )


def _reason_codes(event: DischargeEvent, terms: Terminology) -> list[dict[str, Any]]:
    """The diagnoses, the primary one first."""
    return [
        {"coding": [_coding(terms.diagnosis_systems[d.system], d.code)]}
        for d in sorted(event.diagnoses, key=lambda d: not d.primary)
    ]


def _logical(element: str, value: str | None, system: str) -> dict[str, Any]:
    """`element` as one logical reference (R4 Reference.identifier) to the identifier `value`; nothing for None."""
    return {} if value is None else {element: [{"identifier": {"system": system, "value": value}}]}


def service_request(
    rid: str,
    event: DischargeEvent,
    pathway: Pathway,
    notes: tuple[str, ...],
    patient: Resource,
    requester: Resource,
    performer: Resource,
    supporting: list[Resource],
    rules: ReferralRules,
    terms: Terminology,
    *,
    status: str = "active",
    identifier: str | None = None,
    replaces: str | None = None,
    based_on: str | None = None,
) -> Resource:
    """The referral: category, closing conversation, ambulatory control, diagnoses, rehabilitation elements,
    the supporting RiskAssessment and exercise test, and the notes `referral_notes` gives.

    `status` (FHIR R4 request-status): `active`, or `revoked` for a cancellation. `identifier`: the
    identifier's value (RFC 3986 system), by default `urn:uuid:<event_id>`. `replaces` and `based_on`: the
    identifier values, as logical references (R4 Reference.identifier), of the ServiceRequest this one replaces
    and of the specialised-rehabilitation referral a step-down follows (ServiceRequest.replaces, .basedOn).
    The defaults give exactly a new referral. KeyError: `event.event_type` is not in `REFERRED_AT`."""
    category = pathway.category
    elements = event.referral.rehab_elements
    thread = _Thread(status, replaces, based_on)
    rows = _service_request_rows(event, pathway, notes, (patient, requester, performer), supporting, rules, thread)
    label = rules.label("referralCategory", category)
    uri = terms.identifiers["rfc3986"]
    resource: Resource = {
        "resourceType": "ServiceRequest",
        "id": rid,
        "text": narrative("ServiceRequest", rid, rows),
        "extension": [
            {"url": terms.extensions["closingConversation"], "valueCode": pathway.closing_conversation.value},
            {"url": terms.extensions["ambulatoryControl"], "valueBoolean": pathway.ambulatory_control},
        ],
        "identifier": [{"system": uri, "value": f"urn:uuid:{event.event_id}" if identifier is None else identifier}],
        **_logical("basedOn", based_on, uri),
        **_logical("replaces", replaces, uri),
        "status": status,
        "intent": "order",
        "category": [{"coding": [_coding(terms.code_systems["referralCategory"], category, label)]}],
        "code": {"text": "Hjerterehabilitering"},
        "subject": reference(patient),
        "authoredOn": event.occurred_at_text or fhir_instant(event.occurred_at),
        "requester": reference(requester),
        "performer": [reference(performer)],
        **({"reasonCode": _reason_codes(event, terms)} if event.diagnoses else {}),  # FHIR forbids empty arrays
        "supportingInfo": [reference(r) for r in supporting],
        "note": [{"text": line} for line in notes],
    }
    if elements:  # FHIR forbids empty arrays
        resource["orderDetail"] = [
            {"coding": [_coding(terms.code_systems["rehabElement"], e, rules.label("rehabElement", e))]}
            for e in elements
        ]
    return resource


def _party(organization: Resource, terms: Terminology) -> Party:
    """An organisation at the endpoint its SOR code gives (`Terminology.endpoint`)."""
    return Party(organization, terms.endpoint(organization["identifier"][0]["value"]))


def _header_rows(request: Resource, sender: Party, receiver: Party, event: Coding) -> Rows:
    return (
        ("Hændelse", f"{event.code} ({event.display})" if event.display else event.code),
        ("Modtager", f"{receiver.organization['name']} (Organization/{receiver.organization['id']})"),
        ("Modtagers endpoint", receiver.endpoint),
        ("Afsender", f"{sender.organization['name']} (Organization/{sender.organization['id']})"),
        ("Afsenders endpoint", sender.endpoint),
        ("Fokus", f"{request['resourceType']}/{request['id']}"),
    )


def referral_message(
    ids: Callable[[str], str],
    request: Resource,
    content: Sequence[Resource],
    sender: Resource,
    receiver: Resource,
    now: datetime,
    terms: Terminology,
    *,
    event: str = "new",
) -> Resource:
    """The referral message: the ServiceRequest in focus, then `content`, the Organizations and our Provenance
    (`new-message`); `ids(role)` mints the Bundle, MessageHeader and Provenance ids.

    `event` chooses the MessageHeader.eventCoding from `terms.referral_events` (terminology.yaml
    `referralEvents`): `new` (new-referral), `update` (update-referral: `request` names what it replaces) or
    `cancel` (cancel-referral: `request` is revoked); KeyError for another. MedCom's messaging envelope in all
    but the event (no MedCom referral event exists), so it claims no profile: a header with our event would
    break the required binding of MedComMessagingMessageHeader, and MedCom's Provenance profile needs such a
    header as its target (decision 1)."""
    coding = terms.referral_events[event]
    header_id = ids("MessageHeader")
    by, to = _party(sender, terms), _party(receiver, terms)
    sent = fhir_instant(now)
    message = Message(
        ids=MessageIds(bundle=ids("Bundle"), header=header_id, provenance=ids("Provenance")),
        event=coding.as_fhir(),
        sender=by,
        receiver=to,
        sent_at=now,
        activity="new-message",
        header_rows=_header_rows(request, by, to, coding),
        provenance_rows=(
            ("Mål", f"MessageHeader/{header_id}"),
            ("Tidspunkt", sent),
            ("Aktivitet", "new-message"),
            ("Aktør", f"Organization/{sender['id']}"),
        ),
        focus=(request,),
        content=(*content, sender, receiver),
    )
    return message_bundle(message, terms)
