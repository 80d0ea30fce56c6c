"""MedCom Acknowledgement 2.0 for every MedCom message we receive, and the duplicate rules.

The duplicate scenarios are those of MedCom's TouchStone scripts for acknowledgements (ok, fatal-error
and transient-error, each sent twice), played with CareCommunications and HospitalNotifications.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from integration.conformance.checks import conformance_findings
from integration.domain.course import EarlierMessage, FixedState, ReceivedMessage
from integration.flows.acknowledging import ResentWithOtherContent, content_digest
from integration.flows.dispatch import Pipeline, answer_unprocessable, transform
from integration.flows.results import FlowResult, Outgoing, Refusal
from integration.formats.care_communication import decode_xml_bundle
from tests.refusals import answered, refusal
from tests.test_care_communication import HOTLINE, SATURDAY, _municipal_nursing_to_gp, _with_hotline_for, as_sent

CC_SEND = ("medcom", "dk-medcom-carecommunication-testscripts", "send")


def _load(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    return decode_xml_bundle(raw, 10**7) if path.suffix == ".xml" else json.loads(raw)


def _resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def _configured(pipeline: Pipeline, bundle: dict[str, Any]) -> Pipeline:
    header = bundle["entry"][0]["resource"]
    receiver = next(
        e["resource"]
        for e in bundle["entry"]
        if f"Organization/{e['resource']['id']}" == header["destination"][0]["receiver"]["reference"]
    )
    sor = next(i["value"] for i in receiver["identifier"] if i["system"] == "urn:oid:1.2.208.176.1.1")
    return _with_hotline_for(pipeline, sor)


def _ack_of(result: FlowResult) -> Outgoing:
    (ack,) = [o for o in result.outgoing if o.route.exchange == "rehab.ack"]
    return ack


def _rejected_ack(
    pipeline: Pipeline, bundle: dict[str, Any], state: FixedState | None = None
) -> tuple[Refusal, Outgoing]:
    refused = answered(json.dumps(bundle).encode(), pipeline, SATURDAY, flow=HOTLINE, state=state or FixedState())
    return refused, _ack_of(refused.answer)


def _remembered(result: FlowResult) -> FixedState:
    """The state after `result` was recorded, for the next message."""
    messages: dict[str, EarlierMessage] = {}
    for received in result.state.received:
        contents = frozenset({received.content}) if received.content else frozenset()
        messages[received.header_id] = EarlierMessage(
            frozenset({received.bundle_id}), received.code, received.ack, contents
        )
    return FixedState(messages=messages)


def _without_transmission(ack: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ack.items() if k not in ("id", "timestamp")}


def test_every_shared_carecommunication_is_acknowledged_ok_as_the_standard_asks(
    shared: Path, pipeline: Pipeline
) -> None:
    paths = [as_sent(p) for p in sorted(shared.joinpath(*CC_SEND).iterdir())]
    assert len(paths) >= 6
    for path in paths:
        bundle = _load(path)
        header_in = bundle["entry"][0]["resource"]
        ack = _ack_of(transform(path.read_bytes(), _configured(pipeline, bundle), SATURDAY, flow=HOTLINE)).message
        assert conformance_findings(ack) == [], path.name
        header = ack["entry"][0]["resource"]
        assert header["response"] == {"identifier": header_in["id"], "code": "ok"}
        assert header["id"] != header_in["id"] and ack["id"] != bundle["id"]
        assert header["destination"][0]["receiver"] == header_in["sender"]
        assert header["destination"][0]["endpoint"] == header_in["source"]["endpoint"]
        assert header["sender"] == header_in["destination"][0]["receiver"]
        copied, ours = _resources(ack, "Provenance")
        latest_in = next(
            p
            for p in _resources(bundle, "Provenance")
            if p["target"][0]["reference"] == f"MessageHeader/{header_in['id']}"
        )
        assert copied == latest_in, "the latest received Provenance, unchanged"
        assert ours["target"] == [{"reference": f"MessageHeader/{header['id']}"}]
        assert ours["entity"] == [{"role": "revision", "what": {"reference": f"MessageHeader/{header_in['id']}"}}]
        assert ours["agent"] == [{"who": header["sender"]}]
        assert not _resources(ack, "OperationOutcome") and not _resources(ack, "Patient")


def test_an_invalid_carecommunication_gets_fatal_error_naming_the_field(shared: Path, pipeline: Pipeline) -> None:
    bundle = _load(_municipal_nursing_to_gp(shared))
    for patient in _resources(bundle, "Patient"):
        patient["birthDate"] = "1948-13-45"
    refused, out = _rejected_ack(_configured(pipeline, bundle), bundle)
    ack = out.message
    assert conformance_findings(ack) == []
    header = ack["entry"][0]["resource"]
    assert header["response"]["code"] == "fatal-error"
    (outcome,) = _resources(ack, "OperationOutcome")
    assert header["response"]["details"] == {"reference": f"OperationOutcome/{outcome['id']}"}
    (issue,) = outcome["issue"]
    assert issue["severity"] == "error" and issue["code"] == "structure"
    assert issue["expression"] == ["Patient.birthDate"]
    assert issue["details"]["coding"][0]["code"] == "MSG_BAD_FORMAT"
    (received,) = refused.answer.state.received
    assert received.code == "fatal-error", "remembered: a duplicate gets the same fatal-error"


def test_every_content_error_is_its_own_issue(shared: Path, pipeline: Pipeline) -> None:
    bundle = _load(_municipal_nursing_to_gp(shared))
    for patient in _resources(bundle, "Patient"):
        patient["birthDate"] = "1948-13-45"
    for communication in _resources(bundle, "Communication"):
        communication["sent"] = "yesterday"
    _, out = _rejected_ack(_configured(pipeline, bundle), bundle)
    issues = _resources(out.message, "OperationOutcome")[0]["issue"]
    assert sorted(i["expression"][0] for i in issues) == ["Communication.sent", "Patient.birthDate"]


def test_a_small_message_with_thousands_of_errors_gets_a_small_ack_and_audit_record(
    shared: Path, pipeline: Pipeline
) -> None:
    """The hostile tester's 509 KB CareCommunication with 25,000 extensions lacking `url` made a 13.9 MB ack and
    a 6 MB audit record: now the first 99 are described, one issue counts the rest. (25,000 of them are 50,000
    JSON values, refused before any check since: `json_contract.MAX_VALUES`; 5,000 still are thousands of errors.)"""
    from integration.messages.acknowledgement import MAX_ISSUES

    bundle = _load(_municipal_nursing_to_gp(shared))
    (communication,) = _resources(bundle, "Communication")
    communication["extension"] = [{"valueString": "x"} for _ in range(5_000)]
    refused, out = _rejected_ack(_configured(pipeline, bundle), bundle)
    issues = _resources(out.message, "OperationOutcome")[0]["issue"]
    assert len(issues) == MAX_ISSUES
    assert all(i["expression"] == [f"Communication.extension[{n}].url"] for n, i in enumerate(issues[:-1]))
    assert issues[-1]["details"]["text"] == "Bundle: 4901 more FHIR R4 content error(s) found, not described"
    assert len(json.dumps(out.message)) < 100_000 and conformance_findings(out.message) == []
    (fact,) = [f for f in refused.answer.facts if f.kind == "acknowledged"]
    assert len(fact.detail["issues"]) == MAX_ISSUES and len(json.dumps(fact.detail)) < 50_000


def test_findings_of_every_layer_beyond_what_an_ack_lists_are_counted_in_one_issue(
    shared: Path, pipeline: Pipeline
) -> None:
    bundle = _load(_municipal_nursing_to_gp(shared))
    (communication,) = _resources(bundle, "Communication")
    communication["extension"] = [{} for _ in range(250)]  # each a content error and an empty element
    refused, out = _rejected_ack(_configured(pipeline, bundle), bundle)
    issues = _resources(out.message, "OperationOutcome")[0]["issue"]
    assert [i["details"]["text"] for i in issues[99:]] == [
        "Bundle: 151 more FHIR R4 content error(s) found, not described",
        "250 more problem(s) found in the message, not listed here: an acknowledgement lists the first 100",
    ]
    assert "expression" not in issues[-1] and issues[-1]["severity"] == "error"


def test_listed_keeps_up_to_the_most_and_counts_the_rest() -> None:
    from integration.messages.acknowledgement import Issue, listed

    issues = [Issue("invalid", "MSG_BAD_FORMAT", f"problem {n}") for n in range(5)]
    assert listed(issues, most=5) == issues
    shortened = listed(issues, most=3)
    assert shortened[:3] == issues[:3] and len(shortened) == 4
    assert shortened[3].text.startswith("2 more problem(s)")


def test_the_content_check_describes_up_to_its_limit_and_counts_the_rest(shared: Path) -> None:
    from integration.conformance.r4_validator import content_errors

    bundle = _load(_municipal_nursing_to_gp(shared))
    (communication,) = _resources(bundle, "Communication")
    communication["extension"] = [{} for _ in range(30)]
    everything = content_errors(bundle)
    assert len(everything) == 30
    first = content_errors(bundle, limit=10)
    assert first[:10] == everything[:10] and len(first) == 11
    assert (first[10].field, first[10].shown) == ("Bundle", "20 more FHIR R4 content error(s) found, not described")


def test_a_carecommunication_without_a_usable_cpr_gets_fatal_error_at_the_patient_identifier(
    shared: Path, pipeline: Pipeline
) -> None:
    bundle = _load(_municipal_nursing_to_gp(shared))
    for patient in _resources(bundle, "Patient"):
        patient["identifier"] = [{"system": "urn:oid:1.2.208.176.1.6.1.1", "value": "250147X1"}]
    _, out = _rejected_ack(_configured(pipeline, bundle), bundle)
    (issue,) = _resources(out.message, "OperationOutcome")[0]["issue"]
    assert (
        issue["expression"] == ["Patient.identifier"]
        and "X-eCPR does not have its format" in (issue["details"]["text"])
    )
    assert "250147X1" not in json.dumps(out.message)


def test_a_hospitalnotification_on_the_hotline_queue_is_answered_fatal_error_we_cannot_receive_it_there(
    shared: Path, pipeline: Pipeline
) -> None:
    path = (
        shared
        / "medcom"
        / "dk-medcom-hospitalnotification-testscripts"
        / "Bundle-5be3a118-64e4-4541-a2fa-a90e3df387d6.xml"
    )
    refused = answered(path.read_bytes(), pipeline, SATURDAY, flow=HOTLINE)
    assert re.search("not a message this queue accepts", str(refused.rejection))
    ack = _ack_of(refused.answer).message
    assert conformance_findings(ack) == []
    (issue,) = _resources(ack, "OperationOutcome")[0]["issue"]
    assert issue["code"] == "not-supported"
    assert issue["details"]["coding"][0]["code"] == "MSG_RECEIVER_UNABLE_TO_RECEIVE_MSG_TYPE"


def test_a_message_that_cannot_be_addressed_is_rejected_without_an_ack(shared: Path, pipeline: Pipeline) -> None:
    bundle = _load(_municipal_nursing_to_gp(shared))
    del bundle["entry"][0]["resource"]["source"]
    refused = answered(json.dumps(bundle).encode(), pipeline, SATURDAY, flow=HOTLINE)
    assert re.search("source.endpoint", str(refused.rejection))
    assert refused.answer.outgoing == ()
    assert [f.kind for f in refused.answer.facts] == ["not-acknowledged"]


def test_a_message_without_a_bundle_id_is_answered_fatal_error(shared: Path, pipeline: Pipeline) -> None:
    bundle = _load(_municipal_nursing_to_gp(shared))
    del bundle["id"]
    refused, out = _rejected_ack(_configured(pipeline, bundle), bundle)
    (issue,) = _resources(out.message, "OperationOutcome")[0]["issue"]
    assert issue["expression"] == ["Bundle.id"] and refused.answer.state.received == ()
    assert conformance_findings(out.message) == []


def test_an_ack_is_never_acknowledged(shared: Path, pipeline: Pipeline) -> None:
    path = shared / "medcom" / "dk-ehmi-sbdh" / "ehmiMessage_Ack.xml"
    _rejection, answer = refusal(path.read_bytes(), pipeline, SATURDAY, flow=HOTLINE)
    assert answer is None


def _first_transmission(
    shared: Path, pipeline: Pipeline, first_code: str
) -> tuple[dict[str, Any], Pipeline, FlowResult]:
    """MedCom's municipal CareCommunication received once and answered `first_code` (`ok`, or `fatal-error` for
    an impossible birth date): the message, the pipeline configured for it, and what the first receipt gave."""
    bundle = _load(_municipal_nursing_to_gp(shared))
    if first_code == "fatal-error":
        for patient in _resources(bundle, "Patient"):
            patient["birthDate"] = "1948-13-45"
    configured = _configured(pipeline, bundle)
    if first_code == "ok":
        return bundle, configured, transform(json.dumps(bundle).encode(), configured, SATURDAY, flow=HOTLINE)
    return bundle, configured, _rejected_ack(configured, bundle)[0].answer


@pytest.mark.parametrize("first_code", ["ok", "fatal-error"])
def test_a_duplicate_is_not_processed_and_gets_the_same_ack_in_a_new_bundle(
    shared: Path, pipeline: Pipeline, first_code: str
) -> None:
    """TouchStone ok-duplicate and fatal-error-duplicate: the same message with a new Bundle.id."""
    bundle, configured, first = _first_transmission(shared, pipeline, first_code)
    first_ack = _ack_of(first).message
    again = copy.deepcopy(bundle)
    again["id"] = "0b6c1f5e-6a55-4d0e-9d61-2a3f5c7e9b10"  # the sender's resend: new Bundle.id, same MessageHeader.id
    later = SATURDAY + timedelta(minutes=31)
    second = transform(json.dumps(again).encode(), configured, later, flow=HOTLINE, state=_remembered(first))
    (out,) = second.outgoing  # nothing routed: not processed again
    assert [f.kind for f in second.facts] == ["duplicate-message"]
    assert _without_transmission(out.message) == _without_transmission(first_ack)
    assert out.message["id"] != first_ack["id"] and out.message["timestamp"] != first_ack["timestamp"]
    header_id = bundle["entry"][0]["resource"]["id"]
    assert second.state.received == (ReceivedMessage(header_id, again["id"], content=content_digest(bundle)),)
    assert conformance_findings(out.message) == []


def _changed_text(bundle: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(bundle)
    (communication,) = _resources(changed, "Communication")
    communication["payload"][0]["contentString"] = "Ændret: ny tekst"
    return changed


@pytest.mark.parametrize("bundle_id", ["same", "new"])
@pytest.mark.parametrize("first_code", ["ok", "fatal-error"])
def test_a_message_resent_under_its_messageheader_id_with_other_content_is_refused(
    shared: Path, pipeline: Pipeline, bundle_id: str, first_code: str
) -> None:
    """MedCom: only an unchanged message is resent under its MessageHeader.id. Taken for a duplicate, the
    changed text was acked with the first `ok` and reached no one."""
    bundle, configured, first = _first_transmission(shared, pipeline, first_code)
    changed = _changed_text(bundle)
    if bundle_id == "new":
        changed["id"] = "0b6c1f5e-6a55-4d0e-9d61-2a3f5c7e9b10"
    refused, out = _rejected_ack(configured, changed, _remembered(first))
    rejection = refused.rejection
    assert isinstance(rejection, ResentWithOtherContent) and rejection.reason == "reused-medcom-message-id"
    assert "MessageHeader.id" in str(rejection)
    header = out.message["entry"][0]["resource"]
    assert header["response"]["code"] == "fatal-error"
    assert header["response"]["identifier"] == bundle["entry"][0]["resource"]["id"]
    (issue,) = _resources(out.message, "OperationOutcome")[0]["issue"]
    assert issue["code"] == "duplicate" and issue["details"]["coding"][0]["code"] == "MSG_DUPLICATE_ID"
    assert issue["expression"] == ["MessageHeader.id"]
    assert conformance_findings(out.message) == []
    assert refused.answer.state.received == (), "not remembered: the first stays the message"
    assert not [o for o in refused.answer.outgoing if o.route.exchange != "rehab.ack"], "nothing routed"


def test_a_retransmission_may_renew_its_bundle_and_send_times_only(shared: Path, pipeline: Pipeline) -> None:
    """What content_digest leaves out: Bundle.id, .identifier, .timestamp, .meta, entry.fullUrl, each
    resource's meta.lastUpdated/versionId, a Provenance's occurredDateTime/recorded; the entries' order."""
    bundle = _load(_municipal_nursing_to_gp(shared))
    configured = _configured(pipeline, bundle)
    first = transform(json.dumps(bundle).encode(), configured, SATURDAY, flow=HOTLINE)
    again = copy.deepcopy(bundle)
    again["id"] = "0b6c1f5e-6a55-4d0e-9d61-2a3f5c7e9b10"
    again["timestamp"] = "2026-12-05T12:31:00+01:00"
    again["meta"] = {**again.get("meta", {}), "lastUpdated": "2026-12-05T12:31:00+01:00"}
    for provenance in _resources(again, "Provenance"):
        provenance["occurredDateTime"] = "2026-12-05T12:31:00+01:00"
        provenance["recorded"] = "2026-12-05T12:31:00+01:00"
    for entry in again["entry"]:
        entry["resource"].setdefault("meta", {})["lastUpdated"] = "2026-12-05T12:31:00+01:00"
    again["entry"][1:] = reversed(again["entry"][1:])
    assert content_digest(again) == content_digest(bundle)
    second = transform(json.dumps(again).encode(), configured, SATURDAY, flow=HOTLINE, state=_remembered(first))
    assert [f.kind for f in second.facts] == ["duplicate-message"]
    assert _ack_of(second).message["entry"][0]["resource"]["response"]["code"] == "ok"


@pytest.mark.parametrize(
    "change",
    [
        lambda b: _resources(b, "Communication")[0]["payload"][0].update(contentString="x"),
        lambda b: _resources(b, "Patient")[0].update(gender="other"),
        lambda b: _resources(b, "Provenance")[0].update(activity={"text": "x"}),
        lambda b: _resources(b, "Communication")[0].update(id="5e0f2c8b-0d3c-4f55-9a8e-1c2b3d4e5f60"),
        lambda b: b["entry"].append({"fullUrl": "urn:x", "resource": {"resourceType": "Basic", "id": "x"}}),
    ],
    ids=["text", "patient", "provenance-activity", "resource-id", "extra-entry"],
)
def test_content_digest_tells_other_content(shared: Path, change: Any) -> None:
    bundle = _load(_municipal_nursing_to_gp(shared))
    other = copy.deepcopy(bundle)
    change(other)
    assert content_digest(other) != content_digest(bundle)


def test_a_messageheader_id_remembered_without_a_digest_is_a_duplicate_as_before(
    shared: Path, pipeline: Pipeline
) -> None:
    """A store from before the digests: nothing to compare with, so a resend is taken as a duplicate and
    its digest kept (the next changed one is refused)."""
    bundle = _load(_municipal_nursing_to_gp(shared))
    configured = _configured(pipeline, bundle)
    first = transform(json.dumps(bundle).encode(), configured, SATURDAY, flow=HOTLINE)
    (received,) = first.state.received
    old = FixedState(
        messages={received.header_id: EarlierMessage(frozenset({received.bundle_id}), received.code, received.ack)}
    )
    changed = _changed_text(bundle)
    changed["id"] = "0b6c1f5e-6a55-4d0e-9d61-2a3f5c7e9b10"
    second = transform(json.dumps(changed).encode(), configured, SATURDAY, flow=HOTLINE, state=old)
    assert [f.kind for f in second.facts] == ["duplicate-message"]
    assert second.state.received[0].content == content_digest(changed)


def test_the_same_transmission_again_means_our_ack_was_lost_and_it_is_sent_again(
    shared: Path, pipeline: Pipeline
) -> None:
    bundle = _load(_municipal_nursing_to_gp(shared))
    configured = _configured(pipeline, bundle)
    first = transform(json.dumps(bundle).encode(), configured, SATURDAY, flow=HOTLINE)
    second = transform(
        json.dumps(bundle).encode(),
        configured,
        SATURDAY + timedelta(hours=1),
        flow=HOTLINE,
        state=_remembered(first),
    )
    (out,) = second.outgoing
    assert [f.kind for f in second.facts] == ["ack-resent"]
    assert _without_transmission(out.message) == _without_transmission(_ack_of(first).message)
    assert out.message["id"] != _ack_of(first).message["id"]


def test_a_reused_bundle_id_with_a_new_message_is_a_fatal_error(shared: Path, pipeline: Pipeline) -> None:
    bundle = _load(_municipal_nursing_to_gp(shared))
    configured = _configured(pipeline, bundle)
    first = transform(json.dumps(bundle).encode(), configured, SATURDAY, flow=HOTLINE)
    other = copy.deepcopy(bundle)
    header = other["entry"][0]["resource"]
    old_id, header["id"] = header["id"], "7d4e2f0a-1b3c-4d5e-8f60-718293a4b5c6"
    for provenance in _resources(other, "Provenance"):
        provenance["target"] = [{"reference": f"MessageHeader/{header['id']}"}]
    other["entry"][0]["fullUrl"] = other["entry"][0]["fullUrl"].replace(old_id, header["id"])
    _, out = _rejected_ack(configured, other, _remembered(first))
    (issue,) = _resources(out.message, "OperationOutcome")[0]["issue"]
    assert issue["code"] == "duplicate" and issue["details"]["coding"][0]["code"] == "MSG_DUPLICATE_ID"


def test_a_message_we_give_up_on_gets_transient_error_and_then_ok_when_it_loads(
    shared: Path, pipeline: Pipeline
) -> None:
    """TouchStone transient-error-duplicate: transient-error first, ok for the resend once it loads."""
    path = _municipal_nursing_to_gp(shared)
    bundle = _load(path)
    answer = answer_unprocessable(path.read_bytes(), pipeline, SATURDAY)
    assert answer is not None and answer.state.received == ()  # not remembered
    transient = _ack_of(answer).message
    assert conformance_findings(transient) == []
    header = transient["entry"][0]["resource"]
    assert header["response"]["code"] == "transient-error"
    assert _resources(transient, "OperationOutcome")[0]["issue"][0]["code"] == "transient"
    again = copy.deepcopy(bundle)
    again["id"] = "0b6c1f5e-6a55-4d0e-9d61-2a3f5c7e9b10"
    later = transform(json.dumps(again).encode(), _configured(pipeline, bundle), SATURDAY, flow=HOTLINE)
    ok = _ack_of(later).message
    assert ok["entry"][0]["resource"]["response"]["code"] == "ok" and ok["id"] != transient["id"]


def test_nothing_to_answer_for_what_is_not_a_medcom_message(pipeline: Pipeline) -> None:
    assert answer_unprocessable(b'{"eventType": "discharge"}', pipeline, SATURDAY) is None
    assert answer_unprocessable(b"<not-xml", pipeline, SATURDAY) is None


def _our_message_and_its_ack(pipeline: Pipeline, code: str) -> tuple[FixedState, dict[str, Any]]:
    """Our referral to Aalborg (SOR 434751000016002) awaiting its ack, and Aalborg's ack with `code`."""
    from integration.domain.course import OutboundStatus
    from integration.messages.acknowledgement import Issue, acknowledgement, addressing, receiver_of
    from tests.conftest import GOLDEN

    event = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"
    (referral,) = transform(event.read_bytes(), pipeline, SATURDAY).outgoing
    issues = [] if code == "ok" else [Issue("invalid", "MSG_BAD_FORMAT", "no", "Patient")]
    ack = acknowledgement(addressing(referral.message), code, issues, SATURDAY, pipeline.referral.terminology)
    header = referral.message["entry"][0]["resource"]["id"]
    sent = OutboundStatus(header, "awaiting", 0, "2512489996", receiver_of(referral.message))
    return FixedState(sent={header: sent}), ack


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (lambda h: h["response"].update(code="maybe"), "MessageHeader.response.code"),
        (lambda h: h["response"].pop("details"), "MessageHeader.response.details"),
        (lambda h: h["response"].update(identifier="not-ours"), "is not a message we sent"),
    ],
    ids=["unknown-code", "error-without-outcome", "unknown-message"],
)
def test_a_bad_ack_for_our_message_is_rejected_with_the_reason(pipeline: Pipeline, breakage: Any, reason: str) -> None:
    state, ack = _our_message_and_its_ack(pipeline, "fatal-error")
    breakage(ack["entry"][0]["resource"])
    rejection, answer = refusal(json.dumps(ack).encode(), pipeline, SATURDAY, flow="acknowledgement", state=state)
    assert re.search(reason, str(rejection))
    assert answer is None, "an ack is never acknowledged"


def test_an_ack_settles_our_message_and_names_its_patient_for_the_audit(pipeline: Pipeline) -> None:
    state, ack = _our_message_and_its_ack(pipeline, "ok")
    result = transform(json.dumps(ack).encode(), pipeline, SATURDAY, flow="acknowledgement", state=state)
    assert result.outgoing == () and result.patient == "2512489996"
    (settled,) = result.state.acks
    assert settled.code == "ok" and [f.kind for f in result.facts] == ["ack-received"]


MORSO_SOR, MORSO_EAN = "435201000016003", "5790007734750"  # Morsø Kommune: not whom our referral went to


def _ack_sender(ack: dict[str, Any]) -> dict[str, Any]:
    """The Organization an ack's MessageHeader.sender names."""
    reference = ack["entry"][0]["resource"]["sender"]["reference"]
    return next(e["resource"] for e in ack["entry"] if f"Organization/{e['resource'].get('id')}" == reference)


def _with_identifier(organization: dict[str, Any], system: str, value: str) -> None:
    for identifier in organization["identifier"]:
        if identifier["system"] == system:
            identifier["value"] = value


def _as_morso(ack: dict[str, Any]) -> None:
    """Another municipality's SOR, EAN and endpoint in the ack (what a forger copies from the SOR registry)."""
    _with_identifier(_ack_sender(ack), "urn:oid:1.2.208.176.1.1", MORSO_SOR)
    _with_identifier(_ack_sender(ack), "https://www.gs1.org/gln", MORSO_EAN)
    ack["entry"][0]["resource"]["source"]["endpoint"] = f"https://sor2.sum.dsdn.dk/#id={MORSO_SOR}"


@pytest.mark.parametrize(
    ("forgery", "field"),
    [
        (_as_morso, "MessageHeader.sender"),
        (lambda a: _with_identifier(_ack_sender(a), "urn:oid:1.2.208.176.1.1", MORSO_SOR), "MessageHeader.sender"),
        (lambda a: _with_identifier(_ack_sender(a), "https://www.gs1.org/gln", MORSO_EAN), "MessageHeader.sender"),
        (lambda a: _ack_sender(a).update(identifier=[]), "MessageHeader.sender"),
        (
            lambda a: a["entry"][0]["resource"].update(sender={"reference": "Organization/elsewhere"}),
            "MessageHeader.sender",
        ),
        (
            lambda a: a["entry"][0]["resource"]["source"].update(endpoint=f"https://sor2.sum.dsdn.dk/#id={MORSO_SOR}"),
            "MessageHeader.source.endpoint",
        ),
        # the receiver's id first, another beside it: one Organization is one party (the second attack on issue 16)
        (
            lambda a: _ack_sender(a)["identifier"].append({"system": "urn:oid:1.2.208.176.1.1", "value": MORSO_SOR}),
            "MessageHeader.sender",
        ),
        (
            lambda a: _ack_sender(a)["identifier"].append({"system": "https://www.gs1.org/gln", "value": MORSO_EAN}),
            "MessageHeader.sender",
        ),
    ],
    ids=[
        "another-municipality",
        "sor",
        "ean",
        "no-ids",
        "no-sender-organization",
        "endpoint",
        "a-second-sor",
        "a-second-ean",
    ],
)
@pytest.mark.parametrize("code", ["ok", "fatal-error"])
def test_an_ack_not_from_the_receiver_of_our_message_settles_nothing(
    pipeline: Pipeline, forgery: Any, field: str, code: str
) -> None:
    from integration.flows.acks_received import NotFromTheReceiver

    state, ack = _our_message_and_its_ack(pipeline, code)
    forgery(ack)
    rejection, answer = refusal(json.dumps(ack).encode(), pipeline, SATURDAY, flow="acknowledgement", state=state)
    assert isinstance(rejection, NotFromTheReceiver) and rejection.reason == "ack-not-from-receiver"
    assert rejection.field == field and "only that receiver may acknowledge it" in str(rejection)
    assert MORSO_SOR not in str(rejection), "the reason names our receiver, never repeats the ack's value"
    assert answer is None, "an ack is never acknowledged, and nothing is settled"


def test_an_ack_is_taken_from_the_receiver_under_either_gln_system(pipeline: Pipeline) -> None:
    """dk-core 3.5.0 writes the GLN under http://www.gs1.org/gln: the same number is the same receiver."""
    state, ack = _our_message_and_its_ack(pipeline, "ok")
    for identifier in _ack_sender(ack)["identifier"]:
        if identifier["system"] == "https://www.gs1.org/gln":
            identifier["system"] = "http://www.gs1.org/gln"
    result = transform(json.dumps(ack).encode(), pipeline, SATURDAY, flow="acknowledgement", state=state)
    assert [a.code for a in result.state.acks] == ["ok"]


def test_no_ack_settles_a_message_whose_receiver_we_do_not_know(pipeline: Pipeline) -> None:
    from dataclasses import replace

    from integration.domain.course import Addressee
    from integration.flows.acks_received import NotFromTheReceiver, not_from_the_receiver

    state, ack = _our_message_and_its_ack(pipeline, "ok")
    ((header, sent),) = state.sent.items()
    unknown = FixedState(sent={header: replace(sent, receiver=None)})
    rejection, _ = refusal(json.dumps(ack).encode(), pipeline, SATURDAY, flow="acknowledgement", state=unknown)
    assert isinstance(rejection, NotFromTheReceiver) and rejection.field == "MessageHeader.response.identifier"
    anyone = Addressee("434751000016002", None, "https://sor2.sum.dsdn.dk/#id=434751000016002")
    assert not_from_the_receiver(anyone, Addressee("434751000016002", None, None)) is not None
    assert not_from_the_receiver(anyone, Addressee("434751000016002", None, anyone.endpoint)) is None


def test_an_ack_with_thousands_of_issues_is_recorded_with_the_first_hundred(pipeline: Pipeline) -> None:
    from integration.messages.acknowledgement import Issue

    state, ack = _our_message_and_its_ack(pipeline, "fatal-error")
    (outcome,) = _resources(ack, "OperationOutcome")
    outcome["issue"] = [Issue("invalid", "MSG_BAD_FORMAT", f"problem {n}").as_fhir() for n in range(1_500)]
    result = transform(json.dumps(ack).encode(), pipeline, SATURDAY, flow="acknowledgement", state=state)
    (fact,) = result.facts
    assert fact.kind == "ack-received" and len(fact.detail["issues"]) == 100
    assert fact.detail["issuesNotRecorded"] == 1_400
    assert [a.code for a in result.state.acks] == ["fatal-error"]
