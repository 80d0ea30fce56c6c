"""An acute request that no department can take still gets an on-call contact back (issue 11, point 11).

With no known course and no department named (or one without a hotline), a request goes to manual
triage; an acute one's sender must be told whom to ring at once: the region's on-call contact from
mappings/hotlines.yaml, in the sender's own format (the JSON advice reply, or a MedCom reply-message).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from integration.conformance.validation import messaging_problems
from integration.domain.course import FixedState
from integration.domain.hotline import AdviceRequest, Outcome, SenderKind, route
from integration.flows.dispatch import Pipeline, transform
from integration.flows.hotline import handle_care_communication
from integration.formats.care_communication import parse_care_communication
from tests.conftest import GOLDEN

HOTLINE = GOLDEN / "hotline"
NIGHT = datetime.fromisoformat("2026-11-23T22:00:00+01:00")


def _acute_without_course() -> bytes:
    document = json.loads((HOTLINE / "patient-without-course.request.json").read_text(encoding="utf-8"))
    return json.dumps(document | {"urgency": "acute"}).encode()


def test_the_route_of_an_acute_request_without_a_department_replies() -> None:
    request = AdviceRequest("r-1", SenderKind.MUNICIPALITY, "434751000016002", "2512489996", "x", True, NIGHT)
    decision = route(request, None, {}, NIGHT)
    assert decision.outcome is Outcome.ACUTE_TO_TRIAGE and decision.queue == "unmatched" and decision.replies
    routine = route(replace(request, acute=False), None, {}, NIGHT)
    assert routine.outcome is Outcome.UNMATCHED and not routine.replies


def test_an_acute_json_request_without_course_gets_the_regional_on_call_back(pipeline: Pipeline) -> None:
    result = transform(_acute_without_course(), pipeline, NIGHT, state=FixedState())
    forward, reply = (o.as_json()["message"] for o in result.outgoing)
    assert [o.route.routing_key for o in result.outgoing] == ["hotline.unmatched", "hotline.reply.434751000016002"]
    assert forward["urgency"] == "acute"
    on_call = pipeline.hotline.regional_on_call
    assert reply["kind"] == "on-call" and reply["onCall"] == {"name": on_call.name, "phone": on_call.phone}
    assert on_call.phone in reply["text"] and "manuel visitation" in reply["text"]
    assert "department" not in reply and "3001749995" not in json.dumps(reply)
    (fact,) = result.facts
    assert fact.detail["outcome"] == "acute-to-triage" and fact.detail["queue"] == "unmatched"


def test_an_acute_json_request_naming_a_department_without_a_hotline_gets_the_regional_on_call(
    pipeline: Pipeline,
) -> None:
    document = json.loads(_acute_without_course()) | {"department": "123456789012"}
    result = transform(json.dumps(document).encode(), pipeline, NIGHT, state=FixedState())
    reply = result.outgoing[-1].as_json()["message"]
    assert reply["onCall"]["phone"] == pipeline.hotline.regional_on_call.phone


def _carecommunication() -> dict[str, Any]:
    return json.loads((HOTLINE / "municipality-routine.carecommunication.json").read_text(encoding="utf-8"))


def test_an_acute_carecommunication_without_a_department_gets_a_medcom_reply_naming_the_regional_on_call(
    pipeline: Pipeline,
) -> None:
    """MedCom does not use CareCommunications for acute matters (the reader marks none acute), so the flow is
    given one as acute directly: should one ever be, its reply is a reply-message with the region's contact."""
    bundle = _carecommunication()
    request = parse_care_communication(bundle, pipeline.municipality_sors)
    ctx = replace(pipeline.hotline, hotlines={})  # the department it names has no hotline
    result = handle_care_communication(replace(request, acute=True), bundle, FixedState(), ctx, NIGHT)
    forward, reply = result.outgoing
    assert forward.route.routing_key == "hotline.unmatched"
    assert reply.route.routing_key == f"hotline.reply.{request.sender_id}" and reply.expects_ack
    assert messaging_problems(reply.message) == []
    on_call = pipeline.hotline.regional_on_call
    communication = next(
        e["resource"] for e in reply.message["entry"] if e["resource"]["resourceType"] == "Communication"
    )
    text = communication["payload"][-1]["contentString"]
    assert on_call.name in text and on_call.phone in text
    assert on_call.phone in json.dumps(reply.message)  # the author's telecom too


def test_hotlines_yaml_marks_the_regional_on_call_a_placeholder() -> None:
    import yaml

    from integration.config import PROJECT_ROOT

    doc = yaml.safe_load((PROJECT_ROOT / "mappings" / "hotlines.yaml").read_text(encoding="utf-8"))
    assert doc["regionalOnCall"]["placeholder"] is True and doc["regionalOnCall"]["phone"]
    assert "acuteToTriage" in doc["replies"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda doc: doc.pop("regionalOnCall"), "lacks the key 'regionalOnCall'"),
        (lambda doc: doc["regionalOnCall"].update(phone=" "), "regionalOnCall needs a name and a phone"),
        (lambda doc: doc["replies"].pop("acuteToTriage"), "replies lacks acuteToTriage"),
        (lambda doc: doc.update(timezone="Europe/Aarhus"), "not an IANA time zone"),
    ],
)
def test_hotlines_yaml_without_what_an_acute_reply_needs_is_refused_at_start(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], says: str
) -> None:
    import shutil

    import yaml

    from integration.config import PROJECT_ROOT
    from integration.errors import ConfigurationError
    from integration.mappings import load_mappings

    mappings = tmp_path / "mappings"
    shutil.copytree(PROJECT_ROOT / "mappings", mappings)
    doc = yaml.safe_load((mappings / "hotlines.yaml").read_text(encoding="utf-8"))
    change(doc)
    (mappings / "hotlines.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        load_mappings(mappings)
