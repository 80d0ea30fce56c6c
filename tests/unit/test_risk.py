"""Rule 1: any DCS criterion means at least moderate; the clinician's group is used when at least that floor."""

import pytest

from integration.domain.records import RiskGroup
from integration.domain.risk import DCS_CRITERIA, RiskPolicy, stratify

LOW, MODERATE, HIGH = RiskGroup.LOW, RiskGroup.MODERATE, RiskGroup.HIGH
DEFAULT = RiskPolicy()
ICD_IS_HIGH = RiskPolicy(high_risk_criteria=frozenset({"icd-or-arrhythmia-risk"}))

CASES = [
    # criteria, clinician, policy, expected group, escalated
    ((), None, DEFAULT, LOW, False),
    ((), LOW, DEFAULT, LOW, False),
    ((), MODERATE, DEFAULT, MODERATE, False),
    ((), HIGH, DEFAULT, HIGH, False),
    (("heart-failure",), None, DEFAULT, MODERATE, False),
    (("heart-failure",), LOW, DEFAULT, MODERATE, True),
    (("heart-failure",), MODERATE, DEFAULT, MODERATE, False),
    (("heart-failure",), HIGH, DEFAULT, HIGH, False),
    (DCS_CRITERIA, LOW, DEFAULT, MODERATE, True),  # by default no criterion forces high
    (("icd-or-arrhythmia-risk",), None, ICD_IS_HIGH, HIGH, False),
    (("icd-or-arrhythmia-risk",), LOW, ICD_IS_HIGH, HIGH, True),
    (("icd-or-arrhythmia-risk",), MODERATE, ICD_IS_HIGH, HIGH, True),
    (("heart-failure",), LOW, ICD_IS_HIGH, MODERATE, True),
]


@pytest.mark.parametrize(("criteria", "clinician", "policy", "group", "escalated"), CASES)
def test_stratify(criteria, clinician, policy, group, escalated) -> None:
    risk = stratify(tuple(criteria), clinician, policy)
    assert (risk.group, risk.escalated) == (group, escalated)
    assert risk.criteria == tuple(criteria)


def test_every_criterion_alone_lifts_low_to_moderate() -> None:
    for criterion in DCS_CRITERIA:
        assert stratify((criterion,), LOW, DEFAULT).group is MODERATE
