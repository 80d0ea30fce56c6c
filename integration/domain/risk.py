"""Risk stratification at discharge by the six DCS criteria (the agreement's first step)."""

from __future__ import annotations

from dataclasses import dataclass

from integration.domain.records import RiskGroup

DCS_CRITERIA = (
    "incomplete-revascularisation",
    "significant-comorbidity",
    "postoperative-complications",
    "uncontrolled-arrhythmia",
    "icd-or-arrhythmia-risk",
    "heart-failure",
)


@dataclass(frozen=True, slots=True)
class RiskPolicy:
    """Which criteria force the high group on their own (configuration; default none)."""

    high_risk_criteria: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    group: RiskGroup
    criteria: tuple[str, ...]
    clinician_group: RiskGroup | None

    @property
    def escalated(self) -> bool:
        """The clinician's group was below what the criteria demand."""
        return self.clinician_group is not None and self.clinician_group < self.group


def risk_floor(criteria: tuple[str, ...], policy: RiskPolicy) -> RiskGroup:
    """The lowest group the criteria allow: any criterion means at least moderate."""
    if policy.high_risk_criteria.intersection(criteria):
        return RiskGroup.HIGH
    return RiskGroup.MODERATE if criteria else RiskGroup.LOW


def stratify(criteria: tuple[str, ...], clinician_group: RiskGroup | None, policy: RiskPolicy) -> RiskAssessment:
    floor = risk_floor(criteria, policy)
    group = floor if clinician_group is None else max(clinician_group, floor, key=lambda g: g.rank)
    return RiskAssessment(group=group, criteria=criteria, clinician_group=clinician_group)
