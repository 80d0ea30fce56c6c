"""The audit log as FHIR R4 AuditEvents in a Bundle (`integration audit export`), pure: records in, JSON out.

Shaped after IHE Basic Audit Log Patterns (BALP 1.1.x, https://profiles.ihe.net/ITI/BALP/), in base R4
only (no extension, no profile claimed: our agents carry no network address, which BALP's client and
server agents require):

- what: `type`, `subtype`, `action` and `outcome` per audit step from the table mappings/audit-events.yaml
  (DICOM DCM 110107 Import at a recipient and 110106 Export at a source, as
  IHE.BasicAudit.PrivacyDisclosure.Recipient / .Source use them; ISO 21089 lifecycle events as subtypes).
- who (`agent`, R4 requires `requestor`): for a received message its sender (the broker user that
  published it, DCM 110153 Source Role ID, the requestor) and this service (DCM 110152 Destination Role
  ID); for what we send, this service as the source and the routing key as the destination; for an
  operator's command the OS user (v3-ParticipationType IRCP information recipient, the requestor) and this
  service (DCM 110150 Application); for the service's own steps this service alone.
- observer (`source`): this service, security-source-type 4 Application Server.
- which patient (`entity`, BALP's patient slice): audit-entity-type 1 Person, object-role 1 Patient,
  `what` a Reference(Patient) by identifier: the CPR number under urn:oid:1.2.208.176.1.2, or the
  replacement number's system and value (docs/decisions/0017).
- which message (BALP's transaction slice, BasicAuditEntityType XrequestId): the message id the record
  is filed under.
- where in the chain: an entity (audit-entity-type 2 System Object, object-role 13 Security Resource)
  whose `what.identifier` is the record's hash as an RFC 6920 named-information URI (system
  urn:ietf:rfc:3986) and whose `detail` holds `seq`, `hash` and `prevHash` as `audit verify` shows them.
- `recorded`: the record's own time; `text` a generated narrative (R4 dom-6) without the patient. Ids:
  uuid5 of the record's hash (integration/fhir/ids.py), so the same record always exports as the same
  AuditEvent.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from integration.domain.cpr import CPR_SYSTEM
from integration.errors import ConfigurationError
from integration.fhir.ids import derived_id
from integration.fhir.narrative import narrative
from integration.service.audit_chain import AuditRecord

SERVICE = "rehab-integration"  # this service, as agent and observer
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ACTIONS = frozenset({"C", "R", "U", "D", "E"})  # R4 audit-event-action (required)
OUTCOMES = frozenset({0, 4, 8, 12})  # R4 audit-event-outcome (required)
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


ROLE_SOURCE = _coding(DCM, "110153", "Source Role ID")
ROLE_DESTINATION = _coding(DCM, "110152", "Destination Role ID")
ROLE_APPLICATION = _coding(DCM, "110150", "Application")
ROLE_RECIPIENT = _coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", "information recipient")
SOURCE_TYPE = _coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")
PATIENT_ENTITY = (_coding(ENTITY_TYPE, "1", "Person"), _coding(OBJECT_ROLE, "1", "Patient"))
CHAIN_ENTITY = (_coding(ENTITY_TYPE, "2", "System Object"), _coding(OBJECT_ROLE, "13", "Security Resource"))
# BALP terms.fsh: "transport specific unique identifier where http X-Request-Id is used"; ours is the AMQP
# message-id the record is filed under, the same kind of transport identifier
TRANSACTION_ENTITY = _coding(
    BALP_ENTITY_TYPE, "XrequestId", "transport specific unique identifier where http X-Request-Id is used"
)
IMPORT, EXPORT = "110107", "110106"


@dataclass(frozen=True, slots=True)
class StepCodes:
    """One row of mappings/audit-events.yaml: AuditEvent.type, .subtype, .action and .outcome."""

    type: Mapping[str, str]
    subtype: tuple[Mapping[str, str], ...]
    action: str
    outcome: int


@dataclass(frozen=True, slots=True)
class EventCodes:
    """The table: audit step → its codes. `from_mapping` reads the YAML document (ConfigurationError, naming
    the step, for a coding not defined, an action or outcome R4 does not have)."""

    steps: Mapping[str, StepCodes]

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> EventCodes:
        codings = doc.get("codings")
        steps = doc.get("steps")
        if not isinstance(codings, dict) or not isinstance(steps, dict):
            raise ConfigurationError("audit-events.yaml: needs the tables `codings` and `steps`")

        def coding(name: Any, step: str) -> Mapping[str, str]:
            found = codings.get(name)
            if not isinstance(found, dict) or not {"system", "code", "display"} <= found.keys():
                raise ConfigurationError(f"audit-events.yaml: step {step}: no coding {name!r} (system, code, display)")
            return {key: str(found[key]) for key in ("system", "code", "display")}

        table = {}
        for step, row in steps.items():
            if not isinstance(row, dict):
                raise ConfigurationError(f"audit-events.yaml: step {step}: expected type, subtype, action, outcome")
            action, outcome = row.get("action"), row.get("outcome", 0)
            if action not in ACTIONS:
                raise ConfigurationError(f"audit-events.yaml: step {step}: action must be one of C, R, U, D, E")
            if outcome not in OUTCOMES:
                raise ConfigurationError(f"audit-events.yaml: step {step}: outcome must be 0, 4, 8 or 12")
            subtypes = tuple(coding(name, step) for name in row.get("subtype") or ())
            table[str(step)] = StepCodes(coding(row.get("type"), step), subtypes, str(action), int(outcome))
        return cls(table)

    def codes(self, step: str) -> StepCodes:
        """The step's codes; KeyError for a step the table does not have."""
        return self.steps[step]


def unmapped(records: Sequence[AuditRecord], codes: EventCodes) -> list[str]:
    """The steps of `records` the table does not map, sorted (an export of them would have to guess)."""
    return sorted({record.step for record in records} - codes.steps.keys())


def patient_identifier(key: str) -> dict[str, str]:
    """The identifier of the patient the audit files under `key`: ten digits are a CPR number; a
    replacement number is filed as `system|value` (docs/decisions/0017)."""
    system, bar, value = key.partition("|")
    if bar:
        return {"system": system, "value": value}
    return {"system": CPR_SYSTEM, "value": key}


def _named_information(digest_hex: str) -> str:
    """A SHA-256 digest as an RFC 6920 `ni` URI (base64url, no padding)."""
    raw = bytes.fromhex(digest_hex) if len(digest_hex) == 64 else digest_hex.encode()
    return "ni:///sha-256;" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _service(role: Mapping[str, str], requestor: bool) -> dict[str, Any]:
    return {"type": {"coding": [dict(role)]}, "who": {"display": SERVICE}, "name": SERVICE, "requestor": requestor}


def _agents(record: AuditRecord, codes: StepCodes, sender: str | None) -> list[dict[str, Any]]:
    """Who: the OS user of an operator's command, a message's sender, our service (see the module)."""
    detail = record.detail
    board_user = _text(detail.get("boardUser"))
    if board_user is not None:  # the board's user read it, through the board's process (its OS user as altId)
        role = _text(detail.get("boardRole")) or "?"
        viewer: dict[str, Any] = {
            "type": {"coding": [dict(ROLE_RECIPIENT)]},
            "who": {"identifier": {"value": board_user}, "display": f"{board_user} (board, {role})"},
            "name": board_user,
            "requestor": True,
        }
        if _text(detail.get("by")) is not None:
            viewer["altId"] = f"os:{detail['by']}"
        return [viewer, _service(ROLE_APPLICATION, False)]
    user = _text(detail.get("by"))
    if user is not None:
        person: dict[str, Any] = {
            "type": {"coding": [dict(ROLE_RECIPIENT)]},
            "who": {"identifier": {"value": user}, "display": user},
            "name": _text(detail.get("login")) or user,
            "requestor": True,
        }
        if isinstance(detail.get("uid"), int):
            person["altId"] = str(detail["uid"])
        return [person, _service(ROLE_APPLICATION, False)]
    code = codes.type.get("code")
    if code == IMPORT and sender is not None:
        party = {"type": {"coding": [dict(ROLE_SOURCE)]}, "who": {"display": sender}, "name": sender, "requestor": True}
        return [party, _service(ROLE_DESTINATION, False)]
    destination = _text(detail.get("routingKey"))
    if code == EXPORT and destination is not None:
        to = {"type": {"coding": [dict(ROLE_DESTINATION)]}, "who": {"display": destination}, "requestor": False}
        return [_service(ROLE_SOURCE, True), to]
    return [_service(ROLE_APPLICATION, True)]


def _entities(record: AuditRecord) -> list[dict[str, Any]]:
    """The patient (when the record names one), the message (when it has an id), the chain position."""
    entities: list[dict[str, Any]] = []
    if record.patient:
        kind, role = PATIENT_ENTITY
        entities.append(
            {
                "what": {"type": "Patient", "identifier": patient_identifier(record.patient)},
                "type": dict(kind),
                "role": dict(role),
            }
        )
    if record.message_id and record.message_id != "-":
        entities.append({"what": {"identifier": {"value": record.message_id}}, "type": dict(TRANSACTION_ENTITY)})
    kind, role = CHAIN_ENTITY
    entities.append(
        {
            "what": {"identifier": {"system": "urn:ietf:rfc:3986", "value": _named_information(record.hash)}},
            "type": dict(kind),
            "role": dict(role),
            "name": f"audit_log record {record.seq}",
            "description": f"{record.flow}: {record.step}",
            "detail": [
                {"type": "seq", "valueString": str(record.seq)},
                {"type": "hash", "valueString": record.hash},
                {"type": "prevHash", "valueString": record.prev_hash},
            ],
        }
    )
    return entities


def audit_event(record: AuditRecord, codes: StepCodes, sender: str | None = None) -> dict[str, Any]:
    """One record as an AuditEvent (R4). `sender` is the broker user who sent the record's message, when
    known (its `received` record says)."""
    resource_id = derived_id(record.hash, "AuditEvent")
    shown = [
        ("record", record.seq),
        ("step", f"{record.flow}: {record.step}"),
        ("type", codes.type.get("display")),
        ("outcome", codes.outcome),
        ("recorded", record.at),
    ]
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": resource_id,
        "text": narrative("AuditEvent", resource_id, shown),  # dom-6; never the patient
        "type": dict(codes.type),
    }
    if codes.subtype:
        event["subtype"] = [dict(coding) for coding in codes.subtype]
    event |= {"action": codes.action, "recorded": record.at, "outcome": str(codes.outcome)}
    why = _text(record.detail.get("reason")) or _text(record.detail.get("error"))
    if why and codes.outcome:
        event["outcomeDesc"] = why
    event["agent"] = _agents(record, codes, sender)
    event["source"] = {"site": SERVICE, "observer": {"display": SERVICE}, "type": [dict(SOURCE_TYPE)]}
    event["entity"] = _entities(record)
    return event


def senders(records: Sequence[AuditRecord]) -> dict[tuple[str, str], str]:
    """(flow, message id) → the broker user its `received` record names (`source`)."""
    found: dict[tuple[str, str], str] = {}
    for record in records:
        source = _text(record.detail.get("source")) if record.step == "received" else None
        if source is not None:
            found.setdefault((record.flow, record.message_id), source)
    return found


def audit_bundle(records: Sequence[AuditRecord], codes: EventCodes, export: AuditRecord) -> dict[str, Any]:
    """A Bundle of type `collection` (R4: a set of resources with no processing obligation, as an export
    is) holding one AuditEvent per record, in chain order; `export` is this export's own record (its hash
    gives the Bundle's id, its time the timestamp). KeyError for a step the table does not map
    (`unmapped` says which before)."""
    by_message = senders(records)
    entries = []
    for record in records:
        event = audit_event(record, codes.codes(record.step), by_message.get((record.flow, record.message_id)))
        entries.append({"fullUrl": f"urn:uuid:{event['id']}", "resource": event})
    return {
        "resourceType": "Bundle",
        "id": derived_id(export.hash, "audit-export"),
        "type": "collection",
        "timestamp": export.at,
        "entry": entries,
    }
