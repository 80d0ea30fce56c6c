"""Which rehabilitation the patient is referred to, by whom it is performed, and where it closes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from integration.domain.records import DischargeEvent, ReferralRequest, RiskGroup, Setting
from integration.domain.risk import RiskAssessment

# Who performs the rehabilitation, by the clinician's decision; high risk overrides `municipal`.
SETTING_BY_DECISION = {"hospital": Setting.HOSPITAL, "municipal": Setting.MUNICIPALITY}

# The referral's category by (who performs it, whether physical retraining is needed).
CATEGORY = {
    (Setting.HOSPITAL, True): "gop-specialised",
    (Setting.HOSPITAL, False): "gop-specialised",
    (Setting.MUNICIPALITY, True): "gop-general",
    (Setting.MUNICIPALITY, False): "municipal-rehabilitation",
}


@dataclass(frozen=True, slots=True)
class Pathway:
    performer: Setting
    category: str
    closing_conversation: Setting
    ambulatory_control: bool
    decision_overridden: bool  # the clinician chose municipal, but high risk sends the patient to the hospital


def performer_setting(decision: str, risk: RiskGroup) -> Setting:
    if risk is RiskGroup.HIGH:
        return Setting.HOSPITAL
    return SETTING_BY_DECISION[decision]


def closing_conversation_place(performer: Setting, control_at_end_of_rehab: bool) -> Setting:
    """At the hospital when it performs the rehabilitation or an ambulatory control ends the course."""
    if performer is Setting.HOSPITAL or control_at_end_of_rehab:
        return Setting.HOSPITAL
    return Setting.MUNICIPALITY


def choose_pathway(event: DischargeEvent, risk: RiskAssessment) -> Pathway | None:
    """The pathway for this event, or None when the clinician decided on no referral."""
    request = event.referral
    if request.decision == "none":
        return None
    performer = performer_setting(request.decision, risk.group)
    return Pathway(
        performer=performer,
        category=CATEGORY[(performer, request.training_needed)],
        closing_conversation=closing_conversation_place(performer, request.ambulatory_control_at_end),
        ambulatory_control=request.ambulatory_control,
        decision_overridden=SETTING_BY_DECISION[request.decision] is not performer,
    )


def municipal_pathway(request: ReferralRequest) -> Pathway:
    """A referral the municipality performs whatever the risk group: a step-down from specialised rehabilitation
    at the hospital ("Højrisiko patienter ... kan evt. efterfølgende overgå til kommunal genoptræning/
    rehabilitering"), or a GP's referral to municipal rehabilitation. The closing conversation then follows the
    municipal rule: in the municipality unless an ambulatory control at the hospital ends the course ("Hvis
    patienten efterfølgende henvises til et kommunalt tilbud ... følges nedenstående")."""
    performer = Setting.MUNICIPALITY
    return Pathway(
        performer=performer,
        category=CATEGORY[(performer, request.training_needed)],
        closing_conversation=closing_conversation_place(performer, request.ambulatory_control_at_end),
        ambulatory_control=request.ambulatory_control,
        decision_overridden=False,
    )


HEART_FAILURE_CODES = ("I50", "DI50")  # ICD-10 I50 (hjertesvigt), and its SKS form


def has_heart_failure(event: DischargeEvent) -> bool:
    """Whether the event names heart failure: the DCS criterion or an I50 diagnosis (ICD-10 or SKS). Such a
    patient may be visited later than two weeks after discharge (the agreement, "Visitationssamtale")."""
    return "heart-failure" in event.risk_criteria or any(
        d.code.replace(".", "").startswith(HEART_FAILURE_CODES) for d in event.diagnoses
    )


def earliest_bicycle_test(surgery_date: date, delay_weeks: int) -> date:
    return surgery_date + timedelta(weeks=delay_weeks)
