"""A possible missed referral (issue #15): the rule (domain/missed_referral.py) at its boundaries, the
HospitalNotification flow that watches a discharge home from a cardiology unit, the discharge event that
settles it, and mappings/hospital-notifications.yaml refused where it is wrong."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.domain.course import Course, FixedState, Responsible, Stage
from integration.domain.missed_referral import (
    DischargeSeen,
    MissedReferralWatch,
    WatchedEpisode,
    WatchKey,
    is_overdue,
    matches,
)
from integration.errors import ConfigurationError
from integration.flows.dispatch import Pipeline, transform
from integration.flows.results import FlowResult
from integration.mappings import load_mappings
from tests.conftest import GOLDEN
from tests.hospital_notifications import as_new_message, example, for_patient

PATIENT, OTHER = "2512489996", "0101010101"
CARDIOLOGY, ELSEWHERE = "715541000016001", "265161000016000"  # SLHJ_H's own unit is not a watched one
EPISODE = "d3d03544-f116-4070-a823-d5c64e6a7c46"  # SLHJ_H's stay
ENDED = datetime.fromisoformat("2023-03-07T09:45:30+01:00")  # SLHJ_H's Encounter.period.end
NOW = datetime.fromisoformat("2026-11-28T10:00:00+01:00")
WINDOW = timedelta(hours=48)
WATCHED = WatchedEpisode(EPISODE, PATIENT, CARDIOLOGY, ENDED, ENDED + WINDOW, "h-1")


def seen(
    episode: str | None = None, unit: str = CARDIOLOGY, at: datetime = ENDED, patient: str = PATIENT
) -> DischargeSeen:
    return DischargeSeen("event-1", patient, unit, episode, at)


# -- the rule ---------------------------------------------------------------------------------------------------
def test_overdue_from_the_due_time_to_the_second_and_never_once_matched() -> None:
    due = ENDED + WINDOW
    assert not is_overdue(WATCHED, due - timedelta(seconds=1))
    assert is_overdue(WATCHED, due) and is_overdue(WATCHED, due.astimezone(datetime.now().astimezone().tzinfo))
    assert not is_overdue(replace(WATCHED, matched_by="event-1"), due + timedelta(days=30))


def test_a_discharge_event_naming_the_episode_matches_whatever_its_unit_and_time() -> None:
    assert matches(WATCHED, seen(EPISODE, unit=ELSEWHERE, at=ENDED + timedelta(days=40)))
    assert not matches(WATCHED, seen("another-stay"))  # another episode: another stay, even same unit and time
    assert not matches(WATCHED, seen(EPISODE, patient=OTHER))


@pytest.mark.parametrize(
    ("unit", "offset", "expected"),
    [
        (CARDIOLOGY, timedelta(0), True),
        (CARDIOLOGY, WINDOW, True),  # the window's edge, either side
        (CARDIOLOGY, -WINDOW, True),
        (CARDIOLOGY, WINDOW + timedelta(seconds=1), False),
        (CARDIOLOGY, -WINDOW - timedelta(seconds=1), False),
        (ELSEWHERE, timedelta(0), False),
    ],
)
def test_without_an_episode_the_same_patient_from_the_same_unit_within_the_window_matches(
    unit: str, offset: timedelta, expected: bool
) -> None:
    assert matches(WATCHED, seen(None, unit=unit, at=ENDED + offset)) is expected
    assert not matches(WATCHED, seen(None, unit=unit, at=ENDED + offset, patient=OTHER))


# -- the flow ---------------------------------------------------------------------------------------------------
def _slhj(shared: Path, unit: str = CARDIOLOGY, activity: str | None = None, seed: str = "s") -> dict[str, Any]:
    """SLHJ_H about PATIENT, discharged from `unit`; `activity` another discharge activity (cancel-…, revise-…)."""
    text = json.dumps(for_patient(example(shared, "SLHJ_H"), PATIENT)).replace(ELSEWHERE, unit)
    bundle = as_new_message(json.loads(text), seed)
    if activity is not None:
        header = bundle["entry"][0]["resource"]["id"]
        for entry in bundle["entry"]:
            r = entry["resource"]
            if r["resourceType"] == "Provenance" and r["target"][0]["reference"].endswith(header):
                r["activity"]["coding"][0]["code"] = activity
    return dict(bundle)


def _run(bundle: dict[str, Any], pipeline: Pipeline, course: Course | None = None) -> FlowResult:
    state = FixedState(courses={PATIENT: course} if course else {})
    result = transform(json.dumps(bundle).encode(), pipeline, NOW, "discharge", state)
    assert isinstance(result, FlowResult), result
    return result


def _facts(result: FlowResult, kind: str) -> list[dict[str, Any]]:
    return [dict(f.detail) for f in result.facts if f.kind == kind]


def test_a_discharge_home_from_a_cardiology_unit_is_watched_for_48_hours(shared: Path, pipeline: Pipeline) -> None:
    bundle = _slhj(shared)
    result = _run(bundle, pipeline)
    (watched,) = result.state.watched
    assert watched == WatchedEpisode(
        EPISODE, PATIENT, CARDIOLOGY, ENDED, ENDED + WINDOW, bundle["entry"][0]["resource"]["id"]
    )
    (fact,) = _facts(result, "discharge-watched")
    assert fact["unit"] == CARDIOLOGY and fact["dischargedAt"] == ENDED.isoformat() and fact["matchedBy"] is None
    assert PATIENT not in json.dumps([dict(f.detail) for f in result.facts])


def test_a_revised_discharge_home_is_watched_too(shared: Path, pipeline: Pipeline) -> None:
    (watched,) = _run(_slhj(shared, activity="revise-discharge-inpatient-home"), pipeline).state.watched
    assert watched.episode == EPISODE


def test_a_discharge_from_a_unit_not_listed_or_an_admission_is_not_watched(shared: Path, pipeline: Pipeline) -> None:
    assert _run(_slhj(shared, unit=ELSEWHERE), pipeline).state.watched == ()
    stin = as_new_message(for_patient(example(shared, "STIN_A"), PATIENT), "stin")
    result = _run(json.loads(json.dumps(stin).replace(ELSEWHERE, CARDIOLOGY)), pipeline)
    assert result.state.watched == () and result.state.unwatched == ()


def test_a_cancelled_discharge_home_withdraws_the_watch(shared: Path, pipeline: Pipeline) -> None:
    result = _run(_slhj(shared, activity="cancel-discharge-inpatient-home"), pipeline)
    # only this patient's watch of the episode: an episode value is no key across patients (second attack, M11)
    assert result.state.watched == () and result.state.unwatched == (WatchKey(PATIENT, EPISODE),)
    assert _facts(result, "discharge-unwatched") == [
        {"header": result.facts[0].detail["header"], "unit": CARDIOLOGY, "episode": EPISODE}
    ]


def test_a_discharge_home_of_a_patient_whose_death_was_notified_is_not_watched(
    shared: Path, pipeline: Pipeline
) -> None:
    dead = Course(PATIENT, "", "", False, Responsible.GP, Stage.CLOSED, deceased=True)
    result = _run(_slhj(shared), pipeline, dead)
    assert result.state.watched == () and _facts(result, "discharge-watched") == []
    assert [f.kind for f in result.facts][-1] == "acknowledged"


def test_a_death_withdraws_the_patients_watches_through_the_stopped_patient(shared: Path, pipeline: Pipeline) -> None:
    # the other order: the store cancels the open watches of a patient in StateChanges.stopped
    # (tests/runtime/test_watched_episode_store.py)
    mors = as_new_message(for_patient(example(shared, "MORS_K"), PATIENT), "mors")
    assert _run(mors, pipeline).state.stopped == (PATIENT,)


def test_a_discharge_event_that_came_first_settles_the_watch_at_once(shared: Path, pipeline: Pipeline) -> None:
    course = Course(
        PATIENT,
        CARDIOLOGY,
        "851",
        True,
        Responsible.HOSPITAL,
        Stage.MUNICIPAL,
        discharge_event="event-0",
        discharged_at=ENDED - timedelta(hours=1),
    )
    (watched,) = _run(_slhj(shared), pipeline, course).state.watched
    assert watched.matched_by == "event-0"
    # a discharge event of an older stay (outside the window) or from another unit does not
    for older in (
        replace(course, discharged_at=ENDED - WINDOW - timedelta(minutes=1)),
        replace(course, referring_department=ELSEWHERE),
    ):
        (watched,) = _run(_slhj(shared), pipeline, older).state.watched
        assert watched.matched_by is None
    # the course keeps its discharge's episode of care: the same episode matches wherever and whenever it was
    # discharged; another episode does not, however close in unit and time (joined by the episode where both
    # carry it)
    far = replace(course, episode=EPISODE, referring_department=ELSEWHERE, discharged_at=ENDED - 2 * WINDOW)
    (watched,) = _run(_slhj(shared), pipeline, far).state.watched
    assert watched.matched_by == "event-0"
    (watched,) = _run(_slhj(shared), pipeline, replace(course, episode="another-stay")).state.watched
    assert watched.matched_by is None


def test_a_hospitals_discharge_event_is_offered_to_the_watch_with_its_episode(pipeline: Pipeline) -> None:
    event = json.loads(
        (
            GOLDEN / "pathway" / "10-municipal-course-closed-at-the-hospital" / "01-discharge-control-at-end.json"
        ).read_text()
    )
    event["episodeOfCare"] = EPISODE
    result = transform(json.dumps(event).encode(), pipeline, NOW, "discharge")
    assert isinstance(result, FlowResult)
    (offered,) = result.state.discharges
    assert offered == DischargeSeen(
        event["eventId"], PATIENT, CARDIOLOGY, EPISODE, datetime.fromisoformat(event["admission"]["dischargedAt"])
    )


# -- the mapping ------------------------------------------------------------------------------------------------
def test_the_mapping_names_the_cardiology_departments_and_48_hours() -> None:
    watch = load_mappings(Path("mappings")).missed_referral
    assert watch == MissedReferralWatch(frozenset({CARDIOLOGY, "715581000016005", "716141000016004"}), WINDOW)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.pop("missedReferralAfter"), "lacks the key 'missedReferralAfter'"),
        (lambda d: d.pop("units"), "lacks the key 'units'"),
        (lambda d: d.update(missedReferralAfter="48h"), "missedReferralAfter is not a number of hours"),
        (lambda d: d.update(missedReferralAfter=0), "missedReferralAfter is not a number of hours"),
        (lambda d: d.update(missedReferralAfter=True), "missedReferralAfter is not a number of hours"),
        (lambda d: d.update(units={"sor": CARDIOLOGY}), "units is not a list"),
        (lambda d: d["units"].append("715541000016001"), r"units\[3\] is not a table"),
        (lambda d: d["units"].append({"sor": "cardiology"}), r"units\[3\].sor is not a SOR id"),
        (lambda d: d["units"].append({"sor": CARDIOLOGY}), rf"units\[3\].sor {CARDIOLOGY} appears twice"),
        (lambda d: d["units"].append({"sor": "1", "ward": "x"}), r"units\[3\] has unknown keys \['ward'\]"),
    ],
)
def test_a_wrong_mapping_is_a_configuration_error_naming_the_key(tmp_path: Path, change: Any, expected: str) -> None:
    folder = tmp_path / "mappings"
    shutil.copytree("mappings", folder)
    path = folder / "hospital-notifications.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ConfigurationError, match=expected):
        load_mappings(folder)
