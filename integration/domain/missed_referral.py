"""A possible missed referral: a patient discharged home from a cardiology or cardiac-surgery unit (a MedCom
HospitalNotification SLHJ) with no discharge event for that stay (issue #15).

The agreement has every patient assessed for cardiac rehabilitation at discharge ("I forbindelse med
udskrivelse vurderes patienter i henhold til risikostratificering", Hjerterehabilitering Region Nordjylland
2021), so the hospital's discharge event is due at discharge. A discharge home from a watched unit opens a
`WatchedEpisode`; the discharge event that belongs to it (`matches`) settles it; the cancellation of the
discharge (AN_SLHJ) withdraws it; one still open at its `due` time is overdue (`missed-referral`,
service/pathway_watch.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

DEFAULT_AFTER = timedelta(hours=48)


@dataclass(frozen=True, slots=True)
class MissedReferralWatch:
    """Which units' discharges are watched (SOR ids, mappings/hospital-notifications.yaml `units`) and how long
    after the discharge a discharge event may come (`missedReferralAfter`, hours)."""

    units: frozenset[str] = frozenset()
    after: timedelta = DEFAULT_AFTER


NOT_WATCHING = MissedReferralWatch()  # no unit watched (the default of a pipeline built without the mapping)


class WatchKey(NamedTuple):
    """What identifies a watch: the patient (course key) and the episodeOfCare identifier's value. An episode
    value is only the hospital's id of a stay, so two patients' stays may carry the same one (the second attack
    on issue #15: another patient's SLHJ overwrote a watch keyed by the episode alone)."""

    patient: str
    episode: str


@dataclass(frozen=True, slots=True)
class WatchedEpisode:
    """One discharge home from a watched unit: `episode` the episodeOfCare identifier; `patient` the CPR number
    (the course key: never shown unmasked); `unit` the Encounter.serviceProvider SOR; `discharged_at` the
    Encounter's period.end (else the notification's time), with its zone; `due` when a discharge event should
    have come by (`discharged_at` + `after`); `header` the notification's MessageHeader id; `matched_by` the
    discharge event that settled it (None while open)."""

    episode: str
    patient: str
    unit: str
    discharged_at: datetime
    due: datetime
    header: str
    matched_by: str | None = None

    @property
    def window(self) -> timedelta:
        return self.due - self.discharged_at

    @property
    def key(self) -> WatchKey:
        return WatchKey(self.patient, self.episode)


@dataclass(frozen=True, slots=True)
class DischargeSeen:
    """A hospital's discharge event, as much as a watched episode needs of it: its id, the patient (course
    key), the department that sent it (SOR), its episode (None when the event names none) and dischargedAt."""

    event_id: str
    patient: str
    unit: str
    episode: str | None
    discharged_at: datetime


def watch(
    episode: str, patient: str, unit: str, discharged_at: datetime, header: str, rule: MissedReferralWatch
) -> WatchedEpisode | None:
    """The episode to watch, None when the unit is not a watched one."""
    if unit not in rule.units:
        return None
    return WatchedEpisode(episode, patient, unit, discharged_at, discharged_at + rule.after, header)


def matches(watched: WatchedEpisode, seen: DischargeSeen) -> bool:
    """Whether the discharge event belongs to the watched stay: the same episode of care where the event names
    one (issue #15: "joined to the discharge event by the episode-of-care identifier where both carry it");
    otherwise the same patient discharged from the same unit within the watch's window either side."""
    if seen.patient != watched.patient:
        return False
    if seen.episode is not None:
        return seen.episode == watched.episode
    return seen.unit == watched.unit and abs(seen.discharged_at - watched.discharged_at) <= watched.window


def is_overdue(watched: WatchedEpisode, at: datetime) -> bool:
    """Open (no discharge event matched it) at or after its due time. `at` must carry an offset."""
    return watched.matched_by is None and watched.due <= at
