"""The MedCom messages received, the repository of duplicates: `medcom_received` (each Bundle received,
under its MessageHeader id, with its content digest) and `medcom_ack` (the ack the header was first
answered with).

A transmission under a MessageHeader id seen before is a resend: answered with the same ack when its
content is the same, refused when it is not (MedCom's acknowledgement rules).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from integration.adapters.sql.audit_state import StateDigests
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.domain.course import EarlierMessage, ReceivedMessage


class ReceivedMessages:
    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    def received(self, header_id: str) -> EarlierMessage | None:
        """The Bundles received under this MessageHeader id, their content digests and the first ack; None
        when the header was never seen."""
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(
                self._unit.sql("SELECT bundle_id, content_sha256 FROM medcom_received WHERE header_id = ?"),
                (header_id,),
            )
            rows = cursor.fetchall()
            bundles = frozenset(str(r[0]) for r in rows)
            contents = frozenset(str(r[1]) for r in rows if r[1] is not None)
            cursor.execute(self._unit.sql("SELECT code, ack FROM medcom_ack WHERE header_id = ?"), (header_id,))
            row = cursor.fetchone()
        if not bundles and row is None:
            return None
        code, ack = (None, None) if row is None else (str(row[0]), orjson.loads(row[1]))
        return EarlierMessage(bundles, code, ack, contents)

    def bundle_header(self, bundle_id: str) -> str | None:
        """The MessageHeader id the Bundle was received under, or None."""
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(self._unit.sql("SELECT header_id FROM medcom_received WHERE bundle_id = ?"), (bundle_id,))
            row = cursor.fetchone()
        return None if row is None else str(row[0])

    def save(self, cursor: Any, received: Sequence[ReceivedMessage], stamp: str) -> StateDigests:
        """Insert the Bundles not received before, and the first ack of each header; the digests of the
        rows inserted (none for a table where nothing was new)."""
        if not received:
            return {}
        bundles = [(r.bundle_id, r.header_id, stamp, r.content) for r in received]
        acks = [(r.header_id, r.code, orjson.dumps(r.ack).decode(), stamp) for r in received if r.ack and r.code]
        return {
            "medcom_received": self._unit.insert_new(cursor, "medcom_received", bundles),
            "medcom_ack": self._unit.insert_new(cursor, "medcom_ack", acks),
        }
