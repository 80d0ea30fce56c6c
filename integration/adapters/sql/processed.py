"""The processed messages' repository: idempotency by key (flow, message-id or body hash).

`processed_message` holds each key processed, with the body's SHA-256 (a reused message-id is told
from a redelivery) and the outputs exactly as first published (a redelivery republishes them byte
for byte), each naming its body, stored once in `output_body` (bodies.py); `delivery_failure` counts how
often our side failed on a key, so attempts never depend on a header the sender could change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from integration.adapters.sql import audit_state, bodies
from integration.adapters.sql.audit_state import StateDigests
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.service.ports import EarlierDelivery, Failure, Processed, StoredOutput

Key = tuple[str, str]  # (flow, message-id or body hash)
INSERT_PROCESSED = "INSERT INTO processed_message (flow, message_id, body_sha256, at, outputs) VALUES (?, ?, ?, ?, ?)"
COUNT_FAILURE = (
    "INSERT INTO delivery_failure (flow, message_id, failures, last_error, at) "
    "VALUES (?, ?, 1, ?, ?) ON CONFLICT (flow, message_id) "
    "DO UPDATE SET failures = delivery_failure.failures + 1, "
    "last_error = excluded.last_error, at = excluded.at"
)


def outputs_json(outputs: Sequence[StoredOutput]) -> str:
    """The outputs as `processed_message.outputs` holds them: each body named by its digest (bodies.py)."""
    return orjson.dumps([bodies.reference(o) for o in outputs]).decode()


class ProcessedMessages:
    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit
        self._bodies = bodies.OutputBodies(unit)

    def deliveries(self, keys: Sequence[Key]) -> dict[Key, EarlierDelivery]:
        """What is known of each of `keys` (flow, key): processed (with its body hash and stored outputs),
        and how often our side failed on it. Keys the store never saw are left out."""
        if not keys:
            return {}
        processed: dict[Key, tuple[str | None, str, tuple[StoredOutput, ...]]] = {}
        failures: dict[Key, int] = {}
        with self._unit.transaction(write=False) as cursor:
            for flow in {f for f, _ in keys}:
                ids = sorted({m for f, m in keys if f == flow})
                processed.update(self._processed(cursor, flow, ids))
                failures.update(self._failures(cursor, flow, ids))
        found = {}
        for key in set(processed) | set(failures):
            if key in processed:
                digest, at, stored = processed[key]
                found[key] = EarlierDelivery(True, digest, at, stored, failures.get(key, 0))
            else:
                found[key] = EarlierDelivery(False, failures=failures[key])
        return found

    def _processed(
        self, cursor: Any, flow: str, ids: list[str]
    ) -> dict[Key, tuple[str | None, str, tuple[StoredOutput, ...]]]:
        marks = ", ".join("?" * len(ids))
        cursor.execute(
            self._unit.sql(
                "SELECT message_id, body_sha256, at, outputs FROM processed_message "
                f"WHERE flow = ? AND message_id IN ({marks})"
            ),
            (flow, *ids),
        )
        rows = [
            (message_id, digest, at, orjson.loads(outputs)) for message_id, digest, at, outputs in cursor.fetchall()
        ]
        named = self._bodies.load(cursor, bodies.wanted(doc for *_, docs in rows for doc in docs))
        return {
            (flow, message_id): (digest, at, tuple(bodies.stored_output(doc, named) for doc in docs))
            for message_id, digest, at, docs in rows
        }

    def _failures(self, cursor: Any, flow: str, ids: list[str]) -> dict[Key, int]:
        marks = ", ".join("?" * len(ids))
        cursor.execute(
            self._unit.sql(
                f"SELECT message_id, failures FROM delivery_failure WHERE flow = ? AND message_id IN ({marks})"
            ),
            (flow, *ids),
        )
        return {(flow, m): int(n) for m, n in cursor.fetchall()}

    def mark(self, cursor: Any, processed: Processed, stamp: str) -> StateDigests:
        """Mark messages processed with their outputs, whose bodies are stored once (bodies.py); a key already
        there fails the insert (StoreRefused), so the digests are of what was inserted."""
        state = self._bodies.save(cursor, (o.body for *_, outputs in processed for o in outputs))
        rows = [(flow, key, digest, stamp, outputs_json(outputs)) for flow, key, digest, outputs in processed]
        cursor.executemany(self._unit.sql(INSERT_PROCESSED), rows)
        return audit_state.merge(state, {"processed_message": audit_state.digest_rows("processed_message", rows)})

    def count_failures(self, cursor: Any, failures: Sequence[Failure], stamp: str) -> StateDigests:
        """Count one more failure of our side on each (flow, key), with its error."""
        if not failures:
            return {}
        cursor.executemany(self._unit.sql(COUNT_FAILURE), [(f.flow, f.key, f.error, stamp) for f in failures])
        keys = {(f.flow, f.key) for f in failures}
        return {"delivery_failure": self._unit.read_back(cursor, "delivery_failure", keys)}
