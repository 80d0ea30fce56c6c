"""The outbound tracking's repository (`outbound_message`): our MedCom messages, each tracked from its
first transmission until its ack comes (acknowledged, failed) or the resend job gives up on it (gave-up).
Its output names its body, stored once in `output_body` (bodies.py; inline in rows from before schema 8).

Times here are kept in UTC with microseconds, so that they compare as text in SQL across DST changes.
A late ack still settles a message given up on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from integration.adapters.sql import bodies
from integration.adapters.sql.audit_state import StateDigests, merge
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.domain.course import AckReceived, Addressee, OutboundState, OutboundStatus
from integration.messages.acknowledgement import receiver_of
from integration.service.ports import OutboundMessage, Processed, Resend, StoredOutput

SETTLE = (
    "UPDATE outbound_message SET state = ?, settled_at = ? WHERE header_id = ? AND state IN ('awaiting', 'gave-up')"
)
GIVE_UP = "UPDATE outbound_message SET state = 'gave-up', settled_at = ? WHERE header_id = ?"
MESSAGE_COLUMNS = "header_id, flow, output, first_sent_at, last_sent_at, resends, state, settled_at"
RESENT = "UPDATE outbound_message SET output = ?, last_sent_at = ?, resends = resends + 1 WHERE header_id = ?"


def utc(moment: datetime) -> str:
    """Outbound times in UTC with microseconds, so that they compare as text in SQL across DST changes."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class OutboundTracking:
    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit
        self._bodies = bodies.OutputBodies(unit)

    def outbound(self, header_id: str) -> OutboundStatus | None:
        """Where our message with this MessageHeader id stands, or None when it is not tracked; with whom it went
        to, read from the body as last sent (the row records no receiver of its own; rows from every schema
        version hold the body, inline or by digest). StoreDamaged when the body it names is not there."""
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(
                self._unit.sql("SELECT state, resends, output FROM outbound_message WHERE header_id = ?"), (header_id,)
            )
            row = cursor.fetchone()
            if row is None:
                return None
            doc = orjson.loads(row[2])
            output = bodies.stored_output(doc, self._bodies.load(cursor, bodies.wanted([doc])))
        return OutboundStatus(header_id, OutboundState(row[0]), int(row[1]), doc.get("patient"), _receiver(output.body))

    def outbound_count(self, state: OutboundState) -> int:
        """How many of our messages are in this state."""
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(self._unit.sql("SELECT COUNT(*) FROM outbound_message WHERE state = ?"), (str(state),))
            return int(cursor.fetchone()[0])

    def outbound_messages(
        self,
        states: Sequence[OutboundState],
        sent_before: datetime | None = None,
        limit: int | None = None,
        bodies: bool = True,
    ) -> list[OutboundMessage]:
        """Our messages in these states (last sent before `sent_before`), the longest waiting first; without
        `bodies`, each output's body is left out (b""), read a few rows at a time: what a count or a deadline
        needs, at a memory cost that does not grow with the messages' size."""
        marks = ", ".join("?" * len(states))
        where, params = f"state IN ({marks})", [str(s) for s in states]
        if sent_before is not None:
            where, params = where + " AND last_sent_at < ?", [*params, utc(sent_before)]
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(
                self._unit.sql(
                    f"SELECT {MESSAGE_COLUMNS} FROM outbound_message "
                    f"WHERE {where} ORDER BY last_sent_at" + (f" LIMIT {int(limit)}" if limit else "")
                ),
                tuple(params),
            )
            return self._messages(cursor, list(_rows(cursor)), bodies)

    def outbound_sent(self, header_ids: Sequence[str], bodies: bool = True) -> dict[str, OutboundMessage]:
        """Our messages with these MessageHeader ids, whatever their state, by id (ids not tracked left out);
        `bodies` as in `outbound_messages`."""
        wanted = sorted(set(header_ids))
        found: dict[str, OutboundMessage] = {}
        with self._unit.transaction(write=False) as cursor:
            for start in range(0, len(wanted), 500):  # well below every driver's limit of parameters
                chunk = wanted[start : start + 500]
                cursor.execute(
                    self._unit.sql(
                        f"SELECT {MESSAGE_COLUMNS} FROM outbound_message "
                        f"WHERE header_id IN ({', '.join('?' * len(chunk))})"
                    ),
                    tuple(chunk),
                )
                found.update((m.header_id, m) for m in self._messages(cursor, list(_rows(cursor)), bodies))
        return found

    def _messages(self, cursor: Any, rows: Sequence[Sequence[Any]], with_bodies: bool) -> list[OutboundMessage]:
        """The messages of these rows, each output's body read from `output_body` (or left out: b"")."""
        docs = [orjson.loads(row[2]) for row in rows]
        if not with_bodies:
            for doc in docs:
                doc.pop("bodySha256", None)
                doc["body"] = ""
        named = self._bodies.load(cursor, bodies.wanted(docs))
        return [_message(row, bodies.stored_output(doc, named)) for row, doc in zip(rows, docs, strict=True)]

    def track(self, cursor: Any, processed: Processed, sent_at: str) -> StateDigests:
        """Track those of the outputs that await an ack (`sent_at` in UTC), each naming its body (stored by
        `ProcessedMessages.mark` in this transaction); the digests of the rows inserted."""
        tracked = [
            (
                o.awaits_ack,
                flow,
                orjson.dumps(bodies.reference(o)).decode(),
                sent_at,
                sent_at,
                0,
                OutboundState.AWAITING.value,
                None,
            )
            for flow, _, _, outputs in processed
            for o in outputs
            if o.awaits_ack
        ]
        return {"outbound_message": self._unit.insert_new(cursor, "outbound_message", tracked)}

    def settle(
        self, cursor: Any, acks: Sequence[AckReceived], resends: Sequence[Resend], stamp: str, sent_at: str
    ) -> StateDigests:
        """Settle the messages acked, record the resends (and the decisions to give up, `body` None); the
        digests of the rows touched, as they now stand."""
        if acks:
            cursor.executemany(
                self._unit.sql(SETTLE),
                [(_settled(a.code).value, stamp, a.header_id) for a in acks],
            )
        state: StateDigests = {}
        for resend in resends:
            merge(state, self._resend(cursor, resend, stamp, sent_at))
        settled = {(a.header_id,) for a in acks} | {(r.header_id,) for r in resends}
        if settled:
            merge(state, {"outbound_message": self._unit.read_back(cursor, "outbound_message", settled)})
        return state

    def stop(self, cursor: Any, patients: Sequence[str], stamp: str) -> StateDigests:
        """Stop our messages awaiting an ack for these patients (who died): state `stopped`, never resent, a
        person follows them up (`OutboundState.needing_a_person`); the digests of the rows touched."""
        if not patients:
            return {}
        wanted = set(patients)
        cursor.execute(
            self._unit.sql("SELECT header_id, output FROM outbound_message WHERE state = ?"), (AWAITING.value,)
        )
        stopped = [(row[0],) for row in _rows(cursor) if orjson.loads(row[1]).get("patient") in wanted]
        cursor.executemany(
            self._unit.sql("UPDATE outbound_message SET state = ?, settled_at = ? WHERE header_id = ? AND state = ?"),
            [(OutboundState.STOPPED.value, stamp, key, AWAITING.value) for (key,) in stopped],
        )
        return {"outbound_message": self._unit.read_back(cursor, "outbound_message", set(stopped))} if stopped else {}

    def _resend(self, cursor: Any, resend: Resend, stamp: str, sent_at: str) -> StateDigests:
        """Record a resend (its body stored once, named by the row, which a row from before schema 8 then
        does too) or the decision to give up; the digests of the bodies stored."""
        if resend.body is None:
            cursor.execute(self._unit.sql(GIVE_UP), (stamp, resend.header_id))
            return {}
        cursor.execute(self._unit.sql("SELECT output FROM outbound_message WHERE header_id = ?"), (resend.header_id,))
        output = orjson.loads(cursor.fetchone()[0])
        output.pop("body", None)
        output["bodySha256"] = bodies.body_sha256(resend.body)
        cursor.execute(self._unit.sql(RESENT), (orjson.dumps(output).decode(), sent_at, resend.header_id))
        return self._bodies.save(cursor, [resend.body])


def _receiver(body: bytes) -> Addressee | None:
    """Whom our message went to, as its MessageHeader names them; None for a body that is no JSON (then no ack
    can be matched to it: `acks_received` refuses every one, rather than take one from anyone)."""
    try:
        return receiver_of(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def _rows(cursor: Any, size: int = 200) -> Iterator[Sequence[Any]]:
    """The query's rows, `size` at a time (never the whole answer in memory at once)."""
    while rows := cursor.fetchmany(size):
        yield from rows


def _message(row: Sequence[Any], output: StoredOutput) -> OutboundMessage:
    return OutboundMessage(
        row[0],
        row[1],
        output,
        datetime.fromisoformat(row[3]),
        datetime.fromisoformat(row[4]),
        int(row[5]),
        OutboundState(row[6]),
        datetime.fromisoformat(row[7]) if row[7] else None,
    )


AWAITING = OutboundState.AWAITING


def _settled(code: str) -> OutboundState:
    """An ack's code settles our message: `ok` acknowledged, any error failed (MedCom Acknowledgement 2.0)."""
    return OutboundState.ACKNOWLEDGED if code == "ok" else OutboundState.FAILED
