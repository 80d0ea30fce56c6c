"""The referral's notes: the sentences the agreement asks the referral to carry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from integration.domain.pathway import Pathway, earliest_bicycle_test
from integration.domain.records import DischargeEvent, Setting
from integration.domain.risk import RiskAssessment, RiskPolicy
from integration.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class NoteTexts:
    no_exercise_test: str
    sternotomy: str
    risk_escalated: str
    closing_conversation: str
    ambulatory_control: str
    cancelled: str  # a cancellation's only note: why (`{why}`)


@dataclass(frozen=True, slots=True)
class ReferralRules:
    risk_policy: RiskPolicy
    sternotomy_delay_weeks: int
    notes: NoteTexts
    labels: Mapping[str, Mapping[str, str]]

    def label(self, table: str, code: str) -> str:
        return self.labels[table][code]


def _escalation_note(risk: RiskAssessment, rules: ReferralRules) -> str | None:
    if not risk.escalated or risk.clinician_group is None:
        return None
    return rules.notes.risk_escalated.format(
        clinician=rules.label("riskGroup", risk.clinician_group.value),
        group=rules.label("riskGroup", risk.group.value),
        criteria="; ".join(rules.label("dcsRiskCriterion", c) for c in risk.criteria),
    )


def _no_exercise_test_note(event: DischargeEvent, pathway: Pathway, rules: ReferralRules) -> str | None:
    # The sentence says the patient "can train in the municipality": it belongs on municipal referrals only.
    if event.exercise_test is not None or pathway.performer is not Setting.MUNICIPALITY:
        return None
    return rules.notes.no_exercise_test


def _sternotomy_note(event: DischargeEvent, rules: ReferralRules) -> str | None:
    surgery = event.surgery
    if surgery is None or not surgery.sternotomy or surgery.date is None:
        return None
    try:
        earliest = earliest_bicycle_test(surgery.date, rules.sternotomy_delay_weeks)
    except OverflowError:  # a real date, but the test date after it is past the calendar's end (year 9999)
        raise InvalidInput(
            "surgery.date", "too late in the calendar: the earliest bicycle test date is past 9999"
        ) from None
    return rules.notes.sternotomy.format(surgery_date=surgery.date.isoformat(), earliest_test_date=earliest.isoformat())


def referral_notes(
    event: DischargeEvent, risk: RiskAssessment, pathway: Pathway, rules: ReferralRules
) -> tuple[str, ...]:
    """The referral's note lines, in reading order; the clinician's own note comes last."""
    lines = (
        _escalation_note(risk, rules),
        _no_exercise_test_note(event, pathway, rules),
        _sternotomy_note(event, rules),
        rules.notes.closing_conversation.format(
            place=rules.label("closingConversation", pathway.closing_conversation.value)
        ),
        rules.notes.ambulatory_control.format(answer=rules.label("yesNo", str(pathway.ambulatory_control).lower())),
        event.referral.note,
    )
    return tuple(line for line in lines if line)


# Why a referral is cancelled, by what replaced it (`{why}` in the `cancelled` note).
CANCELLED_BECAUSE = {
    "none": "det er besluttet, at patienten ikke skal have genoptræning/rehabilitering nu",
    "re-route": "henvisningen er erstattet af en ny henvisning til en anden modtager",
    # HL7 v2 ADT^A13 (cancel discharge) / ADT^A11 (cancel admit): the hospital withdrew what the referral followed
    "withdrawn": "hospitalet har annulleret udskrivelsen eller indlæggelsen, som henvisningen blev sendt ved",
    # HL7 v2 ADT^A08: the corrected discharge refers no one yet; the visitation talk decides
    "deferred": "udskrivelsen er rettet, så der ikke henvises nu; visitationssamtalen afgør henvisningen",
}


def cancellation_notes(because: str, rules: ReferralRules) -> tuple[str, ...]:
    """A cancellation's note: the referral is withdrawn, and why (`because`, a key of CANCELLED_BECAUSE)."""
    return (rules.notes.cancelled.format(why=CANCELLED_BECAUSE[because]),)
