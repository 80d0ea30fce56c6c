"""The watched discharges' repository (`watched_episode`, schema 7): discharges home from a cardiology or
cardiac-surgery unit waiting for their discharge event (a possible missed referral, domain/missed_referral.py).

A row is keyed by the patient and the episode (`WatchKey`): an episode value is only a hospital's id of a stay.
A discharge home (HospitalNotification SLHJ) inserts or revises a row; its cancellation (AN_SLHJ) marks the same
patient's row cancelled, and so does the patient's notified death (every open row of theirs); a hospital's
discharge event that `matches` it marks it matched. Rows are never deleted: the open ones (neither matched nor
cancelled) are what `missed-referral` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from integration.adapters.sql.audit_state import StateDigests
from integration.adapters.sql.unit_of_work import UnitOfWork
from integration.domain.missed_referral import DischargeSeen, WatchedEpisode, WatchKey, matches

TABLE = "watched_episode"
COLUMNS = "patient, episode, unit, discharged_at, due_at, header_id, matched_by"
# A revision (RE_SLHJ) moves the discharge and its due time, and undoes a cancellation; a match stays.
UPSERT = (
    f"INSERT INTO {TABLE} (patient, episode, unit, discharged_at, due_at, header_id, watched_at, matched_by, "
    "matched_at, cancelled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (patient, episode) DO UPDATE SET "
    "unit = excluded.unit, discharged_at = excluded.discharged_at, "
    "due_at = excluded.due_at, header_id = excluded.header_id, cancelled_at = NULL, "
    f"matched_by = COALESCE({TABLE}.matched_by, excluded.matched_by), "
    f"matched_at = COALESCE({TABLE}.matched_at, excluded.matched_at)"
)


def _episode(row: Sequence[Any]) -> WatchedEpisode:
    return WatchedEpisode(
        patient=row[0],
        episode=row[1],
        unit=row[2],
        discharged_at=datetime.fromisoformat(row[3]),
        due=datetime.fromisoformat(row[4]),
        header=row[5],
        matched_by=row[6],
    )


class WatchedEpisodes:
    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit

    def open_episodes(self) -> list[WatchedEpisode]:
        """The watched discharges neither matched nor cancelled, the soonest due first."""
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(
                f"SELECT {COLUMNS} FROM {TABLE} WHERE matched_by IS NULL AND cancelled_at IS NULL ORDER BY due_at"
            )
            rows = cursor.fetchall()
        return sorted((_episode(r) for r in rows), key=lambda w: (w.due, w.episode, w.patient))

    def episode(self, patient: str, episode: str) -> WatchedEpisode | None:
        """One patient's watched discharge by its episode (cancelled or not), None when not watched."""
        with self._unit.transaction(write=False) as cursor:
            cursor.execute(
                self._unit.sql(f"SELECT {COLUMNS} FROM {TABLE} WHERE patient = ? AND episode = ?"), (patient, episode)
            )
            row = cursor.fetchone()
        return None if row is None else _episode(row)

    def save(self, cursor: Any, watched: Sequence[WatchedEpisode], stamp: str) -> StateDigests:
        """Insert or revise the watched discharges; the digests of their rows."""
        if not watched:
            return {}
        cursor.executemany(
            self._unit.sql(UPSERT),
            [
                (
                    w.patient,
                    w.episode,
                    w.unit,
                    w.discharged_at.isoformat(),
                    w.due.astimezone(UTC).isoformat(),
                    w.header,
                    stamp,
                    w.matched_by,
                    stamp if w.matched_by else None,
                )
                for w in watched
            ],
        )
        return {TABLE: self._unit.read_back(cursor, TABLE, {tuple(w.key) for w in watched})}

    def unwatch(self, cursor: Any, keys: Sequence[WatchKey], stamp: str) -> StateDigests:
        """Mark these patients' watches of these episodes cancelled (AN_SLHJ); the digests of their rows."""
        if not keys:
            return {}
        cursor.executemany(
            self._unit.sql(
                f"UPDATE {TABLE} SET cancelled_at = ? WHERE patient = ? AND episode = ? AND cancelled_at IS NULL"
            ),
            [(stamp, k.patient, k.episode) for k in keys],
        )
        return {TABLE: self._unit.read_back(cursor, TABLE, {tuple(k) for k in keys})}

    def withdraw_patients(self, cursor: Any, patients: Sequence[str], stamp: str) -> StateDigests:
        """Mark cancelled every open watch of these patients, whose death was notified (a dead patient is no
        missed referral); the digests of the rows changed."""
        keys: set[tuple[str, ...]] = set()
        for patient in patients:
            cursor.execute(
                self._unit.sql(
                    f"SELECT patient, episode FROM {TABLE} "
                    "WHERE patient = ? AND matched_by IS NULL AND cancelled_at IS NULL"
                ),
                (patient,),
            )
            keys.update(tuple(r) for r in cursor.fetchall())
        if not keys:
            return {}
        cursor.executemany(
            self._unit.sql(f"UPDATE {TABLE} SET cancelled_at = ? WHERE patient = ? AND episode = ?"),
            [(stamp, *k) for k in keys],
        )
        return {TABLE: self._unit.read_back(cursor, TABLE, keys)}

    def settle(self, cursor: Any, discharges: Sequence[DischargeSeen], stamp: str) -> StateDigests:
        """Mark matched every open watch of the patient that a discharge event `matches`; their rows' digests."""
        settled: set[tuple[str, ...]] = set()
        for seen in discharges:
            cursor.execute(
                self._unit.sql(
                    f"SELECT {COLUMNS} FROM {TABLE} WHERE patient = ? AND matched_by IS NULL AND cancelled_at IS NULL"
                ),
                (seen.patient,),
            )
            for watched in [_episode(r) for r in cursor.fetchall()]:
                if matches(watched, seen):
                    cursor.execute(
                        self._unit.sql(
                            f"UPDATE {TABLE} SET matched_by = ?, matched_at = ? WHERE patient = ? AND episode = ?"
                        ),
                        (seen.event_id, stamp, watched.patient, watched.episode),
                    )
                    settled.add(tuple(watched.key))
        return {TABLE: self._unit.read_back(cursor, TABLE, settled)} if settled else {}
