"""Rules 4 and 5: the sentence for a referral without an exercise test, the sternotomy line, the escalation line."""

from dataclasses import replace
from datetime import date

import pytest

from integration.domain.pathway import choose_pathway
from integration.domain.records import ExerciseTest, RiskGroup, Surgery
from integration.domain.referral_rules import referral_notes
from integration.domain.risk import stratify
from integration.flows.dispatch import Pipeline
from tests.unit.events import event

SENTENCE = (
    "Patienten er ved udskrivelsen lægefagligt vurderet med henblik på hjerterehabilitering, og kan træne i "
    "kommunalt regi. Ved afslutningen af det kommunale rehabiliteringsforløb, overdrages det lægefaglige ansvar "
    "til patientens praktiserende læge i forbindelse med at denne modtager en slutstatus fra kommunen."
)
TEST = ExerciseTest(date(2026, 12, 3), "Ingen iskæmi.", 150, 7.5, 142)


def _notes(pipeline: Pipeline, ev):
    rules = pipeline.referral.rules
    risk = stratify(ev.risk_criteria, ev.clinician_risk_group, rules.risk_policy)
    return referral_notes(ev, risk, choose_pathway(ev, risk), rules)


@pytest.mark.parametrize(
    ("decision", "test", "has_sentence"),
    [("municipal", None, True), ("municipal", TEST, False), ("hospital", None, False), ("hospital", TEST, False)],
)
def test_no_exercise_test_sentence(pipeline: Pipeline, decision, test, has_sentence) -> None:
    base = event()
    ev = replace(base, exercise_test=test, referral=replace(base.referral, decision=decision))
    notes = _notes(pipeline, ev)
    assert (SENTENCE in notes) is has_sentence
    assert all(SENTENCE not in n or n == SENTENCE for n in notes)  # exactly the sentence, as its own note


@pytest.mark.parametrize(
    ("surgery", "line"),
    [
        (Surgery(True, date(2026, 11, 15)), "Sternotomi 2026-11-15: cykeltest tidligst 2026-12-27."),
        (Surgery(True, date(2026, 2, 1)), "Sternotomi 2026-02-01: cykeltest tidligst 2026-03-15."),
        (Surgery(False, date(2026, 11, 15)), None),
        (None, None),
    ],
)
def test_sternotomy_line(pipeline: Pipeline, surgery, line) -> None:
    notes = _notes(pipeline, replace(event(), surgery=surgery))
    sternotomy_lines = [n for n in notes if n.startswith("Sternotomi")]
    assert sternotomy_lines == ([line] if line else [])


def test_escalation_line_lists_the_criteria(pipeline: Pipeline) -> None:
    ev = replace(
        event(), clinician_risk_group=RiskGroup.LOW, risk_criteria=("heart-failure", "significant-comorbidity")
    )
    assert _notes(pipeline, ev)[0] == (
        "Risikogruppe hævet fra lav til moderat på grund af DCS-kriterier: "
        "Tegn til eller symptomer på hjertesvigt uanset EF; Betydelig eller svær komorbiditet."
    )


def test_no_escalation_line_when_clinician_agrees(pipeline: Pipeline) -> None:
    assert not any(n.startswith("Risikogruppe") for n in _notes(pipeline, event()))


def test_closing_and_control_lines_and_free_text_last(pipeline: Pipeline) -> None:
    notes = _notes(pipeline, event())
    assert notes[-3:] == ("Afsluttende samtale: i kommunen.", "Ambulant kontrol på hospitalet: planlagt.", "free text")
