"""The HL7 v2 messages the MLLP listener published, the repository of its duplicates: `hl7_received`, keyed by
the sending application, sending facility and control id (MSH-3, MSH-4, MSH-10), with the content digest, the
AMQP message id it was published under and the ACK we sent.

A message under a key seen before is a resend: answered with the same ACK when its content is the same,
refused (ERR 205) when it is not (`integration.service.hl7_intake`). A row is written only after the
publisher confirm, in one transaction with the audit record of its ACK.
"""

from __future__ import annotations

from typing import Any

from integration.adapters.sql.audit_state import StateDigests
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.formats.hl7_ack import CHARSET
from integration.service.hl7_intake import Hl7Receipt

TABLE = "hl7_received"


class Hl7Receipts:
    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    def receipt(self, sending_application: str, sending_facility: str, control_id: str) -> Hl7Receipt | None:
        """The message received under this key, or None."""
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(
                self._unit.sql(
                    "SELECT content_sha256, message_id, ack_code, ack FROM hl7_received "
                    "WHERE sending_application = ? AND sending_facility = ? AND control_id = ?"
                ),
                (sending_application, sending_facility, control_id),
            )
            row = cursor.fetchone()
        if row is None:
            return None
        digest, message_id, code, ack = row
        return Hl7Receipt(
            sending_application,
            sending_facility,
            control_id,
            str(digest),
            str(message_id),
            str(code),
            str(ack).encode(CHARSET),
        )

    def save(self, cursor: Any, receipt: Hl7Receipt, stamp: str) -> StateDigests:
        """Insert the receipt unless its key is there (a resend racing its first copy keeps the first)."""
        row = (
            receipt.sending_application,
            receipt.sending_facility,
            receipt.control_id,
            receipt.content_sha256,
            receipt.message_id,
            receipt.ack_code,
            receipt.ack.decode(CHARSET),
            stamp,
        )
        return {TABLE: self._unit.insert_new(cursor, TABLE, [row])}
