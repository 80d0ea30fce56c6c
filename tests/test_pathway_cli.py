"""`integration pathway overdue` lists the courses whose visitation talk is past due (the windows from the
settings, the heart-failure one for those patients), masked, audited, exit 1 when any; `integration pathway
diagram` is the DOT of course_sequence.TRANSITIONS, and docs/pathway.dot (and its rendering) is that output."""

from __future__ import annotations

import html
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from integration.adapters.sql.stores import open_audit_store
from integration.cli.main import main
from integration.cli.pathway import diagram, late_visitations
from integration.config import Settings
from integration.domain.course import Course, FixedState, Responsible, SentReferral, Stage, StateChanges
from integration.domain.course_sequence import TRANSITIONS
from integration.errors import ConfigurationError
from integration.log import cpr_numbers_in
from integration.service.pathway_watch import OVERDUE_RULES

ROOT = Path(__file__).resolve().parent.parent
CET = timezone(timedelta(hours=1))
AT = datetime(2026, 12, 1, 12, 0, tzinfo=CET)
AALBORG = "715541000016001"
LATE, ON_TIME, HF_WAITING, HF_LATE, REFERRED, UNKNOWN_TIME = (
    "2512489996",
    "0107729995",
    "0101705557",
    "1502804441",
    "3112691234",
    "0203040506",
)


def awaiting(patient: str, days_ago: float | None, heart_failure: bool = False, stage: Stage | None = None) -> Course:
    return Course(
        patient,
        AALBORG,
        "851",
        True,
        Responsible.HOSPITAL,
        stage or Stage.AWAITING_VISITATION,
        discharge_event=f"event-{patient[-4:]}",
        discharged_at=None if days_ago is None else AT - timedelta(days=days_ago),
        heart_failure=heart_failure,
    )


COURSES = (
    awaiting(LATE, 22),
    awaiting(ON_TIME, 20),
    awaiting(HF_WAITING, 30, heart_failure=True),
    awaiting(HF_LATE, 60, heart_failure=True),
    awaiting(REFERRED, 40, stage=Stage.MUNICIPAL),
    awaiting(UNKNOWN_TIME, None),
)


@pytest.fixture
def dsn(tmp_path: Path) -> str:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(dsn)
    store.record([], AT - timedelta(days=90), changes=StateChanges(courses=COURSES))
    store.close()
    return dsn


def overdue(dsn: str, *args: str, **env: str) -> Result:
    clean = {k: None for k in os.environ if k.startswith("INTEGRATION_")}
    settings = clean | {"INTEGRATION_AUDIT_DSN": dsn, "INTEGRATION_CONFIG": ""} | env
    return CliRunner().invoke(main, ["pathway", "overdue", *args], env=settings)


def viewed(dsn: str) -> list[tuple[str | None, dict[str, object]]]:
    store = open_audit_store(dsn)
    try:
        return [(r.patient, dict(r.detail)) for r in store.records() if r.step == "pathway-overdue-viewed"]
    finally:
        store.close()


# -- overdue -----------------------------------------------------------------------------------------------
def test_the_late_ones_are_listed_masked_longest_overdue_first_and_exit_1(dsn: str) -> None:
    done = overdue(dsn, "--at", AT.isoformat())
    assert done.exit_code == 1, done.output
    head, *lines = done.stdout.splitlines()
    assert head == "2 course(s) awaiting the visitation talk past due as of 2026-12-01T12:00+01:00:"
    assert lines == [
        "  <cpr>  discharged 2026-10-02T13:00+02:00  due 2026-11-27T12:00+01:00  heart-failure window (56 d)  "
        f"from {AALBORG}  discharge event event-4441",
        "  <cpr>  discharged 2026-11-09T12:00+01:00  due 2026-11-30T12:00+01:00  window (21 d)  "
        f"from {AALBORG}  discharge event event-9996",
    ]
    assert cpr_numbers_in(done.output) == []


def test_the_reads_are_audited_per_patient_shown_with_the_os_user(dsn: str) -> None:
    overdue(dsn, "--at", AT.isoformat())
    records = viewed(dsn)
    assert sorted(p or "" for p, _ in records) == sorted([LATE, HF_LATE])
    assert all(d["overdue"] == 2 and "by" in d and d["at"] == AT.isoformat() for _, d in records)
    done = overdue(dsn, "--at", (AT - timedelta(days=30)).isoformat())
    assert done.exit_code == 0 and done.stdout.startswith("0 course(s) awaiting the visitation talk past due")
    assert viewed(dsn)[-1][0] is None and viewed(dsn)[-1][1]["overdue"] == 0  # none shown: one record all the same


def test_the_audit_counts_each_rule_and_no_other_block_is_printed_without_other_deadlines(dsn: str) -> None:
    done = overdue(dsn, "--at", AT.isoformat())
    assert "other deadline(s)" not in done.stdout
    assert all(d["rules"] == {**dict.fromkeys(OVERDUE_RULES, 0), "visitation": 2} for _, d in viewed(dsn))


def test_a_referral_no_outbound_row_tracks_has_no_gop_or_closing_deadline(tmp_path: Path) -> None:
    """A course whose referral was sent before our messages were tracked: its send time is not known, so no
    deadline is counted from it (none is made up)."""
    dsn = f"sqlite:///{tmp_path / 'untracked.sqlite3'}"
    sent = SentReferral(
        "urn:uuid:e", "e", "municipality", "434751000016002", "gop-general", "moderate", (), "municipality", False
    )
    course = Course(LATE, AALBORG, "851", True, Responsible.HOSPITAL, Stage.MUNICIPAL, referral=sent)
    store = open_audit_store(dsn)
    store.record([], AT - timedelta(days=400), changes=StateChanges(courses=(course,)))
    store.close()
    done = overdue(dsn, "--at", AT.isoformat())
    assert done.exit_code == 0 and "other deadline(s)" not in done.stdout


def test_due_at_the_moment_is_late_and_a_minute_before_it_is_not(dsn: str) -> None:
    due = AT - timedelta(days=1)  # LATE was discharged 22 days before AT: due after 21
    assert "event-9996" in overdue(dsn, "--at", due.isoformat()).stdout
    assert "event-9996" not in overdue(dsn, "--at", (due - timedelta(minutes=1)).isoformat()).stdout


def test_the_windows_come_from_the_settings(dsn: str) -> None:
    done = overdue(
        dsn,
        "--at",
        AT.isoformat(),
        INTEGRATION_VISITATION_WINDOW_DAYS="19",
        INTEGRATION_HEART_FAILURE_VISITATION_WINDOW_DAYS="29",
    )
    assert done.exit_code == 1
    assert [line.split("event ")[-1] for line in done.stdout.splitlines()[1:]] == [
        "event-4441",  # due 31 days before
        "event-9996",  # 3 days before
        "event-5557",  # a day before, as the next: by patient
        "event-9995",
    ]
    assert "window (19 d)" in done.stdout and "heart-failure window (29 d)" in done.stdout


def test_store_option_reads_another_store(dsn: str, tmp_path: Path) -> None:
    elsewhere = f"sqlite:///{tmp_path / 'absent.sqlite3'}"
    done = overdue(elsewhere, "--at", AT.isoformat(), "--store", dsn)
    assert done.exit_code == 1 and "event-9996" in done.stdout


@pytest.mark.parametrize(
    ("args", "env", "code", "says"),
    [
        (("--at", "yesterday"), {}, 2, "not an ISO 8601 date and time"),
        (("--at", "2026-12-01T12:00:00"), {}, 2, "needs a time zone"),
        (("--at", "2512489996"), {}, 2, "not an ISO 8601 date and time"),
        ((), {"INTEGRATION_VISITATION_WINDOW_DAYS": "60"}, 3, "must be at least visitation_window_days (60)"),
        ((), {"INTEGRATION_VISITATION_WINDOW_DAYS": "0"}, 3, "visitation_window_days must be positive"),
    ],
)
def test_bad_input_is_one_line_and_its_exit_code(
    dsn: str, args: tuple[str, ...], env: dict[str, str], code: int, says: str
) -> None:
    done = overdue(dsn, *args, **env)
    assert done.exit_code == code, done.output
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1 and says in done.stderr
    assert "2512489996" not in done.stderr and viewed(dsn) == []


def test_without_a_store_it_exits_66_and_creates_none(tmp_path: Path) -> None:
    path = tmp_path / "absent.sqlite3"
    done = overdue(f"sqlite:///{path}")
    assert done.exit_code == 66 and done.stderr.startswith("error: no audit store at ")
    assert not path.exists()


def test_late_visitations_decide_from_the_domain_rule() -> None:
    state = FixedState(courses={c.patient: c for c in COURSES})
    late = late_visitations(state.courses_at([Stage.AWAITING_VISITATION]), AT, timedelta(days=21), timedelta(days=56))
    assert [(x.course.patient, x.heart_failure) for x in late] == [(HF_LATE, True), (LATE, False)]
    assert late[1].due == AT - timedelta(days=1)
    assert late_visitations(COURSES, AT, timedelta(days=21), timedelta(days=56)) == late  # other stages never late
    assert late_visitations([], AT, timedelta(days=1), timedelta(days=1)) == []


# -- settings ----------------------------------------------------------------------------------------------
def test_the_visitation_windows_default_and_are_validated(tmp_path: Path) -> None:
    settings = Settings.from_env({})
    assert (settings.visitation_window_days, settings.heart_failure_visitation_window_days) == (21, 56)
    same = Settings.from_env(
        {"INTEGRATION_VISITATION_WINDOW_DAYS": "30", "INTEGRATION_HEART_FAILURE_VISITATION_WINDOW_DAYS": "30"}
    )
    assert same.heart_failure_visitation_window_days == 30
    for env, says in [
        ({"INTEGRATION_HEART_FAILURE_VISITATION_WINDOW_DAYS": "20"}, "must be at least visitation_window_days (21)"),
        ({"INTEGRATION_HEART_FAILURE_VISITATION_WINDOW_DAYS": "0"}, "must be positive"),
        ({"INTEGRATION_VISITATION_WINDOW_DAYS": "2.5"}, "must be a whole number"),
        ({"INTEGRATION_HEART_FAILURE_VISITATION_WINDOW_DAYS": "367"}, "must be at most 366 days"),
        ({"INTEGRATION_VISITATION_WINDOW_DAYS": "999999999999"}, "must be at most 366 days"),
    ]:
        with pytest.raises(ConfigurationError, match=says.replace("(", r"\(").replace(")", r"\)")):
            Settings.from_env(env)
    config = tmp_path / "integration.toml"
    config.write_text("[integration]\nvisitation_window_days = 14\nheart_failure_visitation_window_days = 42\n")
    from_file = Settings.from_env({"INTEGRATION_CONFIG": str(config)})
    assert (from_file.visitation_window_days, from_file.heart_failure_visitation_window_days) == (14, 42)
    config.write_text('[integration]\nvisitation_window_days = "14"\n')
    with pytest.raises(ConfigurationError, match="visitation_window_days must be a whole number"):
        Settings.from_env({"INTEGRATION_CONFIG": str(config)})


# -- the diagram -------------------------------------------------------------------------------------------
def test_the_committed_dot_file_is_the_commands_output() -> None:
    done = CliRunner().invoke(main, ["pathway", "diagram"])
    assert done.exit_code == 0
    assert done.stdout_bytes == (ROOT / "docs" / "pathway.dot").read_bytes(), (
        "docs/pathway.dot drifted from TRANSITIONS: regenerate it with "
        "`integration pathway diagram > docs/pathway.dot` and `dot -Tsvg docs/pathway.dot -o docs/pathway.svg`"
    )


def test_the_diagram_has_every_stage_and_every_transition_once() -> None:
    text = diagram()
    assert text == diagram()
    assert all(f'  "{s.value}"' in text for s in Stage) and "  start [" in text
    edges = [line for line in text.splitlines() if " -> " in line]
    assert len(edges) == len(TRANSITIONS)
    for edge, t in zip(edges, TRANSITIONS, strict=True):
        source = "start" if t.source is None else f'"{t.source.value}"'
        assert edge.startswith(f'  {source} -> "{t.target.value}" [label="{t.step.value}:\\n{t.label}"]')


def test_a_label_cannot_break_out_of_its_quotes() -> None:
    (odd,) = [TRANSITIONS[0].__class__(None, TRANSITIONS[0].step, Stage.CLOSED, 'a "quoted" \\ label')]
    assert 'label="discharge:\\na \\"quoted\\" \\\\ label"' in diagram([odd])


def test_the_rendered_svg_is_there_and_names_every_stage() -> None:
    svg = html.unescape((ROOT / "docs" / "pathway.svg").read_text(encoding="utf-8"))
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert all(f">{s.value}</text>" in svg for s in Stage)
