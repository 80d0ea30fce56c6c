"""What the MLLP listener answers to one HL7 v2 message: the decision behind each ACK, with its I/O behind ports.

A message goes through these steps, each of which may end it with its answer (HL7 v2.5 §2.9):
1. its MSH must be readable (else there is no one to answer: the connection is closed);
1a. its sender (MSH-3/MSH-4) must be one of the listener's (`AllowedSenders`) → else AR (CR) with ERR 103 at
   MSH-4 (or MSH-3), audited, never published;
2. too large → AR (enhanced mode: CE), never read whole;
3. message type, trigger, version, processing id we support (`SUPPORTED`) → else AR (CR) with ERR 200/201/
   203/202;
4. its control id (MSH-10) seen before from the same sending application and facility (the store's
   `hl7_received`): the same content → the ACK we sent then, nothing published again; other content → AR
   (CR) with ERR 205, audited;
5. its content read exactly as the consumer will read it (`Validate`: `dispatch.read_inbound`, the discharge
   queue's kind, its `read`) → an InvalidInput is AE (CE) with ERR naming the field (Hl7Problem's location
   and 0357 code);
6. published to the discharge flow with a publisher confirm (`Publish`) → only then AA (CA), and only then
   the receipt row and its audit record are written. The broker or the store unavailable (Transient,
   ConnectionLost, a confirm that does not come in time) → AR (CE) with ERR 207, nothing recorded as
   received: the sender sends again, and the message id (uuid5 of the sender and MSH-10, `message_id`)
   makes a second copy on the bus a redelivery to the consumer (decision 12).

Enhanced mode (MSH-15/16 valued): the accept ack is sent per MSH-15 (AL always, NE never, ER only when not
CA, SU only when CA; empty = AL). No application ack is ever sent on this connection: the application's work
(the referral flow) happens later on the bus, and its outcome travels as MedCom messages; see the decision
note. Every message that got as far as an MSH is audited, naming its sender, control id, trigger and ACK code.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from integration.errors import InvalidInput, Rejected
from integration.formats.adt import VERSIONS as ADT_VERSIONS
from integration.formats.er7 import ErrorCode
from integration.formats.er7_digest import content_digest as er7_content_digest
from integration.formats.hl7_ack import (
    HEADER_BYTES,
    AckCode,
    AckError,
    ErrorLocation,
    MshHeader,
    build_ack,
    read_header,
)
from integration.service.audit_chain import AuditEntry

FLOW = "discharge"
ER7_CONTENT_TYPE = "x-application/hl7-v2+er7"
# uuid5 namespace of our HL7 v2 message ids (decision 3: deterministic ids)
MESSAGE_ID_NAMESPACE = uuid.UUID("5d0b7a8e-6f0c-5d53-9a52-3c6f1b0e7a15")


@dataclass(frozen=True, slots=True)
class Supported:
    """What the listener takes: message type, triggers, versions (MSH-12.1), processing ids (MSH-11.1)."""

    message_type: str = "ADT"
    triggers: frozenset[str] = frozenset({"A03", "A08", "A11", "A13"})
    versions: frozenset[str] = ADT_VERSIONS  # the reader's (formats.adt): one table, v2.3 to v2.9
    processing_ids: frozenset[str] = frozenset({"P"})


SUPPORTED = Supported()
ANY_SENDER = "*"


@dataclass(frozen=True, slots=True)
class AllowedSenders:
    """The senders a listener takes messages from (`mllp_allowed_senders`). Each entry is a sending facility,
    compared with MSH-4 whole or with its first component (HD.1, the namespace id: `RHN` matches
    `RHN^1.2.208.176.1.1^ISO`), or `application@facility` (MSH-3 and MSH-4 compared the same way); `*` takes
    anyone. No entry: no one. MSH-3 and MSH-4 are the sender's own words (HL7 tables 0361 and 0362, kept by
    the receiver): this is a list of whom we expect, not proof of who connects; mutual TLS
    (`mllp_tls_client_ca_file`) and the network are what authenticate the connection."""

    entries: tuple[str, ...] = ()

    @property
    def anyone(self) -> bool:
        return ANY_SENDER in self.entries

    def refusal(self, header: MshHeader) -> AckError | None:
        """None when the sender is allowed; else the ERR: 103 (table value not found: MSH-4 is a value of
        table 0362, MSH-3 of 0361) at the field that is not on the list."""
        if self.anyone:
            return None
        facility = _hd_matches(header.sending_facility, header.component_separator)
        application = _hd_matches(header.sending_application, header.component_separator)
        facilities = {entry.rpartition("@")[2] for entry in self.entries}
        if not facilities & facility:
            what = "sending facility MSH-4 is not one this listener takes messages from (mllp_allowed_senders)"
            return AckError(ErrorCode.TABLE_VALUE_NOT_FOUND, what, ErrorLocation("MSH", 1, 4))
        for entry in self.entries:
            app, at, fac = entry.rpartition("@")
            if fac in facility and (not at or app in application):
                return None
        what = "sending application MSH-3 is not one this listener takes messages from (mllp_allowed_senders)"
        return AckError(ErrorCode.TABLE_VALUE_NOT_FOUND, what, ErrorLocation("MSH", 1, 3))


def _hd_matches(value: str, component_separator: str) -> set[str]:
    """The forms of an HD field (MSH-3, MSH-4) an entry may name: the field whole (its components joined by
    `^`, whatever the message's separator) and its namespace id; never an empty one."""
    parts = value.split(component_separator)
    return {form for form in ("^".join(parts).rstrip("^"), parts[0]) if form}


@dataclass(frozen=True, slots=True)
class Hl7Receipt:
    """One row of `hl7_received`: a message we published, and the ACK we sent for it (b"" when MSH-15 said
    none)."""

    sending_application: str
    sending_facility: str
    control_id: str
    content_sha256: str
    message_id: str
    ack_code: str
    ack: bytes


class ReceiptStore(Protocol):
    """The audit store as the listener uses it (integration.adapters.sql.store.SqlAuditStore)."""

    def hl7_receipt(self, sending_application: str, sending_facility: str, control_id: str) -> Hl7Receipt | None: ...

    def record_hl7_receipt(self, receipt: Hl7Receipt | None, entries: list[AuditEntry], at: datetime) -> None: ...


Validate = Callable[[bytes, datetime], None]  # raises InvalidInput (Hl7Problem) or Rejected for refused content
Publish = Callable[[bytes, str], None]  # body, message id; returns after the confirm; Transient/ConnectionLost
Clock = Callable[[], datetime]
NewControlId = Callable[[], str]


class Unavailable(Exception):
    """The broker or the store could not do its part now (the cause is chained): answered AR/CE 207."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What goes back on the connection (None: nothing, as MSH-15 asked) and what is logged about it."""

    ack: bytes | None
    code: AckCode
    control_id: str
    trigger: str
    error: str = ""  # the 0357 code and location, for the log line
    resent: bool = False


def message_id(header: MshHeader) -> str:
    """The AMQP message id of an HL7 v2 message: uuid5 of its sending application, facility and MSH-10, so a
    resend after a crash between the confirm and the receipt's row is a redelivery to the consumer."""
    name = "\x1f".join((header.sending_application, header.sending_facility, header.control_id))
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name))


def message_id_of(body: bytes) -> str | None:
    """The HL7 v2 message's own id (`message_id` of its MSH-3, MSH-4 and MSH-10) when `body` is ER7 with a
    control id, else None. The consumer keys an ER7 delivery by it whatever AMQP message-id it came with: a
    sender's message is its MSH-10, as a MedCom message is its MessageHeader.id (decision 27)."""
    text = body.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if not text.startswith(b"MSH"):
        return None
    header = read_header(text[:HEADER_BYTES])
    return message_id(header) if header is not None and header.control_id else None


def content_digest(raw: bytes) -> str:
    """What a resend must match to be the same message (hl7_received's content_sha256): the ER7 content digest
    (`integration.formats.er7_digest`: segment terminators, trailing delimiters and MSH-7 do not count), else the
    raw SHA-256."""
    return er7_content_digest(raw) or raw_digest(raw)


def raw_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _codes(enhanced: bool) -> tuple[AckCode, AckCode, AckCode]:
    """(accepted, content error, rejected) in the message's mode."""
    return (AckCode.CA, AckCode.CE, AckCode.CR) if enhanced else (AckCode.AA, AckCode.AE, AckCode.AR)


def _unavailable_code(enhanced: bool) -> AckCode:
    # Original mode: AR is "failed for reasons unrelated to its content (system down, internal error)" and the
    # sender may send it again (HL7 v2.5 2.9.2.2 c). Enhanced mode: CE, "cannot accept for any other reason".
    return AckCode.CE if enhanced else AckCode.AR


ACK_CONDITIONS = frozenset({"AL", "NE", "ER", "SU"})  # HL7 table 0155 (accept/application acknowledgment conditions)


def unknown_ack_condition(header: MshHeader) -> AckError | None:
    """The ERR for an MSH-15 or MSH-16 valued but not in table 0155: 103 at that field. Such a message is
    answered whatever it asked (a condition we cannot read must not silence the ACK: the sender would wait, or
    never hear of a refusal) and never published."""
    for number, value in ((15, header.accept_ack_type), (16, header.application_ack_type)):
        if value and value not in ACK_CONDITIONS:
            what = f"MSH-{number} is not an acknowledgment condition of HL7 table 0155 (AL, NE, ER, SU)"
            return AckError(ErrorCode.TABLE_VALUE_NOT_FOUND, what, ErrorLocation("MSH", 1, number))
    return None


def unsupported(header: MshHeader, supported: Supported = SUPPORTED) -> AckError | None:
    """The ERR for an acknowledgment condition not in table 0155, or a message type, trigger, version or
    processing id we do not take (HL7 v2.5 2.9.2.1)."""
    if (error := unknown_ack_condition(header)) is not None:
        return error
    if header.message_type != supported.message_type:
        what = f"message type MSH-9.1 is not one this listener takes ({supported.message_type})"
        return AckError(ErrorCode.UNSUPPORTED_MESSAGE_TYPE, what, ErrorLocation("MSH", 1, 9, 1, 1))
    if header.trigger not in supported.triggers:
        what = f"trigger event MSH-9.2 is not one this listener takes ({', '.join(sorted(supported.triggers))})"
        return AckError(ErrorCode.UNSUPPORTED_EVENT_CODE, what, ErrorLocation("MSH", 1, 9, 1, 2))
    if header.version_id not in supported.versions:
        what = f"version MSH-12 is not one this listener reads ({', '.join(sorted(supported.versions))})"
        return AckError(ErrorCode.UNSUPPORTED_VERSION_ID, what, ErrorLocation("MSH", 1, 12, 1, 1))
    if header.processing not in supported.processing_ids:
        what = f"processing id MSH-11 is not one this listener takes ({', '.join(sorted(supported.processing_ids))})"
        return AckError(ErrorCode.UNSUPPORTED_PROCESSING_ID, what, ErrorLocation("MSH", 1, 11, 1, 1))
    if not header.control_id:
        return AckError(
            ErrorCode.REQUIRED_FIELD_MISSING, "MSH-10 (message control id) is empty", ErrorLocation("MSH", 1, 10)
        )
    return None


def content_error(problem: Rejected) -> AckError:
    """The ERR for content the consumer would refuse: Hl7Problem's location and 0357 code when it has them
    (duck-typed: formats.er7 defines it), else the refusal's text alone (which names the field)."""
    code = ErrorCode.of(str(getattr(problem, "code", "") or ErrorCode.DATA_TYPE.value))
    segment = str(getattr(problem, "segment", "") or "")
    location = None
    if segment:
        location = ErrorLocation(
            segment,
            int(getattr(problem, "segment_sequence", 1) or 1),
            int(getattr(problem, "field_number", 0) or 0),
            int(getattr(problem, "repetition", 0) or 0),
            int(getattr(problem, "component", 0) or 0),
        )
    return AckError(code, str(problem), location)


def _wanted(header: MshHeader, accepted: bool) -> bool:
    """Whether MSH-15 asks for this accept ack (HL7 v2.5 table 0155); always in original mode."""
    if not header.enhanced_mode:
        return True
    condition = header.accept_ack_type or "AL"
    if condition not in ACK_CONDITIONS or header.application_ack_type not in ACK_CONDITIONS | {""}:
        return True  # unreadable: answered (unknown_ack_condition refuses it)
    return condition == "AL" or (condition == "ER" and not accepted) or (condition == "SU" and accepted)


@dataclass
class Intake:
    """The steps of the module's docstring over the listener's ports. `answer_*` are called from one worker
    thread (the store's and the broker's connections are not shared between threads)."""

    store: ReceiptStore
    validate: Validate
    publish: Publish
    clock: Clock
    new_control_id: NewControlId
    supported: Supported = field(default_factory=Supported)
    senders: AllowedSenders = field(default_factory=AllowedSenders)

    def _answer(self, header: MshHeader, code: AckCode, error: AckError | None = None) -> Answer:
        ack = build_ack(header, code, self.new_control_id(), self.clock(), (error,) if error else ())
        accepted = code in (AckCode.AA, AckCode.CA)
        where = ""
        if error is not None:
            place = error.location
            where = error.code.value + (f" at {place.segment}-{place.field}" if place and place.field else "")
        return Answer(ack if _wanted(header, accepted) else None, code, header.control_id, header.trigger, where)

    def _audit(
        self, header: MshHeader, answer: Answer, receipt: Hl7Receipt | None = None, not_published: str = ""
    ) -> None:
        detail = {
            "sendingApplication": header.sending_application,
            "sendingFacility": header.sending_facility,
            "controlId": header.control_id,
            "trigger": header.trigger,
            "ack": answer.code.value,
            "ackSent": answer.ack is not None,
            "mode": "enhanced" if header.enhanced_mode else "original",
        }
        if answer.error:
            detail["error"] = answer.error
        if answer.resent:
            detail["resent"] = True
        if not_published:
            detail["notPublished"] = not_published
        if header.application_ack_type in ("AL", "SU", "ER"):
            detail["applicationAck"] = "not sent: the message is processed later on the bus"
        entry = AuditEntry("hl7-received", FLOW, message_id(header), detail)
        self.store.record_hl7_receipt(receipt, [entry], self.clock())

    def refuse(self, header: MshHeader, error: AckError, content: bool = False) -> Answer:
        """A refusal, audited: AE/CE for content (`content`), AR/CR otherwise."""
        _, content_code, rejected = _codes(header.enhanced_mode)
        answer = self._answer(header, content_code if content else rejected, error)
        try:
            self._audit(header, answer)
        except Exception as exc:  # an unaudited refusal would be half-done: 207, and the sender sends again
            raise Unavailable("the audit store did not take the refusal's record") from exc
        return answer

    def unavailable(self, header: MshHeader, why: str) -> Answer:
        """AR (CE) with ERR 207: our side failed; the sender may send the message again. Builds the answer only
        (no I/O: it must go back at once); `record_unavailable` audits it when the store can."""
        error = AckError(
            ErrorCode.APPLICATION_INTERNAL_ERROR, f"not accepted now ({why}): send the message again later"
        )
        return self._answer(header, _unavailable_code(header.enhanced_mode), error)

    def record_unavailable(self, header: MshHeader, answer: Answer, why: str) -> None:
        """The audit record of a message not published because of an outage, whatever MSH-15 asked (an NE or SU
        sender got no ACK, and must be findable: the store may be up while the broker is down). Raises what the
        store raises when it is the one down (the caller logs it)."""
        self._audit(header, answer, not_published=why)

    def too_large(self, header: MshHeader, limit: int) -> Answer:
        if (refused := self.senders.refusal(header)) is not None:
            return self.refuse(header, refused)
        error = AckError(ErrorCode.VALUE_TOO_LONG, f"the message is larger than {limit} bytes (mllp_max_message_bytes)")
        return self.refuse(header, error)

    def check(self, header: MshHeader, raw: bytes) -> Answer | Hl7Receipt:
        """Steps 3 to 5: an Answer when the message ends here, else the receipt to publish it under.
        Raises Unavailable when the store does not answer."""
        if (refused := self.senders.refusal(header)) is not None:
            return self.refuse(header, refused)
        if (error := unsupported(header, self.supported)) is not None:
            return self.refuse(header, error)
        digest = content_digest(raw)
        try:
            earlier = self.store.hl7_receipt(header.sending_application, header.sending_facility, header.control_id)
        except Exception as exc:  # the store's outage, whatever its driver calls it: no ACK of ours may claim more
            raise Unavailable("the audit store did not answer") from exc
        if earlier is not None:  # rows written before the ER7 digest hold the raw SHA-256
            return self._earlier(header, earlier, digest if earlier.content_sha256 != raw_digest(raw) else None)
        try:
            self.validate(raw, self.clock())
        except (InvalidInput, Rejected) as problem:
            return self.refuse(header, content_error(problem), content=isinstance(problem, InvalidInput))
        accepted, _, _ = _codes(header.enhanced_mode)
        return Hl7Receipt(
            header.sending_application,
            header.sending_facility,
            header.control_id,
            digest,
            message_id(header),
            accepted.value,
            b"",
        )

    def _earlier(self, header: MshHeader, earlier: Hl7Receipt, digest: str | None) -> Answer:
        """A control id seen before: the same content (`digest` None: the same bytes) is a resend."""
        if digest is None or earlier.content_sha256 == digest:
            answer = Answer(
                earlier.ack or None, AckCode(earlier.ack_code), header.control_id, header.trigger, resent=True
            )
            try:
                self._audit(header, answer)
            except Exception as exc:
                raise Unavailable("the audit store did not take the resend's record") from exc
            return answer
        error = AckError(
            ErrorCode.DUPLICATE_KEY,
            "MSH-10 (message control id) was received before from this sender with other content",
            ErrorLocation("MSH", 1, 10),
        )
        return self.refuse(header, error)

    def accept(self, header: MshHeader, receipt: Hl7Receipt) -> Answer:
        """Step 6's end, after the confirm: the ACK, and the receipt's row with its audit record. Raises
        Unavailable when the store does not take them (the sender then gets 207 and sends again)."""
        answer = self._answer(header, AckCode(receipt.ack_code))
        stored = Hl7Receipt(
            receipt.sending_application,
            receipt.sending_facility,
            receipt.control_id,
            receipt.content_sha256,
            receipt.message_id,
            receipt.ack_code,
            answer.ack or b"",
        )
        try:
            self._audit(header, answer, stored)
        except Exception as exc:  # as in check: the row is not written, so no AA
            raise Unavailable("the audit store did not take the receipt") from exc
        return answer

    def publish_message(self, raw: bytes, receipt: Hl7Receipt) -> None:
        """Step 6: on the bus with a confirm; Transient or ConnectionLost when the broker does not take it."""
        self.publish(raw, receipt.message_id)
