"""MedCom's messaging rules and the FHIR invariants and required codes the models do not check, as findings.

A finding says where (`field`, a FHIR path such as `Patient.name[0].family`), what (`problem`, never a
value from the message) and, for our own messages and `integration validate`, the full text with ids and
values (`text`). The rules read any JSON value without failing: a message from elsewhere may hold anything.
Our own messages are held to them before they leave; an inbound MedCom message is held to them where our
reply would repeat its content.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from integration.domain.cpr import parse_cpr
from integration.domain.identifiers import REPLACEMENT_SYSTEMS, parse_replacement_cpr
from integration.domain.moment import EARLIEST_YEAR, IMPLAUSIBLE, LATEST_YEAR

Resource = dict[str, Any]

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
DATETIME_WITH_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T")
ZONE_SUFFIX = re.compile(r"(Z|[+-]\d{2}:\d{2})$")
DESTINATION_USE = "http://medcomfhir.dk/ig/messaging/StructureDefinition/medcom-messaging-destinationUseExtension"
SOR = "urn:oid:1.2.208.176.1.1"
EAN = "https://www.gs1.org/gln"
CPR = "urn:oid:1.2.208.176.1.2"
EMPTY = "empty value (FHIR elements need a value or children)"

_REQUEST_STATUS = {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
_EVENT_STATUS = {
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
}
# Required bindings (FHIR R4) of the coded elements we emit, which the models do not enforce.
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Bundle", "type"): frozenset(
        {
            "document",
            "message",
            "transaction",
            "transaction-response",
            "batch",
            "batch-response",
            "history",
            "searchset",
            "collection",
        }
    ),
    ("ServiceRequest", "status"): frozenset(_REQUEST_STATUS),
    ("ServiceRequest", "intent"): frozenset(
        {
            "proposal",
            "plan",
            "directive",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        }
    ),
    ("RiskAssessment", "status"): frozenset(_EVENT_STATUS),
    ("Observation", "status"): frozenset(_EVENT_STATUS),
    ("Communication", "status"): frozenset(
        {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error", "unknown"}
    ),
    ("Provenance", "entity.role"): frozenset({"derivation", "revision", "quotation", "source", "removal"}),
    ("MessageHeader", "response.code"): frozenset({"ok", "transient-error", "fatal-error"}),
    ("OperationOutcome", "issue.severity"): frozenset({"fatal", "error", "warning", "information"}),
    ("Patient", "name.use"): frozenset({"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"}),
    ("Patient", "identifier.use"): frozenset({"usual", "official", "temp", "secondary", "old"}),
    ("Organization", "identifier.use"): frozenset({"usual", "official", "temp", "secondary", "old"}),
    ("Narrative", "status"): frozenset({"generated", "extensions", "additional", "empty"}),
    ("Composition", "status"): frozenset({"preliminary", "final", "amended", "entered-in-error"}),
}
# MedCom's CareCommunication category codes: Communication.category is bound (required) to the ValueSet
# medcom-careCommunication-categories, which includes the whole CodeSystem medcom-careCommunication-categoryCodes;
# these are its codes in medcom.fhir.dk.terminology#2.0.1 (CodeSystem version 1.9.0), the terminology
# CareCommunication 5.0.4 pins (../shared/medcom/definitions/medcom.fhir.dk.terminology#2.0.1/
# CodeSystem-medcom-careCommunication-categoryCodes.json; copied here, never read at run time).
CARE_COMMUNICATION_CATEGORY_SYSTEM = (
    "http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-careCommunication-categoryCodes"
)
CARE_COMMUNICATION_CATEGORIES = frozenset(
    {
        "alcohol-and-drug-treatment",
        "assistive-devices",
        "carecoordination",
        "decease",
        "discharge",
        "examination-results",
        "healthcare",
        "home-care-assessment",
        "medicine",
        "nursing",
        "outpatient",
        "psychiatry-social-disability",
        "regarding-referral",
        "telemedicine",
        "training",
        "acute-ambulant",
        "extended-care-responsibility",
        "other",
    }
)
_CODES_BY_OWNER: dict[str, list[tuple[str, frozenset[str]]]] = {}
for (_owner, _path), _allowed in REQUIRED_CODES.items():
    _CODES_BY_OWNER.setdefault(_owner, []).append((_path, _allowed))


@dataclass(frozen=True, slots=True)
class Finding:
    field: str  # where, as a FHIR path: `Patient.text`, `MessageHeader.destination`
    problem: str  # what, never a value from the message
    text: str  # the full description, with ids and values, for our own messages and `integration validate`

    def __str__(self) -> str:
        return self.text


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _values(node: Any, path: str) -> Iterator[Any]:
    head, _, rest = path.partition(".")
    value = node.get(head) if isinstance(node, dict) else None
    for item in value if isinstance(value, list) else ([] if value is None else [value]):
        if rest:
            yield from _values(item, rest)
        else:
            yield item


@dataclass(frozen=True, slots=True)
class _At:
    """A place in a resource: `Type/id.a.0.b` for the text, `Type.a[0].b` for the field."""

    text: str
    field: str

    def child(self, key: str | int) -> _At:
        return _At(f"{self.text}.{key}", f"{self.field}[{key}]" if isinstance(key, int) else f"{self.field}.{key}")


@dataclass
class _Found:
    references: list[tuple[_At, str]] = field(default_factory=list)
    timestamps: list[tuple[_At, str]] = field(default_factory=list)
    empty: list[_At] = field(default_factory=list)


def _walk(node: Any, found: _Found, at: _At) -> None:
    """Collect references and timestamps, and the empty values FHIR forbids (invariant ele-1)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        here = at.child(key)
        if value in ("", [], {}, None):
            found.empty.append(here)
        elif key == "reference" and isinstance(value, str):
            found.references.append((here, value))
        elif isinstance(value, str):
            if value[10:11] == "T" and DATETIME_WITH_TIME.match(value):
                found.timestamps.append((here, value))
        else:
            _walk(value, found, here)


def _walked(found: _Found, known: set[str] | dict[str, Any], bundle: Resource) -> list[Finding]:
    """References that do not resolve, the Bundle's and other timestamps without a zone, empty values."""
    findings = [
        Finding(
            at.field.removesuffix(".reference"),
            "the reference does not resolve inside the Bundle",
            f"reference {ref!r} does not resolve inside the Bundle",
        )
        for at, ref in found.references
        if ref not in known
    ]
    timestamp = bundle.get("timestamp", "")
    if not isinstance(timestamp, str) or not ZONE_SUFFIX.search(timestamp):
        shown = timestamp if isinstance(timestamp, str) else ""
        findings.append(
            Finding("Bundle.timestamp", "missing or without a time zone", f"timestamp {shown!r} has no time zone")
        )
    elif not _plausible_year(timestamp):
        findings.append(Finding("Bundle.timestamp", IMPLAUSIBLE, f"timestamp {timestamp!r} is {IMPLAUSIBLE}"))
    findings += [
        Finding(at.field, "has no time zone", f"timestamp {ts!r} has no time zone")
        for at, ts in found.timestamps
        if not ZONE_SUFFIX.search(ts)
    ]
    findings += [
        Finding(at.field, IMPLAUSIBLE, f"{at.text}: timestamp {ts!r} is {IMPLAUSIBLE}")
        for at, ts in found.timestamps
        if not _plausible_year(ts)
    ]
    return findings + [Finding(at.field, EMPTY, f"{at.text}: {EMPTY}") for at in found.empty]


def _plausible_year(timestamp: str) -> bool:
    """A date and time (`YYYY-MM-DDT…`, as `_walk` collects them) whose year as written is one we read."""
    year = timestamp[:4]
    return not (year.isascii() and year.isdigit()) or EARLIEST_YEAR <= int(year) <= LATEST_YEAR


def _category_findings(communication: Resource) -> list[Finding]:
    """A category coded in MedCom's category system must be one of its codes (a required binding); a category
    in another system, or without a code, the TouchStone assertion reports (`conformance`)."""
    rid, findings = communication.get("id"), []
    for i, category in enumerate(as_list(communication.get("category"))):
        for coding in map(as_dict, as_list(as_dict(category).get("coding"))):
            code = coding.get("code")
            if coding.get("system") != CARE_COMMUNICATION_CATEGORY_SYSTEM or code is None:
                continue
            if not isinstance(code, str) or code not in CARE_COMMUNICATION_CATEGORIES:
                problem = "is not a code of MedCom's CareCommunication categories (a required binding)"
                findings.append(
                    Finding("Communication.category", problem, f"Communication/{rid}: category[{i}] {problem}")
                )
    return findings


def _identifier_systems(resource: Resource) -> set[str]:
    systems = (as_dict(i).get("system") for i in as_list(resource.get("identifier")))
    return {s for s in systems if isinstance(s, str)}


def _code_findings(resource: Resource, rtype: str) -> list[Finding]:
    rid, findings = resource.get("id"), []
    for path, allowed in _CODES_BY_OWNER.get(rtype, ()):
        findings += [
            Finding(f"{rtype}.{path}", "is not a valid code", f"{rtype}/{rid}: {path} {v!r} is not a valid code")
            for v in _values(resource, path)
            if not isinstance(v, str) or v not in allowed
        ]
    text = resource.get("text")
    status = as_dict(text).get("status")
    if text is not None and (not isinstance(status, str) or status not in REQUIRED_CODES[("Narrative", "status")]):
        findings.append(
            Finding(f"{rtype}.text.status", "is not a valid code", f"{rtype}/{rid}: text.status is not a valid code")
        )
    return findings


def _resource_type(resource: Resource) -> str | None:
    rtype = resource.get("resourceType")
    return rtype if isinstance(rtype, str) and rtype else None


def _not_a_resource(position: int) -> Finding:
    where = f"Bundle.entry[{position}].resource"
    return Finding(where, "not a FHIR resource (no resourceType)", f"entry[{position}]: not a FHIR resource")


def _id_finding(resource: Resource, rtype: str) -> list[Finding]:
    rid = resource.get("id", "")
    if isinstance(rid, str) and UUID.fullmatch(rid) and FHIR_ID.fullmatch(rid):
        return []
    problem = "must be a UUID of at most 64 characters" if "id" in resource else "missing: MedCom requires a UUID id"
    return [Finding(f"{rtype}.id", problem, f"{rtype}: id {rid!r} must be a UUID of at most 64 characters")]


def _narrative_finding(resource: Resource, rtype: str) -> list[Finding]:
    if as_dict(resource.get("text")).get("div"):
        return []
    problem = "narrative missing: MedCom requires one in every resource"
    return [Finding(f"{rtype}.text", problem, f"{rtype}/{resource.get('id', '')}: narrative text is missing")]


def _header_findings(header: Resource, by_ref: dict[str, Resource], allow_cc: bool) -> list[Finding]:
    findings = []
    destinations = [as_dict(d) for d in as_list(header.get("destination"))]
    uses = [
        as_dict(as_dict(ext).get("valueCoding")).get("code")
        for dest in destinations
        for ext in as_list(dest.get("extension"))
        if as_dict(ext).get("url") == DESTINATION_USE
    ]
    if uses.count("primary") != 1 or len(uses) != len(destinations):
        problem = "needs exactly one primary destination, each destination marked primary or cc"
        findings.append(Finding("MessageHeader.destination", problem, f"MessageHeader: {problem}"))
    if not allow_cc and "cc" in uses:
        problem = "cc destinations are not allowed for this message"
        findings.append(Finding("MessageHeader.destination", problem, f"MessageHeader: {problem}"))
    parties = [("MessageHeader.sender", as_dict(header.get("sender")).get("reference"))] + [
        ("MessageHeader.destination.receiver", as_dict(d.get("receiver")).get("reference")) for d in destinations
    ]
    for where, ref in parties:
        org = by_ref.get(ref) if isinstance(ref, str) else None
        if org is None or org.get("resourceType") != "Organization":
            findings.append(
                Finding(
                    where,
                    "is not an Organization in the Bundle",
                    f"MessageHeader: sender/receiver {ref!r} is not an Organization in the bundle",
                )
            )
        elif not {SOR, EAN} <= _identifier_systems(org):
            problem = "a sender or receiver needs both an SOR and an EAN identifier"
            findings.append(Finding(f"{where}.identifier", problem, f"{ref}: {problem}"))
    if not as_dict(header.get("source")).get("endpoint"):
        findings.append(
            Finding("MessageHeader.source.endpoint", "missing", "MessageHeader: source.endpoint is missing")
        )
    return findings


def _first_target(provenance: Resource) -> Any:
    targets = as_list(provenance.get("target"))
    return as_dict(targets[0]).get("reference") if targets else None


def _number_problem(identifier: dict[str, Any]) -> str | None:
    """What is wrong with a CPR or replacement CPR identifier's value, in words that never repeat it."""
    value, system = identifier.get("value"), identifier.get("system")
    if not isinstance(value, str):
        return "has no value"
    try:
        parse_cpr(value) if system == CPR else parse_replacement_cpr(str(system), value)
    except ValueError as exc:
        return str(exc)
    return None


def _identifier_findings(patient: Resource) -> list[Finding]:
    """dk-core's Patient.identifier slices: a CPR number (use official), else a replacement number, an
    X-eCPR or a region's D-eCPR (use temp), each in its format."""
    rid, identifiers = patient.get("id"), [as_dict(i) for i in as_list(patient.get("identifier"))]
    cprs = [i for i in identifiers if i.get("system") == CPR]
    replacements = [i for i in identifiers if isinstance(i.get("system"), str) and i["system"] in REPLACEMENT_SYSTEMS]
    problems = []
    if not cprs and not replacements:
        problems.append("needs a CPR identifier, or a replacement CPR (X-eCPR or D-eCPR) for a patient without one")
    if len({str(i.get("value")) for i in cprs}) > 1:
        problems.append("names more than one CPR number: which is the patient cannot be told")
    if len({(i["system"], str(i.get("value"))) for i in replacements}) > 1:
        problems.append("names more than one replacement CPR number: which is the patient cannot be told")

    if any(i.get("use", "official") != "official" for i in cprs):
        problems.append("a CPR identifier's use must be official")
    if any(i.get("use", "temp") != "temp" for i in replacements):
        problems.append("a replacement CPR identifier's use must be temp")
    problems += [p for i in cprs + replacements if (p := _number_problem(i))]
    findings = [Finding("Patient.identifier", p, f"Patient/{rid}: identifier: {p}") for p in problems]
    return findings + [
        Finding("Patient.birthDate", p, f"Patient/{rid}: birthDate: {p}")
        for p in _birth_date_against_cpr(patient, cprs)
    ]


def _birth_date_against_cpr(patient: Resource, cprs: list[dict[str, Any]]) -> list[str]:
    """Patient.birthDate, given as a full date, must be the date the CPR number's digits and century rule give."""
    born = patient.get("birthDate")
    if len(cprs) != 1 or not isinstance(born, str) or len(born) != 10 or not isinstance(cprs[0].get("value"), str):
        return []
    try:
        cpr, given = parse_cpr(cprs[0]["value"]), date.fromisoformat(born)
    except ValueError:
        return []  # a malformed number or date is reported as such, by its own check
    if given != cpr.birth_date:
        return ["birthDate is not the birth date the CPR number gives"]
    return []


def _birth_findings(patient: Resource, bundle: Resource) -> list[Finding]:
    """A patient born after the message was sent cannot be right (the date part of both, as written)."""
    born, sent = patient.get("birthDate"), bundle.get("timestamp")
    if not isinstance(born, str) or not isinstance(sent, str) or not born or born <= sent[: len(born)]:
        return []
    problem = "is after the message's timestamp"
    return [Finding("Patient.birthDate", problem, f"Patient/{patient.get('id')}: birthDate {problem}")]


def _patient_findings(patient: Resource, bundle: Resource) -> list[Finding]:
    findings, rid = _identifier_findings(patient) + _birth_findings(patient, bundle), patient.get("id")
    if not any(as_dict(n).get("family") for n in as_list(patient.get("name"))):
        findings.append(Finding("Patient.name", "needs a family name", f"Patient/{rid}: needs a family name"))
    return findings


def _repeated_entries(entries: list[dict[str, Any]], resources: list[Resource]) -> list[Finding]:
    """One MessageHeader (the first entry), each fullUrl once (bdl-7), each resource in one entry: where a
    resource repeats, which one a reference means is a guess, and our reply would repeat the guess."""
    findings, urls, seen = [], set(), set()
    headers = [r for r in resources if r.get("resourceType") == "MessageHeader"]
    if len(headers) > 1:
        problem = "a message has one MessageHeader, its first entry"
        findings.append(Finding("MessageHeader", problem, f"{len(headers)} MessageHeaders: {problem}"))
    for position, (entry, resource) in enumerate(zip(entries, resources, strict=True)):
        url, key = entry.get("fullUrl"), (resource.get("resourceType"), resource.get("id"))
        if isinstance(url, str) and url in urls:
            problem = "repeats the fullUrl of an earlier entry (bdl-7)"
            findings.append(
                Finding(f"Bundle.entry[{position}].fullUrl", problem, f"entry[{position}]: fullUrl {problem}")
            )
        elif all(isinstance(k, str) for k in key) and key in seen:
            problem = "the same resource is in an earlier entry too"
            findings.append(Finding(f"Bundle.entry[{position}].resource", problem, f"{key[0]}/{key[1]}: {problem}"))
        if isinstance(url, str):
            urls.add(url)
        if all(isinstance(k, str) for k in key):
            seen.add(key)
    return findings


# Bundle invariants of FHIR R4 on where entry parts and the total may appear (bdl-1 to bdl-4).
_BUNDLE_PLACES = (
    ("total", ("searchset", "history"), "bdl-1: a total only in a search set or history"),
    ("search", ("searchset",), "bdl-2: entry.search only in a search set"),
    ("request", ("batch", "transaction", "history"), "bdl-3: entry.request only in a batch, transaction or history"),
    ("response", ("batch-response", "transaction-response", "history"), "bdl-4: entry.response only in a response"),
)


def _bundle_invariants(bundle: Resource, entries: list[dict[str, Any]]) -> list[Finding]:
    """bdl-1 to bdl-4: `total`, `entry.search`, `entry.request`, `entry.response` only where the Bundle's type
    allows them."""
    kind, findings = bundle.get("type"), []
    for key, allowed, problem in _BUNDLE_PLACES:
        if kind in allowed:
            continue
        if key == "total":
            if "total" in bundle:
                findings.append(Finding("Bundle.total", problem, f"Bundle.total: {problem}"))
            continue
        findings += [
            Finding(f"Bundle.entry[{i}].{key}", problem, f"entry[{i}].{key}: {problem}")
            for i, entry in enumerate(entries)
            if key in entry
        ]
    return findings


def _anywhere(node: Any, at: _At) -> Iterator[tuple[_At, str, Any, dict[str, Any]]]:
    """Every (place, key, value, object holding it) under `node`, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        here = at.child(key)
        if isinstance(key, str) and isinstance(node, dict):
            yield here, key, value, node
        if isinstance(value, dict | list):
            yield from _anywhere(value, here)


_PATIENT_SYSTEMS = frozenset({CPR, *REPLACEMENT_SYSTEMS})
UNKNOWN_MODIFIER = "a modifier extension we do not understand: the content must not be processed (FHIR R4 §2.4)"
OTHER_PATIENT = "names a patient other than the message's one Patient"


def _content_findings(resources: list[Resource]) -> list[Finding]:
    """Anywhere in the resources: a modifierExtension (we understand none), and a CPR or replacement CPR
    identifier that is not the one Patient's (another patient's data). With no Patient, or more than one,
    other findings say so and the identifiers are not compared."""
    patients = [r for r in resources if r.get("resourceType") == "Patient"]
    own = (
        {
            (i["system"], i.get("value"))
            for i in map(as_dict, as_list(patients[0].get("identifier")))
            if isinstance(i.get("system"), str) and isinstance(i.get("value"), str)
        }
        if len(patients) == 1
        else None
    )
    findings = []
    for resource in resources:
        rtype = _resource_type(resource) or "Resource"
        rid = resource.get("id", "")
        for at, key, value, holder in _anywhere(resource, _At(f"{rtype}/{rid}", rtype)):
            if key == "modifierExtension" and value not in ([], None):
                findings.append(Finding(at.field, UNKNOWN_MODIFIER, f"{at.text}: {UNKNOWN_MODIFIER}"))
            elif (
                own is not None
                and key == "system"
                and isinstance(value, str)
                and value in _PATIENT_SYSTEMS
                and not at.field.startswith("Patient.identifier[")
            ):
                if (value, holder.get("value")) not in own:
                    where, text = at.field.removesuffix(".system"), at.text.removesuffix(".system")
                    findings.append(Finding(where, OTHER_PATIENT, f"{text}: {OTHER_PATIENT}"))
    return findings


def _sors(organization: Resource) -> set[str]:
    values = (
        as_dict(i).get("value") for i in as_list(organization.get("identifier")) if as_dict(i).get("system") == SOR
    )
    return {v for v in values if isinstance(v, str)}


def _routing_findings(header: Resource, resources: list[Resource], by_ref: dict[str, Resource]) -> list[Finding]:
    """Contradictions in who sends and who receives: an Organization with two different SOR ids.

    Endpoints are not held to their Organization's SOR id: an endpoint may belong to another SOR unit of the
    same organization, as in MedCom's own Flow3 example (source endpoint …16003, sender Organization …16000),
    and a reply goes back to the endpoint the message came from."""
    findings = []
    for org in resources:
        if org.get("resourceType") == "Organization" and len(_sors(org)) > 1:
            problem = "names two different SOR ids: which organization is meant cannot be told"
            findings.append(Finding("Organization.identifier", problem, f"Organization/{org.get('id')}: {problem}"))
    return findings


CARE_COMMUNICATION_EVENT = "care-communication-message"
# What a CareCommunication Bundle holds: medcom-careCommunication-message, `entry` (CareCommunication 5.0.4,
# ../shared/medcom/dk-medcom-carecommunication/profiles/MedComCareCommunicationMessage.fsh). The slicing is
# open, but a type outside these is one our flow would forward unread, so it is refused.
CARE_COMMUNICATION_TYPES = frozenset(
    {
        "MessageHeader",
        "Organization",
        "Provenance",
        "Communication",
        "Patient",
        "Encounter",
        "Practitioner",
        "PractitionerRole",
        "CareTeam",
    }
)


def _care_communication_findings(header: Resource, resources: list[Resource]) -> list[Finding]:
    """CareCommunication's own rules: the resource types its Bundle may hold, exactly one Communication with
    status `unknown` (fixed by medcom-careCommunication-communication; entered-in-error is refused) and one
    thread identifier, and one MessageHeader.focus."""
    findings = []
    for i, resource in enumerate(resources):
        rtype = _resource_type(resource)
        if rtype is not None and rtype not in CARE_COMMUNICATION_TYPES:
            problem = "a resource type a CareCommunication does not hold (medcom-careCommunication-message)"
            findings.append(Finding(f"Bundle.entry[{i}].resource", problem, f"{rtype}/{resource.get('id')}: {problem}"))
    communications = [r for r in resources if r.get("resourceType") == "Communication"]
    if len(communications) != 1:
        problem = "a CareCommunication holds exactly one Communication"
        findings.append(Finding("Communication", problem, f"{len(communications)} Communications: {problem}"))
    for communication in communications:
        rid = communication.get("id")
        if communication.get("status") != "unknown":
            problem = "must be 'unknown' (fixed by MedCom's CareCommunication)"
            findings.append(Finding("Communication.status", problem, f"Communication/{rid}: status {problem}"))
        if len(as_list(communication.get("identifier"))) > 1:
            problem = "holds more than one thread identifier (1..1 in MedCom's CareCommunication)"
            findings.append(Finding("Communication.identifier", problem, f"Communication/{rid}: identifier {problem}"))
    if len(as_list(header.get("focus"))) != 1:
        problem = "a CareCommunication's MessageHeader has exactly one focus"
        findings.append(Finding("MessageHeader.focus", problem, f"MessageHeader: {problem}"))
    return findings


def messaging_findings(bundle: Any, *, allow_cc: bool = False) -> list[Finding]:
    """MedCom messaging rules, FHIR invariants and required codes that the models do not check."""
    if not isinstance(bundle, dict):
        return [Finding("Bundle", "not a JSON object", "a message is a JSON object")]
    findings: list[Finding] = []
    if bundle.get("type") != "message":
        findings.append(Finding("Bundle.type", "must be 'message'", "Bundle.type must be 'message'"))
    if not UUID.fullmatch(str(bundle.get("id", ""))):
        findings.append(Finding("Bundle.id", "must be a UUID", "Bundle.id must be a UUID"))
    entries = [as_dict(e) for e in as_list(bundle.get("entry"))]
    resources = [as_dict(e.get("resource")) for e in entries]
    if not resources or resources[0].get("resourceType") != "MessageHeader":
        problem = "must be the MessageHeader"
        return findings + [Finding("Bundle.entry[0]", problem, f"entry[0] {problem}")]
    by_ref = {f"{r.get('resourceType')}/{r.get('id')}": r for r in resources}
    header = resources[0]
    findings += _header_findings(header, by_ref, allow_cc)
    if not any(
        _first_target(p) == f"MessageHeader/{header.get('id')}"
        for p in resources
        if p.get("resourceType") == "Provenance"
    ):
        problem = "no Provenance targets this message's MessageHeader"
        findings.append(Finding("Provenance.target", problem, problem))
    findings += _repeated_entries(entries, resources)
    findings += _bundle_invariants(bundle, entries) + _routing_findings(header, resources, by_ref)
    findings += _content_findings(resources) + [
        Finding(f"Bundle.entry[{i}].modifierExtension", UNKNOWN_MODIFIER, f"entry[{i}]: {UNKNOWN_MODIFIER}")
        for i, entry in enumerate(entries)
        if entry.get("modifierExtension") not in ([], None)
    ]
    if as_dict(header.get("eventCoding")).get("code") == CARE_COMMUNICATION_EVENT:
        findings += _care_communication_findings(header, resources)
    found = _Found()
    for position, (entry, resource) in enumerate(zip(entries, resources, strict=True)):
        rtype = _resource_type(resource)
        if rtype is None:
            findings.append(_not_a_resource(position))
            continue
        rid = resource.get("id", "")
        findings += _id_finding(resource, rtype)
        full_url = entry.get("fullUrl", "")
        if not isinstance(full_url, str) or (full_url != f"{rtype}/{rid}" and not full_url.endswith(f"/{rtype}/{rid}")):
            problem = "fullUrl does not name the resource"
            findings.append(Finding(f"Bundle.entry[{position}].fullUrl", problem, f"{rtype}/{rid}: {problem}"))
        findings += _narrative_finding(resource, rtype) + _code_findings(resource, rtype)
        if rtype == "Communication":
            findings += _category_findings(resource)
        # The narrative is checked above and is one string; a Provenance's target and entity may point
        # at earlier messages, which are not in this Bundle (the chain of a reply).
        skipped = ("text", "entity", "target") if rtype == "Provenance" else ("text",)
        _walk({k: v for k, v in resource.items() if k not in skipped}, found, _At(f"{rtype}/{rid}", rtype))
    findings += _walked(found, by_ref, bundle)
    for patient in (r for r in resources if r.get("resourceType") == "Patient"):
        findings += _patient_findings(patient, bundle)
    return findings


def document_findings(bundle: Any) -> list[Finding]:
    """FHIR document rules we rely on: a Composition first, an identifier, UUID ids, references inside."""
    if not isinstance(bundle, dict):
        return [Finding("Bundle", "not a JSON object", "a document is a JSON object")]
    findings = []
    resources = [as_dict(as_dict(e).get("resource")) for e in as_list(bundle.get("entry"))]
    if bundle.get("type") != "document" or not resources or resources[0].get("resourceType") != "Composition":
        problem = "a document Bundle starts with its Composition"
        findings.append(Finding("Bundle.entry[0]", problem, problem))
    if not as_dict(bundle.get("identifier")).get("value"):
        problem = "a document Bundle needs an identifier (bdl-9)"
        findings.append(Finding("Bundle.identifier", problem, problem))
    known = {f"{r.get('resourceType')}/{r.get('id')}" for r in resources}
    found = _Found()
    for position, resource in enumerate(resources):
        rtype = _resource_type(resource)
        if rtype is None:
            findings.append(_not_a_resource(position))
            continue
        rid = resource.get("id", "")
        if not isinstance(rid, str) or not UUID.fullmatch(rid):
            findings.append(Finding(f"{rtype}.id", "must be a UUID", f"{rtype}: id {rid!r} must be a UUID"))
        findings += _narrative_finding(resource, rtype) + _code_findings(resource, rtype)
        _walk(resource, found, _At(f"{rtype}/{rid}", rtype))
    return findings + _walked(found, known, bundle)


def message_header(bundle: Any) -> dict[str, Any]:
    """The resource of a message's first entry (its MessageHeader when it is one), or {}: any JSON value is read."""
    entries = as_list(bundle.get("entry")) if isinstance(bundle, dict) else []
    return as_dict(as_dict(entries[0]).get("resource")) if entries else {}
