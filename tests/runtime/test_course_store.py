"""The courses in the audit store on both real databases (schema 5): every field of a Course round-trips
exactly, the pathway is canonical JSON, rows from before read as the defaults and still verify, a changed
stage or pathway is found by `audit verify`, and the store lists the courses at given stages."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration.adapters.sql import audit_state
from integration.adapters.sql.courses import DEFAULTS, pathway_json
from integration.adapters.sql.schema import SCHEMA_VERSION
from integration.adapters.sql.stores import open_audit_store
from integration.cli.audit import audit
from integration.domain.course import Course, Referrer, Responsible, SentReferral, Stage, StateChanges
from integration.errors import StoreDamaged, StoreRefused
from integration.log import cpr_numbers_in
from integration.service.audit_chain import AuditEntry

AT = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
CPR = "2512489996"
OTHER_CPR = "0107729995"
THIRD_CPR = "0101705557"
AALBORG = "715541000016001"
CET = timezone(timedelta(hours=1))
REFERRAL = SentReferral(
    "urn:uuid:5b0e1c34-0d6a-4f0e-9a39-0d2f4f1d2c11",
    "5b0e1c34-0d6a-4f0e-9a39-0d2f4f1d2c11",
    "municipality",
    "1234567890123",
    "gop-general",
    "moderate",
    ("exercise", "diet", "exercise"),
    "municipality",
    True,
    "851",
)
VISITING = Course(
    CPR,
    AALBORG,
    "851",
    True,
    Responsible.HOSPITAL,
    stage=Stage.AWAITING_VISITATION,
    discharge_event="e-1",
    discharged_at=datetime(2026, 11, 2, 10, 15, 0, 250, tzinfo=CET),
    heart_failure=True,
)


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    return str(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def store(dsn: str) -> Iterator[Any]:
    opened = open_audit_store(dsn)
    yield opened
    opened.close()


def save(store: Any, *courses: Course) -> None:
    store.record(
        [AuditEntry("transformed", "discharge", "m-1", patient=courses[0].patient)],
        AT,
        changes=StateChanges(courses=courses),
    )


def sql(dsn: str, *statements: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """SQL straight at the database, bypassing the service (an attacker, or a look at the raw row)."""
    if dsn.startswith("sqlite:///"):
        connection: Any = sqlite3.connect(dsn.removeprefix("sqlite:///"))
        mark = "?"
    else:
        import psycopg

        connection, mark = psycopg.connect(dsn), "%s"
    try:
        rows: list[tuple[Any, ...]] = []
        for statement in statements:
            cursor = connection.execute(statement.replace("?", mark), params)
            rows = list(cursor.fetchall()) if cursor.description else []
        connection.commit()
        return rows
    finally:
        connection.close()


def verify(dsn: str) -> Result:
    return CliRunner().invoke(audit, ["verify"], env={"INTEGRATION_AUDIT_DSN": dsn, "INTEGRATION_CONFIG": ""})


# -- values ------------------------------------------------------------------------------------------
# What a flow can write: inputs with lone surrogates are refused before any course is made (formats).
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
column_texts = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(datetime(1900, 1, 1), datetime(2199, 12, 31), timezones=offsets)
referrals = st.builds(
    SentReferral,
    texts,
    texts,
    texts,
    texts,
    texts,
    texts,
    st.lists(texts, max_size=4).map(tuple),
    texts,
    st.booleans(),
    texts,
)
courses = st.builds(
    Course,
    st.sampled_from([CPR, OTHER_CPR, "urn:oid:1.2.208.176.1.6.1.3.1|0101701AB2"]),
    column_texts,
    column_texts,
    st.booleans(),
    st.sampled_from(Responsible),
    st.none() | st.sampled_from(Stage),
    st.none() | referrals,
    st.sampled_from(Referrer),
    st.none() | texts,
    st.none() | texts,
    st.none() | moments,
    st.booleans(),
    st.none() | texts,
    st.booleans(),
    st.booleans(),  # hospital_done
    st.none() | st.dates(date(1900, 1, 1), date(2199, 12, 31)),
    deceased=st.booleans(),  # HospitalNotification's fields, by name (other branches add theirs)
    admitted_to=st.none() | texts,
    admitted_since=st.none() | moments,
    admission_episode=st.none() | texts,
    episode=st.none() | texts,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(course=courses)
def test_every_course_round_trips_exactly(store: Any, course: Course) -> None:
    save(store, course)
    back = store.course(course.patient)
    assert back == course
    if course.discharged_at is not None:  # the same instant, written with the same offset
        assert back.discharged_at.isoformat() == course.discharged_at.isoformat()
    assert isinstance(back.stage, Stage | None) and isinstance(back.referrer, Referrer)


@settings(max_examples=200, deadline=None)
@given(course=courses)
def test_the_pathway_is_canonical_json_of_the_new_fields(course: Course) -> None:
    text = pathway_json(course)
    if text is None:  # NULL only for the defaults: one course, one representation
        assert replace(course, **DEFAULTS) == course
        return
    document = orjson.loads(text)
    assert list(document) == sorted(document)
    assert text == orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()


def test_the_pathway_as_stored() -> None:
    course = Course(
        CPR,
        AALBORG,
        "851",
        True,
        Responsible.HOSPITAL,
        Stage.MUNICIPAL,
        REFERRAL,
        closed_on=date(2027, 1, 5),
        discharged_at=datetime(2026, 11, 2, 10, 15, tzinfo=CET),
    )
    assert orjson.loads(pathway_json(course) or "") == {
        "closedOn": "2027-01-05",
        "dischargeEvent": None,
        "dischargedAt": "2026-11-02T10:15:00+01:00",
        "gp": None,
        "heartFailure": False,
        "municipalStatus": False,
        "hospitalDone": False,
        "referral": {
            "ambulatoryControl": True,
            "category": "gop-general",
            "closingPlace": "municipality",
            "elements": ["exercise", "diet", "exercise"],
            "eventId": REFERRAL.event_id,
            "municipalityCode": "851",
            "performer": "municipality",
            "receiver": "1234567890123",
            "riskGroup": "moderate",
            "serviceRequest": REFERRAL.service_request,
        },
        "referrer": "hospital",
        "specialisedReferral": None,
        "deceased": False,
        "admittedTo": None,
        "admittedSince": None,
        "admissionEpisode": None,
        "episode": None,
        "decidedAt": None,
    }


def test_a_course_with_the_defaults_stores_null_and_a_row_from_before_reads_as_the_defaults(
    dsn: str, store: Any
) -> None:
    save(
        store,
        Course(CPR, AALBORG, "851", True, Responsible.HOSPITAL),
        Course(OTHER_CPR, AALBORG, "851", True, Responsible.HOSPITAL, stage=Stage.SPECIALISED),
    )
    rows = sql(dsn, "SELECT patient, stage, pathway FROM rehab_course ORDER BY patient")
    assert rows == [(OTHER_CPR, "specialised", None), (CPR, None, None)]
    sql(
        dsn,
        "INSERT INTO rehab_course (patient, referring_department, municipality_code, is_open, responsible, "
        f"changed_at) VALUES ('{THIRD_CPR}', '{AALBORG}', '851', 0, 'gp', 'x')",
    )
    old = store.course(THIRD_CPR)
    assert old == Course(THIRD_CPR, AALBORG, "851", False, Responsible.GP) and old.current is Stage.CLOSED


def test_the_episode_and_a_cancelled_stage_round_trip_and_a_pathway_from_before_has_no_episode(
    dsn: str, store: Any
) -> None:
    cancelled = replace(VISITING, stage=Stage.CANCELLED, open=False, responsible=Responsible.GP, episode="VN-4711/2026")
    save(store, cancelled)
    assert store.course(CPR) == cancelled and store.course(CPR).episode == "VN-4711/2026"
    assert [c.patient for c in store.courses_at([Stage.CANCELLED])] == [CPR]
    assert store.courses_at([Stage.AWAITING_VISITATION]) == []
    ((stage, pathway),) = sql(dsn, "SELECT stage, pathway FROM rehab_course")
    assert stage == "cancelled" and orjson.loads(pathway)["episode"] == "VN-4711/2026"
    before = orjson.loads(pathway)
    del before["episode"]  # a pathway written before the episode was kept
    sql(dsn, "UPDATE rehab_course SET pathway = ?", params=(orjson.dumps(before).decode(),))
    assert store.course(CPR) == replace(cancelled, episode=None)


def test_an_episode_the_service_does_not_write_is_damage(dsn: str, store: Any) -> None:
    save(store, replace(VISITING, episode="VN-1"))
    sql(dsn, "UPDATE rehab_course SET pathway = ?", params=('{"episode": 4711}',))
    with pytest.raises(StoreDamaged, match="pathway.episode: not text"):
        store.course(CPR)


def test_a_discharge_time_without_its_zone_is_refused_not_stored(store: Any) -> None:
    naive = Course(CPR, AALBORG, "851", True, Responsible.HOSPITAL, discharged_at=datetime(2026, 11, 2, 10, 15))
    with pytest.raises(StoreRefused, match="no time zone"):
        save(store, naive)
    assert store.course(CPR) is None


@pytest.mark.parametrize(
    ("stage", "pathway", "says"),
    [
        ("halfway", None, "a stage the service does not write"),
        (None, "not json", "pathway is not JSON"),
        (None, '["a list"]', "pathway is not an object"),
        (None, '{"heartFailure": "yes"}', "pathway.heartFailure: not true or false"),
        (None, '{"dischargedAt": "2026-11-02T10:15:00"}', "pathway.dischargedAt: a time without its offset"),
        (None, '{"dischargedAt": "yesterday"}', "pathway.dischargedAt: unreadable"),
        (None, '{"closedOn": 20270105}', "pathway.closedOn: not text"),
        (None, '{"referrer": "neighbour"}', "pathway.referrer: unreadable"),
        (None, '{"referral": {"elements": "exercise"}}', "pathway.referral: referral.elements: not a list"),
        (None, f'{{"{CPR}": 1}}', "pathway has 1 key(s) the service does not write"),
    ],
)
def test_a_stored_value_the_service_does_not_write_is_damage(
    dsn: str, store: Any, stage: str | None, pathway: str | None, says: str
) -> None:
    save(store, VISITING)
    sql(dsn, "UPDATE rehab_course SET stage = ?, pathway = ?", params=(stage, pathway))
    with pytest.raises(StoreDamaged) as raised:
        store.course(CPR)
    assert says in str(raised.value) and cpr_numbers_in(str(raised.value)) == []


def test_a_responsible_the_service_does_not_write_is_damage_in_the_listing_too(dsn: str, store: Any) -> None:
    save(store, VISITING)
    sql(dsn, "UPDATE rehab_course SET responsible = 'nobody'")
    with pytest.raises(StoreDamaged, match="holds a responsible the service does not write"):
        store.courses_at([Stage.AWAITING_VISITATION])


# -- the listing ---------------------------------------------------------------------------------------
def test_courses_at_lists_by_current_stage_and_counts_rows_from_before(dsn: str, store: Any) -> None:
    specialised = Course(OTHER_CPR, AALBORG, "851", True, Responsible.HOSPITAL, stage=Stage.SPECIALISED)
    save(store, VISITING, specialised)
    sql(
        dsn,
        "INSERT INTO rehab_course (patient, referring_department, municipality_code, is_open, responsible, "
        f"changed_at) VALUES ('{THIRD_CPR}', '{AALBORG}', '851', 1, 'hospital', 'x')",
    )
    assert store.courses_at([Stage.AWAITING_VISITATION]) == [VISITING]
    assert [c.patient for c in store.courses_at([Stage.SPECIALISED, Stage.AWAITING_VISITATION])] == [OTHER_CPR, CPR]
    assert [c.patient for c in store.courses_at([Stage.MUNICIPAL])] == [THIRD_CPR]
    assert store.courses_at([Stage.CLOSED, Stage.NOT_REFERRED]) == []
    assert store.courses_at([]) == []
    sql(dsn, f"UPDATE rehab_course SET is_open = 0 WHERE patient = '{THIRD_CPR}'")
    assert [c.patient for c in store.courses_at([Stage.CLOSED])] == [THIRD_CPR]


# -- the chain covers them -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tampering",
    [
        "UPDATE rehab_course SET pathway = replace(pathway, '\"heartFailure\":true', '\"heartFailure\":false')",
        "UPDATE rehab_course SET pathway = NULL",
        "UPDATE rehab_course SET stage = 'not-referred'",
        "UPDATE rehab_course SET stage = NULL",
    ],
)
def test_a_changed_stage_or_pathway_is_found_by_verify(dsn: str, store: Any, tampering: str) -> None:
    save(store, VISITING)
    assert verify(dsn).exit_code == 0
    before = sql(dsn, "SELECT stage, pathway FROM rehab_course")
    sql(dsn, tampering)
    assert sql(dsn, "SELECT stage, pathway FROM rehab_course") != before
    done = verify(dsn)
    assert done.exit_code == 1
    (line,) = [x for x in done.stderr.splitlines() if x]
    assert line.startswith("audit log BROKEN at table rehab_course: row key digest ")
    assert "was changed outside the service" in line and CPR not in line


def test_rows_from_before_schema_5_keep_their_digests_and_stay_covered(dsn: str) -> None:
    """A version-4 store's course rows (no stage, no pathway) verify after the migration, as their chained
    digests were computed without the columns; a change made to them afterwards is still found."""
    columns = ("2512489996", AALBORG, "851", 1, "hospital", "x")
    schema_4 = audit_state.row_digest("rehab_course", (*columns, None, None))
    assert schema_4 == hashlib.sha256(orjson.dumps(["rehab_course", *columns])).hexdigest()
    store = open_audit_store(dsn)
    save(store, Course(CPR, AALBORG, "851", True, Responsible.HOSPITAL))
    store.close()
    sql(
        dsn,
        "DROP INDEX rehab_course_stage",
        "ALTER TABLE rehab_course DROP COLUMN stage",
        "ALTER TABLE rehab_course DROP COLUMN pathway",
        "UPDATE schema_version SET version = 4",
    )
    store = open_audit_store(dsn)  # the service migrates it
    try:
        assert store.course(CPR) == Course(CPR, AALBORG, "851", True, Responsible.HOSPITAL)
        save(store, Course(OTHER_CPR, AALBORG, "851", True, Responsible.HOSPITAL, stage=Stage.MUNICIPAL))
    finally:
        store.close()
    assert sql(dsn, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert verify(dsn).exit_code == 0
    sql(dsn, f"UPDATE rehab_course SET stage = 'closed' WHERE patient = '{CPR}'")
    done = verify(dsn)
    assert done.exit_code == 1 and "table rehab_course: row key digest" in done.stderr
