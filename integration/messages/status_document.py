"""The GP status after a municipal rehabilitation course: a FHIR R4 document Bundle.

A Composition (course, effect, HADS, handover) with one Observation per measurement (before and
after as components, UCUM units, each value a Decimal with the precision the report gave it) and one
per HADS subscale (SNOMED CT, with the band as interpretation). Narratives are XHTML built with lxml:
a `div` in the XHTML namespace, text only. The report's `<ReferralRef>` links the Composition to the
referral it answers (Composition.event, see `_referral_event`) and is named in the course section.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from decimal import Decimal
from functools import partial
from typing import Any

from lxml import etree
from lxml.builder import ElementMaker

from integration.domain.closing_report import ClosingReport, Measurement
from integration.domain.course import ClosingPlace
from integration.domain.hads import HadsResult, Subscale
from integration.fhir.fhir_json import decimal_text
from integration.fhir.ids import derived_id
from integration.fhir.terminology import Terminology
from integration.messages.envelope import Resource, reference

XHTML = "http://www.w3.org/1999/xhtml"
E = ElementMaker(namespace=XHTML, nsmap={None: XHTML})
HADS_CODES = {"anxiety": ("401319005", "HADS angst-score"), "depression": ("401320004", "HADS depressions-score")}
BAND_LABELS = {"normal": "normal", "borderline": "grænsetilfælde", "abnormal": "sandsynlig angst/depression"}
ELEMENT_LABELS = {
    "physical-activity": "Fysisk aktivitet",
    "diet": "Kostvejledning",
    "patient-education": "Patientuddannelse",
    "smoking-cessation": "Rygestop",
}
MEASUREMENT_LABELS = {
    "six-minute-walk": "6 minutters gangtest",
    "max-workload": "Maksimal belastning",
    "vo2-peak": "VO2 peak",
    "body-weight": "Vægt",
    "waist": "Taljemål",
    "systolic-blood-pressure": "Systolisk blodtryk",
    "diastolic-blood-pressure": "Diastolisk blodtryk",
    "ldl-cholesterol": "LDL-kolesterol",
    "hba1c": "HbA1c",
}
ATTENTION = (
    "OBS: HADS-screeningen viser risiko for angst eller depression. Vi gør opmærksom på dette, "
    "så egen læge kan tage stilling til videre opfølgning."
)


def xhtml(*content: Any) -> dict[str, str]:
    return {"status": "generated", "div": etree.tostring(E.div(*content), encoding="unicode")}


def _before_after(m: Measurement) -> list[tuple[str, Decimal]]:
    return [
        (when, value) for when, value in (("Før forløbet", m.before), ("Efter forløbet", m.after)) if value is not None
    ]


def measurement_line(m: Measurement) -> str:
    """'6 minutters gangtest: før forløbet 420 m; efter forløbet 510 m', as the narratives show it."""
    values = "; ".join(f"{when.lower()} {decimal_text(value)} {m.unit}" for when, value in _before_after(m))
    return f"{MEASUREMENT_LABELS[m.code]}: {values or 'ikke målt'}"


def _measurement(
    rid: str, m: Measurement, report: ClosingReport, patient: Resource, author: Resource, terms: Terminology
) -> Resource:
    label = MEASUREMENT_LABELS[m.code]
    parts = _before_after(m)
    return {
        "resourceType": "Observation",
        "id": rid,
        "text": xhtml(E.p(E.b(label), measurement_line(m).removeprefix(label))),
        "status": "final",
        "code": {
            "coding": [{"system": terms.code_systems["measurement"], "code": m.code, "display": label}],
            "text": label,
        },
        "subject": reference(patient),
        "effectivePeriod": {"start": report.course_start.isoformat(), "end": report.course_end.isoformat()},
        "performer": [reference(author)],
        **(
            {
                "component": [
                    {
                        "code": {"text": when},
                        "valueQuantity": {
                            "value": value,  # a Decimal, written with its precision (fhir_json)
                            "unit": m.unit,
                            "system": terms.ucum,
                            "code": m.unit,
                        },
                    }
                    for when, value in parts
                ]
            }
            if parts
            else {"dataAbsentReason": {"text": "Ikke målt"}}
        ),
    }


def _hads_observation(
    rid: str,
    name: str,
    subscale: Subscale,
    report: ClosingReport,
    patient: Resource,
    author: Resource,
    terms: Terminology,
) -> Resource:
    code, display = HADS_CODES[name]
    base: Resource = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": terms.snomed, "code": code, "display": display}], "text": display},
        "subject": reference(patient),
        "effectiveDateTime": (report.hads_date or report.closing_date).isoformat(),
        "performer": [reference(author)],
    }
    if subscale.score is None or subscale.band is None:
        text = "Ikke beregnelig: to eller flere spørgsmål er ubesvaret"
        return {
            **base,
            "text": xhtml(E.p(E.b(display), ": ", text)),
            "dataAbsentReason": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}],
                "text": text,
            },
        }
    band = subscale.band.value
    note = " (beregnet forholdsmæssigt: ét spørgsmål ubesvaret)" if subscale.prorated else ""
    return {
        **base,
        "text": xhtml(E.p(E.b(display), f": {subscale.score} ({BAND_LABELS[band]}){note}")),
        "valueInteger": subscale.score,
        "interpretation": [
            {"coding": [{"system": terms.code_systems["hadsBand"], "code": band, "display": BAND_LABELS[band]}]}
        ],
        **({"note": [{"text": note.strip(" ()")}]} if subscale.prorated else {}),
    }


def _section(title: str, paragraphs: Iterable[Any], entries: Iterable[Resource] = ()) -> Resource:
    section: Resource = {"title": title, "text": xhtml(*paragraphs)}
    refs = [reference(r) for r in entries]
    if refs:
        section["entry"] = refs
    return section


def hads_lines(hads: HadsResult | None) -> list[str]:
    if hads is None:
        return ["HADS-screening er ikke udført ved afslutningen."]
    lines = []
    for name, subscale in (("Angst", hads.anxiety), ("Depression", hads.depression)):
        if subscale.score is None or subscale.band is None:
            lines.append(f"{name}: ikke beregnelig (to eller flere spørgsmål ubesvaret)")
        else:
            lines.append(f"{name}: {subscale.score} ({BAND_LABELS[subscale.band.value]})")
    if hads.needs_attention:
        lines.append(ATTENTION)
    return lines


def handover_line(report: ClosingReport) -> str:
    """Who holds the medical responsibility after this status (`ClosingReport.hands_over`)."""
    if report.gp_referred:
        return "Patienten er henvist af egen læge, som har det lægefaglige behandlingsansvar."
    if report.hospital_done:
        return (
            "Hospitalet har afsluttet sin del med sin opfølgningsplan; med denne status overgår det lægefaglige "
            "behandlingsansvar til egen læge."
        )
    if report.closing_place != ClosingPlace.MUNICIPALITY:
        return (
            "Den afsluttende samtale holdes på hospitalet, som bevarer det lægefaglige behandlingsansvar og "
            "overdrager det til egen læge med sin opfølgningsplan."
        )
    if report.hospital_retains_responsibility:
        return (
            "Patienten er fortsat tilknyttet hospitalet, som bevarer det lægefaglige behandlingsansvar og "
            "overdrager det til egen læge med sin egen opfølgningsplan."
        )
    return "Med denne status overgår det lægefaglige behandlingsansvar fra hospitalet til egen læge."


_URI = re.compile(r"urn:(uuid:[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|oid:[0-2](\.(0|[1-9][0-9]*))+)")


def _referral_event(report: ClosingReport, terms: Terminology) -> dict[str, Any]:
    """The course the document reports on, linked to the referral it answers: `<ReferralRef>` as a logical
    reference (FHIR R4 Composition.event.detail, Reference(Any)) to the referral's ServiceRequest, whose
    identifier our referral flow writes as `urn:uuid:<eventId>` in system urn:ietf:rfc:3986. The reference
    is carried as written: with that system when it is such a URI (a `urn:uuid:` or `urn:oid:`), else as a
    bare identifier value (a municipality's own referral number)."""
    ref = report.referral_ref or ""
    identifier = {"system": terms.identifiers["rfc3986"], "value": ref} if _URI.fullmatch(ref) else {"value": ref}
    return {
        "period": {"start": report.course_start.isoformat(), "end": report.course_end.isoformat()},
        "detail": [
            {"type": "ServiceRequest", "identifier": identifier, "display": "Henvisning til hjerterehabilitering"}
        ],
    }


def _observations(
    report: ClosingReport, patient: Resource, author: Resource, ids: Callable[[str], str], terms: Terminology
) -> tuple[list[Resource], list[Resource]]:
    """(one Observation per measurement, one per HADS subscale), in the report's order."""
    measurements = [
        _measurement(ids(f"Observation/{m.code}"), m, report, patient, author, terms) for m in report.measurements
    ]
    if report.hads is None:
        return measurements, []
    hads = [
        _hads_observation(ids(f"Observation/hads-{n}"), n, s, report, patient, author, terms)
        for n, s in (("anxiety", report.hads.anxiety), ("depression", report.hads.depression))
    ]
    return measurements, hads


def _course_section(report: ClosingReport) -> Resource:
    elements = [
        f"{ELEMENT_LABELS[e.code]}: {'gennemført' if e.completed else 'ikke gennemført'}"
        + (f" ({e.sessions} gange)" if e.sessions is not None else "")
        for e in report.elements
    ]
    place = "i kommunen" if report.closing_place == ClosingPlace.MUNICIPALITY else "på hospitalet"
    return _section(
        "Forløbet",
        [
            E.p(
                f"Kommunalt rehabiliteringsforløb {report.course_start.isoformat()} til "
                f"{report.course_end.isoformat()}; afsluttende samtale {report.closing_date.isoformat()} "
                f"({place})."
            ),
            E.ul(*(E.li(line) for line in elements)),
            *([E.p(f"Henvisning: {report.referral_ref}")] if report.referral_ref is not None else []),
        ],
    )


def _effect_section(report: ClosingReport, measurements: list[Resource]) -> Resource:
    smoking = [f"Rygestatus: {report.smoking[0]} før, {report.smoking[1]} efter"] if report.smoking else []
    return _section(
        "Effekt af rehabiliteringen",
        [
            E.p(report.summary),
            *(E.p(line) for line in smoking),
            E.ul(*(E.li(measurement_line(m)) for m in report.measurements)),
        ],
        measurements,
    )


def _sections(report: ClosingReport, measurements: list[Resource], hads: list[Resource]) -> list[Resource]:
    """The Composition's sections: the course, its effect, the HADS screening and the handover."""
    return [
        _course_section(report),
        _effect_section(report, measurements),
        _section("Screening for angst og depression (HADS)", [E.p(line) for line in hads_lines(report.hads)], hads),
        _section(
            "Overdragelse",
            [E.p(handover_line(report)), *([E.p(f"Opfølgning: {report.follow_up}")] if report.follow_up else [])],
        ),
    ]


def _composition(
    rid: str,
    report: ClosingReport,
    patient: Resource,
    municipality: Resource,
    gp: Resource,
    sections: list[Resource],
    terms: Terminology,
) -> Resource:
    """The Composition: by the municipality, about the patient, to the GP; whether responsibility moves."""
    title = "Status efter hjerterehabilitering"
    document_type = {"system": terms.code_systems["documentType"], "code": "rehabilitation-closing-status"}
    composition: Resource = {
        "resourceType": "Composition",
        "id": rid,
        "text": xhtml(
            E.p(E.b(title)),
            E.p(f"Patient/{patient['id']}; fra {municipality['name']}; til egen læge Organization/{gp['id']}"),
        ),
        "extension": [
            {
                "url": terms.extensions["responsibilityTransferred"],
                "valueBoolean": report.hands_over,
            }
        ],
        "status": "final",
        "type": {
            "coding": [{**document_type, "display": title}],
            "text": title,
        },
        "subject": reference(patient),
        "date": report.sent_at_instant,
        "author": [reference(municipality)],
        "title": title,
        "section": sections,
    }
    if report.referral_ref is not None:
        composition["event"] = [_referral_event(report, terms)]
    return composition


def status_document(
    report: ClosingReport,
    patient: Resource,
    municipality: Resource,
    gp: Resource,
    now_id: Callable[[str], str],
    terms: Terminology,
) -> Resource:
    """The document (a FHIR `document` Bundle: Composition first, every resource once); `now_id` mints ids
    from the report id. No MedCom message envelope: the GP receives it beside a CareCommunication that is one."""
    ids = now_id
    measurements, hads = _observations(report, patient, municipality, ids, terms)
    sections = _sections(report, measurements, hads)
    composition = _composition(ids("Composition"), report, patient, municipality, gp, sections, terms)
    resources = [composition, patient, municipality, gp, *measurements, *hads]
    bundle_id = ids("Bundle")
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "identifier": {"system": terms.identifiers["rfc3986"], "value": f"urn:uuid:{bundle_id}"},
        "type": "document",
        "timestamp": report.sent_at_instant,
        "entry": [{"fullUrl": terms.full_url(r["resourceType"], r["id"]), "resource": r} for r in resources],
    }


def document_ids(report_id: str) -> Callable[[str], str]:
    return partial(derived_id, f"{report_id}/status")
