"""The pathway's golden scenarios (tests/golden/pathway/<scenario>/): one patient's events in order, each with
the flow it is sent to and when it is received (`scenario.json`), and what each must yield (`expected.json`):
the messages sent (summarised: route, MedCom event, what the ServiceRequest replaces or follows, the document's
handover), the refusal when it is refused, the audit facts, and the patient's course after it.

Shared by the in-memory run (tests/test_pathway_golden.py) and the run on the real broker
(tests/runtime/test_pathway_broker.py): both must give the same `expected.json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from integration.domain.course import Course
from integration.service.audit_chain import AuditEntry
from integration.service.hl7_intake import message_id_of
from integration.topology import SENDERS_BY_KIND
from tests.conftest import GOLDEN

SCENARIOS = sorted(p for p in (GOLDEN / "pathway").iterdir() if p.is_dir())
PATIENT = "2512489996"  # every scenario's patient
SENDER_OF_FLOW = {"discharge": "hospital", "gp-referral": "gp", "closing": "municipality", "hotline": "municipality"}
CONTENT_TYPE = {".json": "application/json", ".xml": "application/xml", ".er7": "x-application/hl7-v2+er7"}
FACTS_WITH_DETAIL = {
    "visitation": ("change",),
    "hotline-routed": ("outcome", "queue"),
    "discharge-updated": ("episode", "change"),
    "discharge-cancelled": ("episode", "trigger", "cancels"),
    "nothing-to-cancel": ("episode", "trigger", "stage"),
}


@dataclass(frozen=True, slots=True)
class Step:
    path: Path
    flow: str
    received_at: datetime

    @property
    def body(self) -> bytes:
        return self.path.read_bytes()

    @property
    def sender_user(self) -> str:
        return SENDERS_BY_KIND[SENDER_OF_FLOW[self.flow]].user

    @property
    def content_type(self) -> str:
        return CONTENT_TYPE[self.path.suffix]

    @property
    def message_id(self) -> str:
        """The sender's message-id: the event's, request's or report's own id (a replayed step reuses it); for HL7
        v2, the id the MLLP listener gives its MSH-10 (under MSH-3 and MSH-4), which the consumer keys it by."""
        text = self.body.decode()
        if self.path.suffix == ".er7":
            found = message_id_of(self.body)
            assert found
            return found
        if self.path.suffix == ".xml":
            found = re.search(r"<ReportId>([^<]+)</ReportId>", text)
            assert found
            return found.group(1)
        doc = json.loads(text)
        return str(doc.get("eventId") or doc["requestId"])


def patient(scenario: Path) -> str:
    """The scenario's patient as its course is filed: `patient` in scenario.json, else PATIENT."""
    return str(json.loads((scenario / "scenario.json").read_text()).get("patient", PATIENT))


def steps(scenario: Path) -> list[Step]:
    plan = json.loads((scenario / "scenario.json").read_text())
    return [Step(scenario / s["input"], s["flow"], datetime.fromisoformat(s["receivedAt"])) for s in plan["steps"]]


def _service_request(bundle: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"), None)


def _identifiers(references: Sequence[Mapping[str, Any]]) -> list[str]:
    return [r["identifier"]["value"] for r in references]


def _referral_summary(request: Mapping[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "serviceRequest": request["identifier"][0]["value"],
        "status": request["status"],
        "category": request["category"][0]["coding"][0]["code"],
        "elements": [d["coding"][0]["code"] for d in request.get("orderDetail", [])],
    }
    if request.get("replaces"):
        summary["replaces"] = _identifiers(request["replaces"])
    if request.get("basedOn"):
        summary["basedOn"] = _identifiers(request["basedOn"])
    return summary


def _fhir_summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    if doc["type"] == "document":
        composition = doc["entry"][0]["resource"]
        transferred = [e["valueBoolean"] for e in composition.get("extension", []) if "valueBoolean" in e]
        return {"document": composition["title"], "responsibilityTransferred": transferred}
    header = doc["entry"][0]["resource"]
    summary: dict[str, Any] = {"event": header["eventCoding"]["code"]}
    if request := _service_request(doc):
        summary.update(_referral_summary(request))
    communication = next(
        (e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Communication"), None
    )
    if communication is not None and communication.get("topic"):
        summary["topic"] = communication["topic"]["text"]
    return summary


def summarise_output(routing_key: str, body: bytes) -> dict[str, Any]:
    """One published message as the golden file records it."""
    doc = json.loads(body)
    if doc.get("resourceType") == "Bundle":
        return {"to": routing_key, **_fhir_summary(doc)}
    return {"to": routing_key, "json": doc.get("kind") or "advice-request"}


def summarise_course(course: Course | None) -> dict[str, Any] | None:
    if course is None:
        return None
    referral = course.referral
    return {
        "stage": course.current.value,
        "open": course.open,
        "responsible": course.responsible.value,
        "referrer": course.referrer.value,
        "gp": course.gp,
        "referral": None
        if referral is None
        else {
            "serviceRequest": referral.service_request,
            "receiver": referral.receiver,
            "category": referral.category,
            "riskGroup": referral.risk_group,
            "closingPlace": referral.closing_place,
        },
        "specialisedReferral": course.specialised_referral,
        "municipalStatus": course.municipal_status,
        "closedOn": course.closed_on.isoformat() if course.closed_on else None,
    }


def summarise_facts(records: Sequence[AuditEntry]) -> list[Any]:
    """The audit facts of one step: their kinds, with the detail that says what was decided."""
    facts: list[Any] = []
    for record in records:
        if not record.step.startswith("fact:"):
            continue
        kind = record.step.removeprefix("fact:")
        keys = FACTS_WITH_DETAIL.get(kind)
        facts.append({kind: {k: record.detail.get(k) for k in keys}} if keys else kind)
    return facts


def summarise_refusal(headers: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if headers is None:
        return None
    return {"reason": headers["x-rehab-reason-code"], "why": headers["x-rehab-reason"]}


def step_record(
    step: Step,
    outputs: Sequence[tuple[str, bytes]],
    refusal: Mapping[str, Any] | None,
    records: Sequence[AuditEntry],
    course: Course | None,
) -> dict[str, Any]:
    return {
        "input": step.path.name,
        "outgoing": [summarise_output(key, body) for key, body in outputs],
        "refused": summarise_refusal(refusal),
        "facts": summarise_facts(records),
        "course": summarise_course(course),
    }


def expected(scenario: Path) -> list[dict[str, Any]]:
    return json.loads((scenario / "expected.json").read_text())["steps"]


def write_expected(scenario: Path, records: list[dict[str, Any]]) -> None:
    text = json.dumps({"steps": records}, indent=2, ensure_ascii=False) + "\n"
    (scenario / "expected.json").write_text(text, encoding="utf-8")
