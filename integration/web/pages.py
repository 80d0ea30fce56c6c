"""What each page of the board shows, read from the audit store: plain rows for the templates, no HTML.

The patient is shown by `Viewer.patient`: the CPR number (or replacement number) to the clinical role, a mask
to the operations role, which sees no patient identifier at all; every other text from the store or a
message goes through `Viewer.text` (for operations, `integration.log.one_line`: CPR-shaped text masked).
Nothing here writes the audit records of a view: `integration.web.app` does, before it answers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from lxml import etree

from integration.adapters.sql.store import AuditStore, PendingRequest
from integration.domain.course import Course, OutboundState, Stage
from integration.log import cpr_numbers_in, mask_cpr, masked, one_line
from integration.mappings import Mappings
from integration.service.audit_chain import AuditRecord
from integration.service.pathway_watch import Deadline
from integration.service.ports import OutboundMessage, StoredOutput
from integration.web.auth import Role

MASK = "•••••• ••••"  # what operations sees in place of a patient identifier
# The detail fields of the audit records that name a message besides the record's own message id.
MESSAGE_FIELDS = ("outputId", "messageHeaderId", "bundleId", "eventId", "bundle")
SEARCHABLE = re.compile(r"[A-Za-z0-9:._\-|/]{1,200}")
MUNICIPALITY = re.compile(r"[0-9]{3}")
SOR = re.compile(r"[0-9]{6,20}")
DANISH_TIME = ZoneInfo("Europe/Copenhagen")
STATUSES = ("overdue",)  # a status filter besides the stages


@dataclass(frozen=True, slots=True)
class Viewer:
    name: str
    role: Role

    @property
    def clinical(self) -> bool:
        return self.role is Role.CLINICAL

    def patient(self, patient: str | None) -> str:
        if patient is None:
            return "-"
        return self.text(patient, 120) if self.clinical else MASK

    def text(self, value: object, limit: int = 300) -> str:
        """Text from the store or a message: for operations one safe line (CPR-shaped text masked); for
        clinical the same without the mask (the template escapes it either way)."""
        if self.clinical:
            return "".join(c if c.isprintable() else "?" for c in str(value))[:limit]
        return one_line(value, limit)

    def detail(self, detail: Mapping[str, Any]) -> str:
        text = orjson.dumps(detail if self.clinical else masked(detail), option=orjson.OPT_SORT_KEYS).decode()
        return text if self.clinical else mask_cpr(text)


# -- the pathway board -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Marker:
    """One deadline on a row (from `integration.service.pathway_watch`): its rule, when due, whether overdue."""

    rule: str
    due: str
    overdue: bool
    detail: str
    passed: bool = False  # due, but not overdue: a deadline only shown (the GOP's), whose meeting we cannot see


@dataclass(frozen=True, slots=True)
class Row:
    patient: str  # as the viewer may see it
    patient_link: str | None  # the clinical role's link to the patient's trail (an opaque token, never the CPR)
    discharged: str
    risk_group: str
    stage: str
    department: str
    municipality: str
    referral: str  # to whom, which category; "-" before one
    acknowledged: str  # the referral's ack state
    hotline: str  # open / overdue
    closing: str
    handover: str
    markers: tuple[Marker, ...] = ()

    @property
    def overdue(self) -> bool:
        return any(m.overdue for m in self.markers)


@dataclass(frozen=True, slots=True)
class BoardFilter:
    municipality: str | None = None
    department: str | None = None
    status: str | None = None  # a Stage value, or "overdue"

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> BoardFilter:
        """The board's query parameters; ValueError (one line, never quoting them) for anything else."""
        unknown = sorted(set(query) - {"municipality", "department", "status"})
        if unknown:
            raise ValueError("unknown query parameter(s): the board filters by municipality, department, status")
        municipality = query.get("municipality") or None
        department = query.get("department") or None
        status = query.get("status") or None
        if municipality is not None and not MUNICIPALITY.fullmatch(municipality):
            raise ValueError("municipality must be a municipality code of three digits")
        if department is not None and (not SOR.fullmatch(department) or cpr_numbers_in(department)):
            raise ValueError("department must be a SOR code (6-20 digits; a CPR number is none)")
        if status is not None and status not in [s.value for s in Stage] + list(STATUSES):
            raise ValueError("status must be a stage of the pathway or 'overdue'")
        return cls(municipality, department, status)

    def keeps_courseless(self, unit: str | None = None) -> bool:
        """Whether a patient without a course (a possible missed referral) passes: no municipality or stage is
        known for one, so only the unfiltered board, the overdue filter and a department filter naming the unit
        it was discharged from (`unit`, a SOR id) show it."""
        return (
            self.municipality is None
            and (self.department is None or self.department == unit)
            and self.status in (None, "overdue")
        )

    def keeps(self, course: Course) -> bool:
        return (
            (self.municipality is None or course.municipality_code == self.municipality)
            and (self.department is None or course.referring_department == self.department)
            and (self.status is None or self.status in STATUSES or course.current.value == self.status)
        )


def _time(moment: datetime | None) -> str:
    """A moment in Danish time, to the minute."""
    return moment.astimezone(DANISH_TIME).isoformat(timespec="minutes") if moment else "-"


def stamp(at: str | datetime) -> str:
    """An audit record's or a message's time (ISO 8601 with an offset, or an aware datetime) in Danish time, to
    the second: every time on a page in one zone, whichever zone it was written in."""
    try:
        moment = at if isinstance(at, datetime) else datetime.fromisoformat(at)
    except ValueError:
        return "-"
    return moment.astimezone(DANISH_TIME).isoformat(timespec="seconds") if moment.tzinfo else "-"


def _grouped(markers: Sequence[Marker]) -> tuple[Marker, ...]:
    """One marker per rule: overdue when any of its deadlines is, due at the earliest, counted when several."""
    by_rule: dict[str, list[Marker]] = {}
    for marker in markers:
        by_rule.setdefault(marker.rule, []).append(marker)
    grouped = []
    for rule, same in by_rule.items():
        late = [m for m in same if m.overdue]
        first = min(late or same, key=lambda m: m.due)
        label = f"{rule} ×{len(same)}" if len(same) > 1 else rule
        grouped.append(Marker(label, first.due, bool(late), first.detail, any(m.passed for m in same)))
    return tuple(sorted(grouped, key=lambda m: (not m.overdue, m.due)))


def _ack(messages: Sequence[OutboundMessage]) -> str:
    referrals = [m for m in messages if m.output.routing_key.startswith("referral.")]
    if not referrals:
        return "-"
    last = max(referrals, key=lambda m: m.first_sent_at)
    states = {
        OutboundState.AWAITING: "awaiting ack",
        OutboundState.ACKNOWLEDGED: "acknowledged",
        OutboundState.FAILED: "error ack",
        OutboundState.GAVE_UP: "no ack (gave up)",
        OutboundState.STOPPED: "stopped (patient died)",
    }
    resent = f", resent {last.resends}x" if last.resends else ""
    return f"{states.get(last.state, str(last.state))}{resent}"


def _hotline(requests: Sequence[PendingRequest]) -> str:
    if not requests:
        return "none open"
    overdue = sum(1 for r in requests if r.overdue_noted)
    return f"{len(requests)} open" + (f", {overdue} overdue" if overdue else "")


def _closing(course: Course) -> str:
    if course.current is Stage.NOT_REFERRED:
        return "not referred"
    if course.current is Stage.CANCELLED:
        return "discharge withdrawn by the hospital"
    parts = []
    if course.municipal_status:
        parts.append("municipal status received")
    if course.hospital_done:
        parts.append("hospital closed its part")
    return ", ".join(parts) or "-"


def _handover(course: Course) -> str:
    if course.current is Stage.CANCELLED:  # nothing was handed over: the hospital withdrew the discharge
        return "discharge withdrawn by the hospital; GP responsible"
    if course.responsible == "gp":
        return "handed over to the GP"
    return "held by the hospital" + (" (follow-up)" if course.current is Stage.HOSPITAL_FOLLOW_UP else "")


def unit_names(mappings: Mappings) -> dict[str, str]:
    """The hospital units' names by SOR id (mappings/departments.yaml), for the board to show."""
    return {sor: department.organisation.name for sor, department in mappings.directory.departments.items()}


def unit_text(sor: str | None, names: Mapping[str, str], viewer: Viewer) -> str:
    """A unit as the board shows it: its name and SOR id when mappings/departments.yaml knows it, else the SOR."""
    if not sor:
        return "-"
    name = names.get(sor)
    return viewer.text(f"{name} ({sor})" if name else sor, 120)


def stage_text(course: Course, viewer: Viewer, names: Mapping[str, str] | None = None) -> str:
    """The stage as the board shows it: a course whose patient is back in hospital is marked paused, with the
    admitting unit (by name where `names` knows it) and since when (HospitalNotification STIN/STAA); a notified
    death is marked."""
    if course.deceased:
        return f"{course.current.value} (deceased)"
    if course.paused:
        unit = unit_text(course.admitted_to, names or {}, viewer)
        return f"{course.current.value}: paused, admitted to {unit} since {_time(course.admitted_since)}"
    return course.current.value


def board_rows(
    store: AuditStore,
    viewer: Viewer,
    wanted: BoardFilter,
    deadlines: Iterable[Deadline] = (),
    link: Callable[[str], str] | None = None,
    names: Mapping[str, str] | None = None,
) -> tuple[list[Row], list[str]]:
    """One row per course (every stage) the filter keeps, and one per patient with a deadline but no course (a
    possible missed referral, under the unit it was discharged from), the overdue ones first, then by discharge;
    and the patients shown (whose views are audited). `deadlines` are `pathway_watch.Deadline`s (rule, patient,
    due, overdue, subject, detail, unit); `names` the units' names by SOR id (`unit_names`)."""
    every = store.courses_at(list(Stage))
    courses = [c for c in every if wanted.keeps(c)]
    outbound: dict[str, list[OutboundMessage]] = {}
    for message in store.outbound_messages(list(OutboundState), bodies=False):
        if message.patient:
            outbound.setdefault(message.patient, []).append(message)
    requests: dict[str, list[PendingRequest]] = {}
    for request in store.open_requests():
        requests.setdefault(request.request.patient, []).append(request)
    markers: dict[str, list[Marker]] = {}
    units: dict[str, str] = {}  # a patient's unit from a deadline that names one (a missed referral's)
    for deadline in deadlines:
        if deadline.patient and deadline.unit:
            units.setdefault(deadline.patient, deadline.unit)
        if deadline.patient:
            markers.setdefault(deadline.patient, []).append(
                Marker(
                    deadline.rule,
                    _time(deadline.due),
                    bool(deadline.overdue),
                    viewer.text(deadline.detail),
                    bool(deadline.passed),
                )
            )
    rows = []
    for course in courses:
        grouped = _grouped(markers.get(course.patient, []))
        referral = course.referral
        row = Row(
            patient=viewer.patient(course.patient),
            patient_link=link(course.patient) if viewer.clinical and link else None,
            discharged=_time(course.discharged_at),
            risk_group=referral.risk_group if referral else "-",
            stage=stage_text(course, viewer, names),
            department=viewer.text(course.referring_department or "-", 40),
            municipality=viewer.text(course.municipality_code or "-", 10),
            referral=(
                f"{referral.category} to {viewer.text(referral.receiver, 40)}"
                + (
                    f" (municipality {viewer.text(referral.municipality_code, 10)})"
                    if referral.municipality_code
                    else ""
                )
                if referral
                else ("by the GP" if course.referrer == "gp" else "-")
            ),
            acknowledged=_ack(outbound.get(course.patient, [])),
            hotline=_hotline(requests.get(course.patient, [])),
            closing=_closing(course),
            handover=_handover(course),
            markers=grouped,
        )
        if wanted.status == "overdue" and not row.overdue:
            continue
        rows.append((row, course.patient, course.discharged_at is None))
    known = {course.patient for course in every}  # a course the filter left out is no missing course
    for patient, marks in markers.items():
        if patient not in known and wanted.keeps_courseless(units.get(patient)):
            row = _courseless_row(patient, _grouped(marks), viewer, link, units.get(patient))
            if wanted.status != "overdue" or row.overdue:
                rows.append((row, patient, True))
    rows.sort(key=lambda kept: (not kept[0].overdue, kept[2], kept[0].discharged))
    return [row for row, _, _ in rows], [patient for _, patient, _ in rows]


def _courseless_row(
    patient: str,
    markers: tuple[Marker, ...],
    viewer: Viewer,
    link: Callable[[str], str] | None,
    unit: str | None,
) -> Row:
    """A patient with a deadline but no course: a discharge home the hospital notified (HospitalNotification
    SLHJ) from a watched unit with no discharge event yet — a possible missed referral (`missed-referral`). Its
    department is that unit's SOR id (what the board's department filter matches)."""
    return Row(
        patient=viewer.patient(patient),
        patient_link=link(patient) if viewer.clinical and link else None,
        discharged="-",
        risk_group="-",
        stage="no course: discharged home, no discharge event",
        department=viewer.text(unit or "-", 40),
        municipality="-",
        referral="-",
        acknowledged="-",
        hotline="-",
        closing="-",
        handover="-",
        markers=markers,
    )


# -- messages --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TrailLine:
    seq: int
    at: str
    step: str
    flow: str
    message_id: str
    patient: str
    detail: str


@dataclass(frozen=True, slots=True)
class Shown:
    """One message we sent, readable: its route, ids, the narratives of its resources as text, the raw JSON."""

    routing_key: str
    message_id: str
    narratives: list[tuple[str, str]] = field(default_factory=list)  # (resource type, text)
    raw: str = ""


def names_message(record: AuditRecord, wanted: str) -> bool:
    """Whether `record` is about the message `wanted`: its own id, or an id of what it sent or was acked for."""
    return record.message_id == wanted or any(record.detail.get(key) == wanted for key in MESSAGE_FIELDS)


def message_records(store: AuditStore, wanted: str) -> list[AuditRecord]:
    """The records of the message `wanted` (a message-id, correlation id, MessageHeader id or Bundle id), with
    the records of the deliveries those name (an output's ack arrives as its own delivery)."""
    records = list(store.records())
    direct = [r for r in records if names_message(r, wanted)]
    keys = {r.message_id for r in direct}
    return [r for r in records if r.message_id in keys or names_message(r, wanted)]


def search(store: AuditStore, text: str | None, patient: str | None) -> list[tuple[str, str, str, int]]:
    """Messages found by an id (`text`) or by a patient: (message id, flow, first time, records), first seen
    first. ValueError for a search text that can be no id."""
    if text is not None and not SEARCHABLE.fullmatch(text):
        raise ValueError("search by a message id, correlation id or MessageHeader id (letters, digits, -:._|/)")
    keys = {
        record.message_id
        for record in store.records()
        if (text is not None and names_message(record, text)) or (patient is not None and record.patient == patient)
    } - {"-"}
    found: dict[str, list[AuditRecord]] = {}
    for record in store.records():  # a second pass: a message's records from before the one that named it too
        if record.message_id in keys:
            found.setdefault(record.message_id, []).append(record)
    return [(key, rs[0].flow, stamp(rs[0].at), len(rs)) for key, rs in found.items()]


def trail_lines(records: Iterable[AuditRecord], viewer: Viewer) -> list[TrailLine]:
    return [
        TrailLine(
            r.seq,
            stamp(r.at),
            viewer.text(r.step, 60),
            viewer.text(r.flow, 40),
            viewer.text(r.message_id, 120),
            viewer.patient(r.patient),
            viewer.detail(_shown_detail(r, viewer)),
        )
        for r in records
    ]


# -- DCS criteria suggested from codes (integration/domain/dcs_suggestions.py) ----------------------------
SUGGESTED = "fact:dcs-suggested"


@dataclass(frozen=True, slots=True)
class CriteriaSeen:
    """One event's DCS criteria: the clinician's, and those its codes suggested (criterion, codes, not ticked)."""

    at: str
    event_id: str
    clinician: list[str]
    suggested: list[tuple[str, str, bool]]


def criteria_seen(records: Iterable[AuditRecord], viewer: Viewer) -> list[CriteriaSeen]:
    """The `dcs-suggested` facts of a trail, first first, for the clinical role (they name diagnoses): the
    clinician's criteria beside the suggestions, each suggestion with its codes and whether the clinician
    ticked it. The operations role gets none."""
    if not viewer.clinical:
        return []
    seen = []
    for r in records:
        if r.step != SUGGESTED:
            continue
        not_ticked = {str(c) for c in _list(r.detail.get("notTicked"))}
        suggested = [
            (
                viewer.text(s.get("criterion"), 60),
                viewer.text(", ".join(map(str, _list(s.get("codes")))), 200),
                str(s.get("criterion")) in not_ticked,
            )
            for s in _list(r.detail.get("suggested"))
            if isinstance(s, Mapping)
        ]
        clinician = [viewer.text(c, 60) for c in _list(r.detail.get("clinicianCriteria"))]
        seen.append(CriteriaSeen(stamp(r.at), viewer.text(r.detail.get("eventId", "-"), 60), clinician, suggested))
    return seen


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _shown_detail(record: AuditRecord, viewer: Viewer) -> Mapping[str, Any]:
    """A record's detail as the viewer may see it: the codes of a `dcs-suggested` fact (diagnoses) to the
    clinical role only; operations sees which criteria were suggested."""
    if viewer.clinical or record.step != SUGGESTED:
        return record.detail
    suggested = [s.get("criterion") for s in _list(record.detail.get("suggested")) if isinstance(s, Mapping)]
    return {**record.detail, "suggested": suggested}


def outputs(store: AuditStore, records: Sequence[AuditRecord]) -> list[StoredOutput]:
    """What the deliveries of `records` sent, as stored for redelivery (the processed table)."""
    keys: list[tuple[str, str]] = []
    for r in records:
        if r.step == "received":  # stored under the sender-scoped key (the processor's `stored_key`), or the bare one
            source = r.detail.get("source")
            keys += [(r.flow, f"{source}/{r.message_id}")] if isinstance(source, str) and source else []
            keys.append((r.flow, r.message_id))
    keys = list(dict.fromkeys(keys))
    delivered = store.deliveries(keys)
    return [output for key in keys if (earlier := delivered.get(key)) for output in earlier.outputs]


def narrative_text(xhtml: str) -> str:
    """A FHIR narrative (`text.div`, XHTML) as plain text: parsed without entities or network, its text only
    (no markup of it reaches the page). Unparseable XHTML is shown as the string it is."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(xhtml.encode("utf-8"), parser)
    except etree.XMLSyntaxError:
        return xhtml
    return re.sub(r"[ \t]*\n\s*", "\n", " ".join(root.itertext())).strip()


def shown(output: StoredOutput) -> Shown:
    """One stored output readable: every resource's narrative (a FHIR message's entries, a document's too)."""
    raw = output.body.decode("utf-8", "replace")
    narratives: list[tuple[str, str]] = []
    try:
        document = orjson.loads(output.body)
    except orjson.JSONDecodeError:
        return Shown(output.routing_key, output.message_id, narratives, raw)
    _collect(document, narratives)
    pretty = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
    return Shown(output.routing_key, output.message_id, narratives, pretty)


def _collect(node: Any, into: list[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        text = node.get("text")
        if isinstance(text, dict) and isinstance(text.get("div"), str):
            into.append((str(node.get("resourceType", "?")), narrative_text(text["div"])))
        for value in node.values():
            _collect(value, into)
    elif isinstance(node, list):
        for value in node:
            _collect(value, into)


# -- throughput ------------------------------------------------------------------------------------------
def throughput(records: Iterable[AuditRecord], at: datetime) -> dict[str, dict[str, int]]:
    """Messages received and published per flow in the last hour and the last day before `at`, from the
    audit records: {"hour": {flow: n}, "day": {flow: n}} for `received`, and likewise `published`."""
    hour, day = at - timedelta(hours=1), at - timedelta(days=1)
    counts: dict[str, Counter[str]] = {k: Counter() for k in ("received-hour", "received-day", "sent-hour", "sent-day")}
    for record in records:
        if record.step not in ("received", "published"):
            continue
        try:
            when = datetime.fromisoformat(record.at)
        except (TypeError, ValueError):  # a value the service never writes (a blob in `at`): audit verify names it
            continue
        kind = "received" if record.step == "received" else "sent"
        if when >= day:
            counts[f"{kind}-day"][record.flow] += 1
            if when >= hour:
                counts[f"{kind}-hour"][record.flow] += 1
    return {key: dict(sorted(counter.items())) for key, counter in counts.items()}
