"""MedCom CareCommunication requests: every shared example routes or is rejected clearly; replies are MedCom replies."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import replace
from datetime import datetime, time
from pathlib import Path
from typing import Any

import holidays
import pytest
from lxml import etree

from integration.conformance.validation import messaging_problems
from integration.domain.course import Course, FixedState
from integration.domain.hotline import Hotline
from integration.domain.opening_hours import OpeningHours
from integration.errors import InvalidInput, UnknownMessageKind
from integration.flows.dispatch import Pipeline, transform
from integration.formats.care_communication import decode_xml_bundle, parse_care_communication
from tests.refusals import answered

SATURDAY = datetime.fromisoformat("2026-11-28T10:00:00+01:00")
HOTLINE = "hotline"  # the queue, and so the row of the dispatch, that takes CareCommunications


AS_SENT = Path(tempfile.gettempdir()) / "rehab-tests-touchstone-as-sent"
_TEMPLATED_ID = re.compile(r"[A-Za-z-]+-(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def as_sent(path: Path) -> Path:
    """A TouchStone send example as TouchStone sends it. The file's Bundle.id is a template ("S-C-new-<uuid>"),
    which MedCom's rule of a new UUID per transmission refuses (fatal-error); sent, it is the UUID it ends in.
    Other files are returned as they are."""
    raw = path.read_bytes()
    bundle = _bundle(path)
    templated = _TEMPLATED_ID.fullmatch(str(bundle.get("id", "")))
    if templated is None:
        return path
    if path.suffix == ".xml":
        root = etree.fromstring(raw)
        root.find("{http://hl7.org/fhir}id").set("value", templated["uuid"])
        raw = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    else:
        bundle["id"] = templated["uuid"]
        raw = json.dumps(bundle, ensure_ascii=False, indent=2).encode()
    AS_SENT.mkdir(exist_ok=True)
    sent = AS_SENT / path.name
    if not sent.exists() or sent.read_bytes() != raw:
        partial = sent.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(raw)
        partial.replace(sent)  # other test processes may read it meanwhile
    return sent


def _examples(shared: Path) -> list[Path]:
    folders = [
        shared / "medcom" / "dk-medcom-carecommunication-testscripts" / "send",
        shared / "medcom" / "dk-medcom-carecommunication" / "examples",
    ]
    return sorted(p for folder in folders for p in folder.iterdir() if p.suffix in (".json", ".xml"))


def _municipal_nursing_to_gp(shared: Path) -> Path:
    """The shared example S-C, as TouchStone sends it (`as_sent`): municipal home nursing (Aalborg) writes to a GP."""
    return as_sent(
        shared
        / "medcom"
        / "dk-medcom-carecommunication-testscripts"
        / "send"
        / "Bundle-S-C-new-aca3d03a-febd-4b88-ad53-ac1bc36da615.json"
    )


def _bundle(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    return decode_xml_bundle(raw, 10**7) if path.suffix == ".xml" else json.loads(raw)


def _with_hotline_for(pipeline: Pipeline, sor: str) -> Pipeline:
    hours = OpeningHours(
        {d: (time(8), time(15)) for d in range(5)}, frozenset(), holidays.country_holidays("DK").__contains__
    )
    hotline = Hotline(sor, "Modtagende afdeling", hours, "Bagvagt", "+45 11 22 33 44")
    return replace(pipeline, hotline=replace(pipeline.hotline, hotlines={sor: hotline}))


def header_in_id(bundle: dict[str, Any]) -> str:
    return str(bundle["entry"][0]["resource"]["id"])


def _entries(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def test_every_shared_carecommunication_example_routes_with_a_valid_reply_or_is_rejected(
    shared: Path, pipeline: Pipeline
) -> None:
    routed, rejected = [], []
    for path in map(as_sent, _examples(shared)):
        bundle = _bundle(path)
        try:
            request = parse_care_communication(bundle, pipeline.municipality_sors)
        except InvalidInput as exc:
            rejected.append((path.name, str(exc)))
            continue
        except UnknownMessageKind:
            rejected.append((path.name, "not a CareCommunication"))
            continue
        configured = _with_hotline_for(pipeline, request.addressed_department or "")
        result = transform(path.read_bytes(), configured, SATURDAY, flow=HOTLINE)
        forward, reply_out, ack = result.outgoing
        assert ack.route.routing_key == f"ack.{request.sender_id}"
        assert ack.message["entry"][0]["resource"]["response"] == {"identifier": header_in_id(bundle), "code": "ok"}
        assert forward.message == bundle and forward.id == bundle["entry"][0]["resource"]["id"]
        reply = reply_out.message
        assert messaging_problems(reply) == []
        header, header_in = reply["entry"][0]["resource"], bundle["entry"][0]["resource"]
        (comm,), (comm_in,) = (
            _entries(reply, "Communication"),
            [
                r
                for r in _entries(bundle, "Communication")
                if f"Communication/{r['id']}" == header_in["focus"][0]["reference"]
            ],
        )
        assert comm["identifier"] == comm_in["identifier"]  # same thread
        assert len(comm["payload"]) == len(comm_in["payload"]) + 1
        assert all("data" not in p.get("contentAttachment", {}) for p in comm["payload"])
        provenances = _entries(reply, "Provenance")
        assert len(provenances) == len(_entries(bundle, "Provenance")) + 1
        ours = next(p for p in provenances if p["target"][0]["reference"] == f"MessageHeader/{header['id']}")
        assert ours["activity"]["coding"][0]["code"] == "reply-message"
        assert {"role": "revision", "what": {"reference": f"MessageHeader/{header_in['id']}"}} in ours["entity"]
        assert header["destination"][0]["receiver"] == header_in["sender"]
        assert reply_out.route.routing_key == f"hotline.reply.{request.sender_id}"
        routed.append(path.name)
    assert len(routed) >= 5, (routed, rejected)
    # the acknowledgements among the examples are not CareCommunications, and say so
    assert rejected and all(
        "Acknowledgement" in name and "got 'acknowledgement-message'" in reason for name, reason in rejected
    ), rejected


def test_an_acknowledgement_on_the_hotline_queue_is_rejected_as_the_wrong_kind(
    shared: Path, pipeline: Pipeline
) -> None:
    path = shared / "medcom" / "dk-medcom-carecommunication" / "examples" / "Flow2-Acknowledgement_Ex_to_OIOXML.xml"
    with pytest.raises(UnknownMessageKind, match="not a message this queue accepts"):
        transform(path.read_bytes(), pipeline, SATURDAY, flow=HOTLINE)


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        ({"system": "http://rn.dk", "value": "0706830VJ9"}, "needs a CPR identifier, or a replacement CPR"),
        ({"system": "urn:oid:1.2.208.176.1.6.1.1", "value": "250147X1"}, "an X-eCPR does not have its format"),
        ({"system": "urn:oid:1.2.208.176.1.6.1.3.179", "value": "0101701TT2"}, "a D-eCPR does not have its format"),
        ({"use": "temp", "system": "urn:oid:1.2.208.176.1.2", "value": "0101701234"}, "use must be official"),
    ],
)
def test_a_carecommunication_naming_its_patient_by_no_usable_number_is_refused_with_the_reason(
    shared: Path, pipeline: Pipeline, identifier: dict[str, str], expected: str
) -> None:
    bundle = json.loads(_municipal_nursing_to_gp(shared).read_bytes())
    for patient in _entries(bundle, "Patient"):
        patient["identifier"] = [identifier]
    rejection = answered(json.dumps(bundle).encode(), pipeline, SATURDAY, flow=HOTLINE).rejection
    assert isinstance(rejection, InvalidInput) and re.search(expected, str(rejection))
    assert rejection.field == "Patient.identifier" and identifier["value"] not in str(rejection)


def test_a_municipality_after_the_handover_gets_a_medcom_reply_saying_the_gp_is_responsible(
    shared: Path, pipeline: Pipeline
) -> None:
    path = _municipal_nursing_to_gp(shared)
    bundle = json.loads(path.read_bytes())
    request = parse_care_communication(bundle, {"328081000016004"})  # treat the sender as a municipality
    configured = replace(
        _with_hotline_for(pipeline, request.addressed_department or ""),
        municipality_sors=frozenset({"328081000016004"}),
    )
    closed = Course(request.patient, request.addressed_department or "", "851", False, "gp")
    result = transform(
        path.read_bytes(), configured, SATURDAY, flow=HOTLINE, state=FixedState(courses={request.patient: closed})
    )
    forward, reply, _ack = result.outgoing
    assert forward.route.routing_key == "hotline.unmatched"
    text = _entries(reply.message, "Communication")[0]["payload"][-1]["contentString"]
    assert "praktiserende læge" in text


def _department_reply(shared: Path) -> tuple[dict[str, Any], str]:
    """A CareCommunication sent by the department of the shared example S-C (as its answer)."""
    path = _municipal_nursing_to_gp(shared)
    bundle = json.loads(path.read_bytes())
    header = bundle["entry"][0]["resource"]
    header["sender"], header["destination"][0]["receiver"] = header["destination"][0]["receiver"], header["sender"]
    source, destination = header["source"], header["destination"][0]  # the endpoints follow their parties
    source["endpoint"], destination["endpoint"] = destination["endpoint"], source["endpoint"]
    department = next(
        e["resource"] for e in bundle["entry"] if f"Organization/{e['resource']['id']}" == header["sender"]["reference"]
    )
    sor = next(i["value"] for i in department["identifier"] if i["system"] == "urn:oid:1.2.208.176.1.1")
    thread = _entries(bundle, "Communication")[0]["identifier"][0]["value"]
    return bundle, sor + "|" + thread


def test_a_departments_answer_goes_back_to_the_requester_by_thread(shared: Path, pipeline: Pipeline) -> None:
    bundle, key = _department_reply(shared)
    sor, thread = key.split("|")
    configured = _with_hotline_for(pipeline, sor)
    result = transform(
        json.dumps(bundle).encode(),
        configured,
        SATURDAY,
        flow=HOTLINE,
        state=FixedState(threads={thread: "434751000016002"}),
    )
    out, ack = result.outgoing
    assert out.route.routing_key == "hotline.reply.434751000016002" and out.message == bundle
    assert ack.route.routing_key == f"ack.{sor}"
    assert result.state.answered == (thread,)
    assert [f.kind for f in result.facts] == ["hotline-answered", "acknowledged"]


def test_a_departments_message_in_an_unknown_thread_goes_to_triage(shared: Path, pipeline: Pipeline) -> None:
    bundle, key = _department_reply(shared)
    configured = _with_hotline_for(pipeline, key.split("|")[0])
    result = transform(json.dumps(bundle).encode(), configured, SATURDAY, flow=HOTLINE)
    assert [o.route.routing_key for o in result.outgoing] == ["hotline.unmatched", f"ack.{key.split('|')[0]}"]
    assert result.state.answered == () and result.facts[0].kind == "hotline-answer-unmatched"


def test_a_repeated_resource_with_the_id_of_one_of_ours_is_refused_not_dropped() -> None:
    """Our reply keeps one entry per id; a received resource that takes the id of our MessageHeader,
    CareCommunication or Provenance would silently drop one of the two, so the input is refused naming it."""
    from integration.errors import InvalidInput
    from integration.messages.care_communication import _one_per_id

    ours = frozenset({"hdr", "comm", "prov"})
    received = [{"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "p1"}]
    assert _one_per_id(received, set(ours), ours) == (received[0],)
    with pytest.raises(InvalidInput) as refused:
        _one_per_id([{"resourceType": "Organization", "id": "prov"}], set(ours), ours)
    assert refused.value.field == "Organization.id"
