"""The hospital's follow-up plan for the GP (opfølgningsplan): a FHIR R4 document Bundle, and its text.

Built as the municipality's status document is (`messages.status_document`, decision 9): a `document`
Bundle whose Composition (by the closing department, about the patient, for the GP) has three sections:
the closing (which kind, which day), the plan as the hospital wrote it (one paragraph per line) and the
handover; its `responsibility-transferred` extension is true, since both of the agreement's hospital
closings hand the medical responsibility to the GP. The type is `hospital-follow-up-plan` of our
documentType CodeSystem (mappings/terminology.yaml). No MedCom message envelope: the GP receives the
document beside a CareCommunication that carries `follow_up_text`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from lxml.builder import ElementMaker

from integration.domain.hospital_closing import Handover, HospitalClosing, HospitalClosingKind
from integration.fhir.terminology import Terminology
from integration.messages.envelope import Resource, entries, reference
from integration.messages.status_document import XHTML, xhtml

E = ElementMaker(namespace=XHTML, nsmap={None: XHTML})
TITLE = "Opfølgningsplan efter hjerterehabilitering"
# Our documentType CodeSystem's code for this document (the municipality's status is
# `rehabilitation-closing-status`, messages.status_document).
DOCUMENT_TYPE = "hospital-follow-up-plan"
# What each kind of closing was, as the document and the CareCommunication say it (followed by the date).
CLOSING_EVENT: Mapping[HospitalClosingKind, str] = MappingProxyType(
    {
        HospitalClosingKind.FOLLOW_UP_PLAN: "Afsluttende samtale på hospitalet",
        HospitalClosingKind.OUTPATIENT_DISCHARGE: "Afsluttet fra hospitalets ambulante forløb",
    }
)
# The handover, by kind: the agreement's "sender efterfølgende en opfølgningsplan til patientens egen læge"
# and "Når patienten på et senere tidspunkt afsluttes fra hospitalet, overgives behandleransvaret herfra til
# egen læge".
HANDOVER: Mapping[HospitalClosingKind, str] = MappingProxyType(
    {
        HospitalClosingKind.FOLLOW_UP_PLAN: (
            "Med denne opfølgningsplan overgår det lægefaglige behandlingsansvar fra hospitalet til egen læge."
        ),
        HospitalClosingKind.OUTPATIENT_DISCHARGE: (
            "Patienten er afsluttet fra hospitalets ambulante forløb; det lægefaglige behandlingsansvar "
            "overgår hermed til egen læge."
        ),
    }
)
# The handover sentence when this closing does not itself hand the responsibility over (`Handover`).
NO_HANDOVER_YET: Mapping[Handover, str] = MappingProxyType(
    {
        Handover.AT_MUNICIPAL_STATUS: (
            "Patienten er fortsat i et kommunalt rehabiliteringsforløb: hospitalets hotline kan benyttes, til det "
            "er afsluttet, og det lægefaglige behandlingsansvar overgår til egen læge med kommunens status."
        ),
        Handover.ALREADY_GP: "Det lægefaglige behandlingsansvar ligger allerede hos egen læge.",
        Handover.EARLIER_COURSE: (
            "Opfølgningsplanen gælder et tidligere forløb; patientens nuværende forløb fortsætter, og det "
            "lægefaglige behandlingsansvar følger det."
        ),
    }
)


def handover_line(closing: HospitalClosing) -> str:
    """The sentence saying what this closing does to the medical responsibility."""
    return HANDOVER[closing.kind] if closing.handover is Handover.NOW else NO_HANDOVER_YET[closing.handover]


def closing_line(closing: HospitalClosing) -> str:
    """'Afsluttende samtale på hospitalet 2027-03-01 (Aalborg UH, Hjerterehabilitering).'"""
    return f"{CLOSING_EVENT[closing.kind]} {closing.closing_date.isoformat()} ({closing.hospital.name})."


def author_line(closing: HospitalClosing) -> str:
    name, role, phone = closing.author
    return f"Udarbejdet af {name}, {role}, tlf. {phone}."


def plan_lines(closing: HospitalClosing) -> list[str]:
    """The plan's non-blank lines, each stripped: one paragraph apiece in the narrative."""
    return [line.strip() for line in closing.plan.splitlines() if line.strip()]


def follow_up_text(closing: HospitalClosing) -> str:
    """The plan in readable Danish, for GP systems that only show a CareCommunication: the closing, the plan
    as written, who wrote it and the handover sentence (`HANDOVER`)."""
    return "\n".join(
        [
            f"{TITLE} fra {closing.hospital.name}.",
            closing_line(closing),
            "",
            "Opfølgningsplan:",
            closing.plan.strip(),
            "",
            author_line(closing),
            handover_line(closing),
        ]
    )


def _section(title: str, paragraphs: list[str]) -> Resource:
    return {"title": title, "text": xhtml(*(E.p(p) for p in paragraphs))}


def _composition(
    rid: str, closing: HospitalClosing, patient: Resource, hospital: Resource, gp: Resource, terms: Terminology
) -> Resource:
    """The Composition: by the closing department, about the patient, to the GP; responsibility transferred."""
    coding = {"system": terms.code_systems["documentType"], "code": DOCUMENT_TYPE, "display": TITLE}
    return {
        "resourceType": "Composition",
        "id": rid,
        "text": xhtml(
            E.p(E.b(TITLE)),
            E.p(f"Patient/{patient['id']}; fra {hospital['name']}; til egen læge Organization/{gp['id']}"),
        ),
        "extension": [
            {"url": terms.extensions["responsibilityTransferred"], "valueBoolean": closing.responsibility_transferred}
        ],
        "status": "final",
        "type": {"coding": [coding], "text": TITLE},
        "subject": reference(patient),
        "date": closing.occurred_at_text,
        "author": [reference(hospital)],
        "title": TITLE,
        "event": [
            {"code": [{"text": CLOSING_EVENT[closing.kind]}], "period": {"end": closing.closing_date.isoformat()}}
        ],
        "section": [
            _section("Afslutning", [closing_line(closing)]),
            _section("Opfølgningsplan", [*plan_lines(closing), author_line(closing)]),
            _section("Overdragelse", [handover_line(closing)]),
        ],
    }


def follow_up_plan_document(
    closing: HospitalClosing,
    patient: Resource,
    hospital_org: Resource,
    gp_org: Resource,
    ids: Callable[[str], str],
    terms: Terminology,
) -> dict[str, Any]:
    """The follow-up plan as a FHIR `document` Bundle: Composition first, then the patient, the closing
    department (a MedComMessagingOrganization) and the GP's Organization, each once. `ids` mints resource ids
    by role ("Composition", "Bundle"; deterministic: `fhir.ids.derived_id` of the event id). Bundle.timestamp
    and Composition.date are occurredAt as written (`HospitalClosing.occurred_at_text`). Not gated here: the
    caller passes it through `conformance.validation.validate_document`."""
    composition = _composition(ids("Composition"), closing, patient, hospital_org, gp_org, terms)
    bundle_id = ids("Bundle")
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "identifier": {"system": terms.identifiers["rfc3986"], "value": f"urn:uuid:{bundle_id}"},
        "type": "document",
        "timestamp": closing.occurred_at_text,
        "entry": entries([composition, patient, hospital_org, gp_org], terms),
    }
