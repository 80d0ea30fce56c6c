"""A discharge changed or withdrawn after it was sent (issue #15; HL7 v2 ADT^A08, ADT^A13/A11): the referral
flow's `handle_discharge_update` and `handle_discharge_cancellation` against the patient's course, each branch
with the real mappings and the real outgoing gate; and the JSON `discharge-update` through `dispatch.transform`."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from integration.conformance.validation import outgoing_findings
from integration.domain.course import Course, FixedState, Responsible, Stage
from integration.domain.course_sequence import OutOfOrder, ReferralSettled
from integration.domain.records import DischargeCancellation, DischargeEvent
from integration.domain.referral_rules import CANCELLED_BECAUSE
from integration.errors import ConfigurationError, InvalidInput
from integration.flows.dispatch import Pipeline, transform
from integration.flows.referral import (
    ReferralContext,
    handle_discharge,
    handle_discharge_cancellation,
    handle_discharge_update,
    handle_gp_referral,
    handle_referral_event,
    handle_visitation,
)
from integration.flows.results import FlowResult
from integration.formats.discharge_event import parse_discharge_event
from tests.conftest import FIXED_NOW, GOLDEN

EPISODE = "VN-2026-000135"
SCENARIO = GOLDEN / "pathway" / "35-discharge-updated-before-the-visitation"
CANCEL_ID = "7c1d0000-0000-4000-8000-000000001301"


def document(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCENARIO / name).read_text())
    return loaded


@pytest.fixture(scope="module")
def ctx(pipeline: Pipeline) -> ReferralContext:
    return pipeline.referral


def parse(pipeline: Pipeline, doc: dict[str, Any]) -> DischargeEvent:
    return parse_discharge_event(doc, pipeline.discharge_contract, received_at=FIXED_NOW + timedelta(days=30))


@pytest.fixture
def discharge(pipeline: Pipeline) -> DischargeEvent:
    return parse(pipeline, document("01-discharge-refers-municipal.json"))


@pytest.fixture
def update(pipeline: Pipeline) -> DischargeEvent:
    """The discharge without diet: an update at the same receiver."""
    return parse(pipeline, document("02-update-drops-diet.json"))


def referred(discharge: DischargeEvent, ctx: ReferralContext) -> Course:
    (course,) = handle_discharge(discharge, ctx, FIXED_NOW).state.courses
    return course


def cancellation(discharge: DischargeEvent, episode: str = EPISODE, **changes: Any) -> DischargeCancellation:
    fields: dict[str, Any] = {
        "event_id": CANCEL_ID,
        "episode": episode,
        "patient": discharge.patient.cpr,
        "hospital_sor": discharge.hospital.sor,
        "occurred_at": discharge.occurred_at + timedelta(days=1),
        "trigger": "A13",
        "person": discharge.patient,
    }
    return DischargeCancellation(**{**fields, **changes})


def facts(result: FlowResult) -> dict[str, dict[str, Any]]:
    return {fact.kind: dict(fact.detail) for fact in result.facts}


def requests(result: FlowResult) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for out in result.outgoing
        for e in out.message["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest"
    ]


def events(result: FlowResult) -> list[str]:
    return [out.message["entry"][0]["resource"]["eventCoding"]["code"] for out in result.outgoing]


# -- the episode on the course -----------------------------------------------------------------------------------
def test_a_discharge_opens_its_course_with_its_episode(discharge: DischargeEvent, ctx: ReferralContext) -> None:
    assert referred(discharge, ctx).episode == EPISODE
    (without,) = handle_discharge(replace(discharge, episode=None), ctx, FIXED_NOW).state.courses
    assert without.episode is None


# -- an update of the discharge -----------------------------------------------------------------------------------
def test_an_update_at_the_same_receiver_replaces_the_referral(
    discharge: DischargeEvent, update: DischargeEvent, ctx: ReferralContext
) -> None:
    course = referred(discharge, ctx)
    result = handle_discharge_update(update, course, ctx, FIXED_NOW)
    assert events(result) == ["update-referral"]
    (request,) = requests(result)
    assert request["replaces"] == [
        {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{discharge.event_id}"}}
    ]
    assert facts(result)["discharge-updated"] == {"eventId": update.event_id, "episode": EPISODE, "change": "update"}
    (after,) = result.state.courses
    assert after.referral is not None and after.referral.event_id == update.event_id
    assert after.discharge_event == update.event_id and after.episode == EPISODE and after.current is Stage.MUNICIPAL
    assert result.outgoing[0].route.routing_key == "referral.municipality.851"


def test_an_update_that_changes_nothing_sends_nothing_and_keeps_the_course(
    discharge: DischargeEvent, ctx: ReferralContext
) -> None:
    course = referred(discharge, ctx)
    same = replace(discharge, event_id="5a1e0000-0000-4000-8000-000000009999", event_type="discharge-update")
    result = handle_discharge_update(same, course, ctx, FIXED_NOW)
    assert result.outgoing == () and result.state.courses == ()
    assert facts(result)["discharge-updated"]["change"] == "unchanged"


def test_an_update_to_another_receiver_cancels_and_refers_anew(pipeline: Pipeline, ctx: ReferralContext) -> None:
    course = referred(parse(pipeline, document("01-discharge-refers-municipal.json")), ctx)
    high = parse(pipeline, document("04-update-high-risk-to-hospital.json"))
    result = handle_discharge_update(high, course, ctx, FIXED_NOW)
    assert events(result) == ["cancel-referral", "new-referral"]
    cancelled, new = requests(result)
    assert cancelled["status"] == "revoked" and cancelled["identifier"][0]["value"] == course.referral.service_request  # type: ignore[union-attr]
    assert new["replaces"][0]["identifier"]["value"] == course.referral.service_request  # type: ignore[union-attr]
    assert [o.route.routing_key for o in result.outgoing] == [
        "referral.municipality.851",
        "referral.hospital.715561000016003",
    ]
    (after,) = result.state.courses
    assert after.current is Stage.SPECIALISED and facts(result)["discharge-updated"]["change"] == "re-route"


def test_an_update_that_refers_no_one_yet_cancels_and_waits_for_the_visitation(
    pipeline: Pipeline, discharge: DischargeEvent, ctx: ReferralContext, shared: Any
) -> None:
    course = referred(discharge, ctx)
    none = parse(pipeline, document("05-update-decides-no-referral-yet.json"))
    result = handle_discharge_update(none, course, ctx, FIXED_NOW)
    assert events(result) == ["cancel-referral"]
    (request,) = requests(result)
    assert [n["text"] for n in request["note"]] == [f"Henvisningen annulleres: {CANCELLED_BECAUSE['deferred']}."]
    (after,) = result.state.courses
    assert after.current is Stage.AWAITING_VISITATION and after.referral is None and after.open
    assert after.responsible is Responsible.HOSPITAL and after.discharged_at == none.discharged_at


def test_an_update_before_the_visitation_may_refer_at_last_or_change_only_the_course(
    pipeline: Pipeline, ctx: ReferralContext
) -> None:
    none = parse(pipeline, document("05-update-decides-no-referral-yet.json"))
    (waiting,) = handle_discharge(replace(none, event_type="discharge"), ctx, FIXED_NOW).state.courses
    assert waiting.current is Stage.AWAITING_VISITATION
    refers = handle_discharge_update(parse(pipeline, document("02-update-drops-diet.json")), waiting, ctx, FIXED_NOW)
    assert events(refers) == ["new-referral"] and refers.state.courses[0].current is Stage.MUNICIPAL
    later = replace(
        none, event_id="5a1e0000-0000-4000-8000-000000009998", discharged_at=none.discharged_at + timedelta(hours=2)
    )
    still = handle_discharge_update(later, waiting, ctx, FIXED_NOW)
    assert still.outgoing == () and facts(still)["discharge-updated"]["change"] == "none"
    (after,) = still.state.courses
    assert after.current is Stage.AWAITING_VISITATION and after.discharged_at == later.discharged_at


@pytest.mark.parametrize("course", [None, "other-episode", "no-episode"])
def test_an_update_of_an_episode_we_do_not_know_is_out_of_order(
    discharge: DischargeEvent, update: DischargeEvent, ctx: ReferralContext, course: str | None
) -> None:
    known = referred(discharge, ctx)
    given = {
        None: None,
        "other-episode": replace(known, episode="VN-OTHER"),
        "no-episode": replace(known, episode=None),
    }
    with pytest.raises(OutOfOrder) as refused:
        handle_discharge_update(update, given[course], ctx, FIXED_NOW)
    assert refused.value.field == "episodeOfCare" and refused.value.reason == "out-of-order"
    assert "replay it" in str(refused.value) and EPISODE not in str(refused.value)


SETTLED = [
    ({"stage": Stage.AWAITING_HOSPITAL_CLOSING, "municipal_status": True}, "the municipality's status has arrived"),
    ({"stage": Stage.HOSPITAL_FOLLOW_UP, "open": False}, "the municipality's status has arrived"),
    ({"municipal_status": True}, "the municipality's status has arrived"),
    ({"stage": Stage.CLOSED, "open": False}, "the course has closed"),
    (
        {"stage": Stage.NOT_REFERRED, "open": False, "referral": None},
        "the visitation talk decided on no rehabilitation",
    ),
    ({"stage": Stage.CANCELLED, "open": False, "referral": None}, "the discharge was cancelled"),
    ({"hospital_done": True}, "the hospital has closed its part"),
    ({"specialised_referral": "urn:uuid:s-1"}, "moved on from specialised rehabilitation"),
    ({"discharge_event": "another-discharge"}, "a later decision (the visitation talk"),
]


@pytest.mark.parametrize(("change", "says"), SETTLED)
def test_an_update_the_referral_can_no_longer_take_is_refused_saying_why(
    discharge: DischargeEvent, update: DischargeEvent, ctx: ReferralContext, change: dict[str, Any], says: str
) -> None:
    course = replace(referred(discharge, ctx), **change)
    with pytest.raises(ReferralSettled) as refused:
        handle_discharge_update(update, course, ctx, FIXED_NOW)
    assert isinstance(refused.value, InvalidInput) and refused.value.reason == "referral-settled"
    assert refused.value.field == "eventType"
    assert str(refused.value).startswith("eventType: the referral can no longer change: ") and says in str(
        refused.value
    )


def test_an_update_after_the_visitation_changed_the_referral_is_refused(
    pipeline: Pipeline, discharge: DischargeEvent, update: DischargeEvent, ctx: ReferralContext
) -> None:
    visitation = replace(update, event_id="5a1e0000-0000-4000-8000-000000009997", event_type="visitation")
    (visited,) = handle_visitation(visitation, referred(discharge, ctx), ctx, FIXED_NOW).state.courses
    with pytest.raises(ReferralSettled):
        handle_discharge_update(replace(update, referral=discharge.referral), visited, ctx, FIXED_NOW)


def test_the_event_type_picks_the_update_handler(
    discharge: DischargeEvent, update: DischargeEvent, ctx: ReferralContext
) -> None:
    with pytest.raises(OutOfOrder):
        handle_referral_event(update, None, ctx, FIXED_NOW)  # as a discharge it would open a course


# -- a cancellation of the discharge -------------------------------------------------------------------------------
def test_a_cancellation_revokes_the_referral_in_force_at_its_receiver_and_closes_the_course(
    discharge: DischargeEvent, ctx: ReferralContext
) -> None:
    course = referred(discharge, ctx)
    result = handle_discharge_cancellation(cancellation(discharge), course, ctx, FIXED_NOW)
    assert events(result) == ["cancel-referral"]
    (outgoing,) = result.outgoing
    assert outgoing.route.routing_key == "referral.municipality.851" and outgoing.expects_ack
    assert [f.text for f in outgoing_findings(outgoing.message)] == []
    (request,) = requests(result)
    assert request["status"] == "revoked"
    assert request["identifier"][0]["value"] == course.referral.service_request  # type: ignore[union-attr]
    assert [n["text"] for n in request["note"]] == [f"Henvisningen annulleres: {CANCELLED_BECAUSE['withdrawn']}."]
    assert [d["coding"][0]["code"] for d in request["orderDetail"]] == list(discharge.referral.rehab_elements)
    assert "reasonCode" not in request  # the cancellation names what it cancels, no diagnoses
    said = facts(result)
    assert said["discharge-cancelled"] == {
        "eventId": CANCEL_ID,
        "episode": EPISODE,
        "trigger": "A13",
        "cancels": course.referral.service_request,  # type: ignore[union-attr]
    }
    assert said["referral-cancelled"]["cancels"] == course.referral.service_request  # type: ignore[union-attr]
    assert said["course-stage"] == {"eventId": CANCEL_ID, "stage": "cancelled", "responsible": "gp"}
    (after,) = result.state.courses
    assert after.current is Stage.CANCELLED and not after.open and after.responsible is Responsible.GP
    assert after.referral is None and after.closed_on == date(2026, 11, 21) and result.patient == course.patient


def test_a_cancellation_is_built_the_same_every_time(discharge: DischargeEvent, ctx: ReferralContext) -> None:
    course = referred(discharge, ctx)
    first = handle_discharge_cancellation(cancellation(discharge), course, ctx, FIXED_NOW)
    again = handle_discharge_cancellation(cancellation(discharge), course, ctx, FIXED_NOW)
    assert first.outgoing[0].message == again.outgoing[0].message


def test_a_cancellation_of_a_hospital_referral_goes_to_the_hospitals_unit(
    pipeline: Pipeline, ctx: ReferralContext
) -> None:
    high = parse(pipeline, document("04-update-high-risk-to-hospital.json"))
    (course,) = handle_discharge(replace(high, event_type="discharge"), ctx, FIXED_NOW).state.courses
    result = handle_discharge_cancellation(cancellation(high, trigger="A11"), course, ctx, FIXED_NOW)
    assert [o.route.routing_key for o in result.outgoing] == ["referral.hospital.715561000016003"]
    assert facts(result)["discharge-cancelled"]["trigger"] == "A11"
    assert [f.text for f in outgoing_findings(result.outgoing[0].message)] == []


def test_a_cancellation_before_any_referral_closes_the_course_and_sends_nothing(
    pipeline: Pipeline, ctx: ReferralContext
) -> None:
    none = parse(pipeline, document("05-update-decides-no-referral-yet.json"))
    (waiting,) = handle_discharge(replace(none, event_type="discharge"), ctx, FIXED_NOW).state.courses
    result = handle_discharge_cancellation(cancellation(none, person=None), waiting, ctx, FIXED_NOW)
    assert result.outgoing == ()
    assert facts(result)["discharge-cancelled"]["cancels"] is None
    (after,) = result.state.courses
    assert after.current is Stage.CANCELLED and after.responsible is Responsible.GP


@pytest.mark.parametrize("which", ["no-course", "other-episode", "closed", "not-referred"])
def test_nothing_to_cancel_is_processed_and_audited(
    discharge: DischargeEvent, ctx: ReferralContext, which: str
) -> None:
    known = referred(discharge, ctx)
    given = {
        "no-course": None,
        "other-episode": replace(known, episode="VN-OTHER"),
        "closed": replace(known, stage=Stage.CLOSED, open=False, responsible=Responsible.GP),
        "not-referred": replace(known, stage=Stage.NOT_REFERRED, open=False, referral=None),
    }[which]
    result = handle_discharge_cancellation(cancellation(discharge), given, ctx, FIXED_NOW)
    assert result.outgoing == () and result.state.courses == ()
    said = facts(result)["nothing-to-cancel"]
    assert said["episode"] == EPISODE and said["trigger"] == "A13"
    assert said.get("stage") == {"closed": "closed", "not-referred": "not-referred"}.get(which)


def test_a_cancellation_that_must_be_sent_but_names_no_patient_is_refused(
    discharge: DischargeEvent, ctx: ReferralContext
) -> None:
    with pytest.raises(InvalidInput) as refused:
        handle_discharge_cancellation(cancellation(discharge, person=None), referred(discharge, ctx), ctx, FIXED_NOW)
    assert refused.value.field == "patient" and "PID-5" in str(refused.value)


def test_a_cancellation_from_a_department_no_longer_mapped_is_a_configuration_error(
    discharge: DischargeEvent, ctx: ReferralContext
) -> None:
    course = replace(referred(discharge, ctx), referring_department="999999999999999")
    with pytest.raises(ConfigurationError, match="mappings/departments.yaml"):
        handle_discharge_cancellation(cancellation(discharge), course, ctx, FIXED_NOW)


# -- what may follow a cancelled course ----------------------------------------------------------------------------
def test_after_a_cancellation_a_new_discharge_opens_a_new_course_even_dated_before_it(
    discharge: DischargeEvent, ctx: ReferralContext
) -> None:
    (cancelled,) = handle_discharge_cancellation(
        cancellation(discharge, occurred_at=discharge.occurred_at + timedelta(days=3)),
        referred(discharge, ctx),
        ctx,
        FIXED_NOW,
    ).state.courses
    again = replace(discharge, event_id="5a1e0000-0000-4000-8000-000000009996")
    result = handle_discharge(again, ctx, FIXED_NOW, cancelled)  # discharged before the cancellation's day
    assert events(result) == ["new-referral"] and "course-superseded" not in facts(result)
    assert result.state.courses[0].current is Stage.MUNICIPAL


def test_a_cancelled_course_takes_no_visitation_nor_update_but_a_gp_referral(
    pipeline: Pipeline, discharge: DischargeEvent, update: DischargeEvent, ctx: ReferralContext
) -> None:
    (cancelled,) = handle_discharge_cancellation(
        cancellation(discharge), referred(discharge, ctx), ctx, FIXED_NOW
    ).state.courses
    with pytest.raises(OutOfOrder, match="course is cancelled"):
        handle_visitation(replace(update, event_type="visitation"), cancelled, ctx, FIXED_NOW)
    with pytest.raises(ReferralSettled, match="the discharge was cancelled"):
        handle_discharge_update(update, cancelled, ctx, FIXED_NOW)
    from integration.formats.gp_referral import parse_gp_referral

    gp = parse_gp_referral(
        json.loads((GOLDEN / "pathway" / "08-gp-refers-later" / "01-gp-referral.json").read_text()),
        pipeline.gp_referral_contract,
        received_at=datetime(2027, 6, 1, tzinfo=FIXED_NOW.tzinfo),
    )
    assert events(handle_gp_referral(gp, cancelled, ctx, FIXED_NOW)) == ["new-referral"]


# -- the JSON discharge-update through the dispatch ----------------------------------------------------------------
def test_a_json_discharge_update_runs_through_transform(
    pipeline: Pipeline, discharge: DischargeEvent, ctx: ReferralContext
) -> None:
    state = FixedState(courses={discharge.patient.cpr.key: referred(discharge, ctx)})
    raw = (SCENARIO / "02-update-drops-diet.json").read_bytes()
    handled = transform(raw, pipeline, FIXED_NOW + timedelta(hours=2), flow="discharge", state=state)
    assert isinstance(handled, FlowResult) and events(handled) == ["update-referral"]
    with pytest.raises(OutOfOrder):
        transform(raw, pipeline, FIXED_NOW + timedelta(hours=2), flow="discharge")  # no course: nothing known


def test_a_json_discharge_update_without_its_episode_breaks_the_contract(pipeline: Pipeline) -> None:
    doc = document("02-update-drops-diet.json")
    del doc["episodeOfCare"]
    with pytest.raises(InvalidInput) as refused:
        transform(json.dumps(doc).encode(), pipeline, FIXED_NOW + timedelta(hours=2), flow="discharge")
    assert "episodeOfCare" in str(refused.value)
