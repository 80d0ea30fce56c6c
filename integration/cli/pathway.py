"""The `pathway` commands: the courses' overdue deadlines, and the pathway as a diagram.

`pathway overdue` lists the patients discharged without a referral whose visitation talk
(`course_sequence.visitation_due`: `visitation_window_days` after the discharge, or
`heart_failure_visitation_window_days` for a heart-failure patient) is past due, then every other overdue
deadline `service.pathway_watch` knows (a GOP's contact and start, a missing or an error ack, a municipal
course without its closing report, an unanswered hotline request), one line each. It reads patient data, so
the read is audited (`pathway-overdue-viewed`, with the OS user: one record per patient shown, one without a
patient when none is) before anything is printed; a patient is shown masked (`integration.log.one_line`).
Like every command that reads, it needs an existing audit store (`integration.cli.audit.existing_store`:
exit 66 without one, 69 while it is unreachable, 65 damaged).

`pathway diagram` prints the agreement's pathway (`course_sequence.TRANSITIONS`) as Graphviz DOT:
`docs/pathway.dot` is its output, `docs/pathway.svg` that rendered by `dot -Tsvg`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import click

from integration.cli.audit import EXIT_CONFIGURATION, existing_store, fail, reader, settings_with_store, store_option
from integration.cli.ops import AT_HELP, at_option
from integration.domain.course import Course, Stage
from integration.domain.course_sequence import TRANSITIONS, Transition, visitation_due
from integration.errors import ConfigurationError
from integration.log import one_line
from integration.service.audit_chain import AuditEntry
from integration.service.pathway_watch import OVERDUE_RULES, Deadline
from integration.service.pathway_watch import overdue as overdue_deadlines

DANISH_TIME = ZoneInfo("Europe/Copenhagen")
EXIT_OVERDUE = 1


@click.group()
def pathway() -> None:
    """The patients' pathway (the agreement's figure): overdue visitation talks, the diagram."""


@dataclass(frozen=True, slots=True)
class Late:
    """A course whose visitation talk is past due: when it was due, and whether the heart-failure window applied."""

    course: Course
    due: datetime
    heart_failure: bool


def late_visitations(
    courses: Iterable[Course], at: datetime, window: timedelta, heart_failure: timedelta
) -> list[Late]:
    """The courses whose visitation talk was due at or before `at` (`visitation_due`; a course not awaiting
    its visitation, or whose discharge time is unknown, never is), the longest overdue first."""
    late = []
    for course in courses:
        due = visitation_due(course, window, heart_failure)
        if due is not None and due <= at:
            late.append(Late(course, due, course.heart_failure))
    return sorted(late, key=lambda x: (x.due, x.course.patient))


def _minutes(moment: datetime) -> str:
    return moment.astimezone(DANISH_TIME).isoformat(timespec="minutes")


def _line(late: Late, window: int, heart_failure: int) -> str:
    course = late.course
    discharged = _minutes(course.discharged_at) if course.discharged_at else "?"
    which = f"heart-failure window ({heart_failure} d)" if late.heart_failure else f"window ({window} d)"
    event = one_line(course.discharge_event or "-", 80)
    return (
        f"  {one_line(course.patient, 60)}  discharged {discharged}  due {_minutes(late.due)}  {which}  "
        f"from {one_line(course.referring_department, 40)}  discharge event {event}"
    )


def _deadline_line(deadline: Deadline) -> str:
    """One overdue deadline: its rule, the patient (masked), when it was due (Danish time), its subject and
    what it is (`Deadline.detail`, which holds no CPR number; masked all the same)."""
    patient = one_line(deadline.patient or "-", 60)
    return (
        f"  {deadline.rule}  {patient}  due {_minutes(deadline.due)}  {one_line(deadline.subject, 80)}  "
        f"{one_line(deadline.detail, 300)}"
    )


def _shown(late: list[Late], others: list[Deadline]) -> list[str | None]:
    """The patients shown, each once, in the order shown; [None] when none is."""
    patients = [x.course.patient for x in late] + [d.patient for d in others if d.patient is not None]
    return list(dict.fromkeys(patients)) or [None]


@pathway.command("overdue")
@click.option("--at", default=None, help=AT_HELP)
@store_option
def pathway_overdue(at: str | None, dsn: str | None) -> None:
    """List the courses awaiting their visitation talk past due, one line each: the patient (masked), the discharge,
    when the talk was due, which window applied (`visitation_window_days`, or
    `heart_failure_visitation_window_days` for a heart-failure patient), the department and the discharge event;
    then every other overdue deadline (`service.pathway_watch`: ack-missing, ack-error, closing-report,
    hotline-hours, missed-referral; the GOP's contact and start deadlines are shown on the board, never overdue),
    one line each:
    the rule, the patient (masked), when it was due (Danish time), its subject and what it is. The read is audited
    with the OS user. Exit 0 when none is overdue, 1 when any is; 2 for a bad --at, 3 a configuration error, 65 a
    damaged store, 66 no audit store, 69 the store unreachable."""
    moment = datetime.now(UTC) if at is None else at_option(at)
    settings = settings_with_store(dsn)
    window, heart_failure = settings.visitation_window_days, settings.heart_failure_visitation_window_days
    with existing_store(settings) as store:
        late = late_visitations(
            store.courses_at([Stage.AWAITING_VISITATION]),
            moment,
            timedelta(days=window),
            timedelta(days=heart_failure),
        )
        try:
            others = [d for d in overdue_deadlines(store, settings, moment) if d.rule != "visitation"]
        except ConfigurationError as exc:
            fail(EXIT_CONFIGURATION, f"configuration: {exc}")
        rules = dict.fromkeys(OVERDUE_RULES, 0) | {"visitation": len(late)}
        for deadline in others:
            rules[deadline.rule] += 1
        total = len(late) + len(others)
        detail = {**reader(), "at": moment.isoformat(), "overdue": total, "rules": rules}
        stamp = datetime.now(UTC)
        entries = [AuditEntry("pathway-overdue-viewed", "pathway", "-", detail, p) for p in _shown(late, others)]
        store.record(entries, stamp)
    click.echo(f"{len(late)} course(s) awaiting the visitation talk past due as of {_minutes(moment)}:")
    for course in late:
        click.echo(_line(course, window, heart_failure))
    if others:
        click.echo(f"{len(others)} other deadline(s) past due as of {_minutes(moment)}:")
        for deadline in others:
            click.echo(_deadline_line(deadline))
    raise SystemExit(EXIT_OVERDUE if total else 0)


# -- the diagram ---------------------------------------------------------------------------------------------
START = "start"  # the node of `Transition.source` None: no course yet (or none we know of)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _node(stage: Stage | None) -> str:
    return START if stage is None else _quoted(stage.value)


def _edge(transition: Transition) -> str:
    label = _quoted(f"{transition.step.value}:\n{transition.label}").replace("\n", "\\n")
    return f"  {_node(transition.source)} -> {_node(transition.target)} [label={label}];"


def diagram(transitions: Iterable[Transition] = TRANSITIONS) -> str:
    """Graphviz DOT of the pathway: a node per stage (a double border for the stages where a course has
    ended: `Stage.open` false) and a start node for no course; an edge per transition, in the table's
    order, labelled with its step and what happens. The same table gives the same text, byte for byte."""
    lines = [
        "// The pathway of the agreement, generated by `integration pathway diagram` from",
        "// integration/domain/course_sequence.py TRANSITIONS: do not edit by hand.",
        "digraph pathway {",
        "  rankdir=TB;",
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        f'  {START} [label="no course", shape=circle];',
        *(f"  {_node(s)}{'' if s.open else ' [peripheries=2]'};" for s in Stage),
        *(_edge(t) for t in transitions),
        "}",
    ]
    return "\n".join(lines) + "\n"


@pathway.command("diagram")
def pathway_diagram() -> None:
    """Print the pathway (the agreement's stages and the transitions between them, from
    `course_sequence.TRANSITIONS`) as Graphviz DOT; `dot -Tsvg` renders it. docs/pathway.dot is this output."""
    sys.stdout.buffer.write(diagram().encode("utf-8"))  # UTF-8 whatever the locale
    sys.stdout.buffer.flush()
