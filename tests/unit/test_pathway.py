"""Rules 2 and 3: who performs the rehabilitation, which referral it is, and where the course closes."""

from dataclasses import replace

import pytest

from integration.domain.pathway import choose_pathway, closing_conversation_place, earliest_bicycle_test
from integration.domain.records import RiskGroup, Setting
from integration.domain.risk import RiskAssessment
from tests.unit.events import event

H, M = Setting.HOSPITAL, Setting.MUNICIPALITY
LOW, MODERATE, HIGH = RiskGroup.LOW, RiskGroup.MODERATE, RiskGroup.HIGH

CASES = [
    # decision, risk, training, elements, control at end → performer, category, closing, overridden
    ("municipal", LOW, True, (), False, M, "gop-general", M, False),
    ("municipal", MODERATE, True, ("diet",), False, M, "gop-general", M, False),
    ("municipal", LOW, False, ("diet",), False, M, "municipal-rehabilitation", M, False),
    ("municipal", MODERATE, True, (), True, M, "gop-general", H, False),
    ("municipal", LOW, False, ("diet",), True, M, "municipal-rehabilitation", H, False),
    ("municipal", HIGH, True, (), False, H, "gop-specialised", H, True),
    ("municipal", HIGH, False, ("diet",), False, H, "gop-specialised", H, True),
    ("hospital", LOW, True, (), False, H, "gop-specialised", H, False),
    ("hospital", MODERATE, False, (), False, H, "gop-specialised", H, False),
    ("hospital", HIGH, True, ("diet",), True, H, "gop-specialised", H, False),
]


@pytest.mark.parametrize(
    ("decision", "risk", "training", "elements", "at_end", "performer", "category", "closing", "overridden"), CASES
)
def test_choose_pathway(decision, risk, training, elements, at_end, performer, category, closing, overridden) -> None:
    base = event()
    ev = replace(
        base,
        referral=replace(
            base.referral,
            decision=decision,
            training_needed=training,
            rehab_elements=elements,
            ambulatory_control=at_end,
            ambulatory_control_at_end=at_end,
        ),
    )
    pathway = choose_pathway(ev, RiskAssessment(risk, (), None))
    assert pathway is not None
    assert (pathway.performer, pathway.category, pathway.closing_conversation, pathway.decision_overridden) == (
        performer,
        category,
        closing,
        overridden,
    )
    assert pathway.ambulatory_control is at_end


@pytest.mark.parametrize("risk", list(RiskGroup))
def test_decision_none_gives_no_pathway(risk) -> None:
    base = event()
    ev = replace(base, referral=replace(base.referral, decision="none"))
    assert choose_pathway(ev, RiskAssessment(risk, (), None)) is None


@pytest.mark.parametrize(("performer", "at_end", "place"), [(H, False, H), (H, True, H), (M, True, H), (M, False, M)])
def test_closing_conversation_place(performer, at_end, place) -> None:
    assert closing_conversation_place(performer, at_end) is place


def test_earliest_bicycle_test_is_six_weeks_after_surgery() -> None:
    from datetime import date

    assert earliest_bicycle_test(date(2026, 11, 15), 6) == date(2026, 12, 27)
    assert earliest_bicycle_test(date(2026, 12, 31), 6) == date(2027, 2, 11)
