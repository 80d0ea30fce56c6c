"""`integration validate`'s engine answers any JSON value and never raises (issue 11, point 9).

Bundles whose entries are random JSON shapes (no resourceType, `"resource": null`, no resource, no id,
numbers and lists where objects belong), and real messages with one value anywhere replaced by a
random JSON value or removed: `conformance` returns its findings, every check made (no layer failing
on the input, which would be a defect of ours that the CLI turns into exit 2), and transform's
output array of such messages is read item by item the same way.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration.conformance.checks import check_document, conformance
from integration.domain.course import Course, FixedState
from integration.fhir import fhir_json
from integration.flows.dispatch import Pipeline, transform
from tests.conftest import GOLDEN

BOUNDED = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same examples on every run, so CI is deterministic
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    database=None,
)
NOW = datetime.fromisoformat("2027-01-12T10:20:00+01:00")
RESOURCE_TYPES = (
    "Bundle",
    "MessageHeader",
    "Communication",
    "Patient",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Provenance",
    "ServiceRequest",
    "Composition",
    "OperationOutcome",
    "Nonsense",
    "",
)
FHIR_KEYS = (
    "resourceType",
    "id",
    "meta",
    "profile",
    "fullUrl",
    "resource",
    "entry",
    "reference",
    "identifier",
    "system",
    "value",
    "code",
    "coding",
    "eventCoding",
    "focus",
    "sender",
    "destination",
    "receiver",
    "endpoint",
    "target",
    "entity",
    "what",
    "activity",
    "text",
    "div",
    "url",
    "extension",
    "payload",
    "contentString",
    "category",
    "subject",
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
    | st.text(max_size=12)
    | st.sampled_from(RESOURCE_TYPES)
    | st.sampled_from(["urn:uuid:8a9e2b4c-1d3f-4e5a-9b6c-7d8e9f0a1b2c", "Patient/x", "<div>x</div>"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FHIR_KEYS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
RESOURCE = st.fixed_dictionaries(
    {},
    optional={
        "resourceType": st.sampled_from(RESOURCE_TYPES) | JSON,
        "id": st.text(max_size=10) | JSON,
        "meta": st.fixed_dictionaries({}, optional={"profile": st.lists(st.text(max_size=30) | JSON, max_size=2)})
        | JSON,
        "eventCoding": st.fixed_dictionaries({"code": st.sampled_from(["care-communication-message"]) | JSON}),
        "identifier": JSON,
        "text": JSON,
    },
)
ENTRY = JSON | st.fixed_dictionaries({}, optional={"fullUrl": st.text(max_size=20) | JSON, "resource": RESOURCE | JSON})
BUNDLE = st.fixed_dictionaries(
    {"resourceType": st.just("Bundle")},
    optional={
        "id": st.text(max_size=10) | JSON,
        "type": st.sampled_from(["message", "document", "collection"]) | JSON,
        "entry": st.lists(ENTRY, max_size=6) | JSON,
        "meta": JSON,
        "timestamp": JSON,
    },
)


def _made_completely(result: Any) -> None:
    assert all(isinstance(f, str) and f for f in result.findings)
    assert result.incomplete == (), result.incomplete  # a layer failed on the input: a defect to fix


@BOUNDED
@given(bundle=BUNDLE)
def test_a_bundle_of_random_entries_gets_findings_never_an_exception(bundle: dict[str, Any]) -> None:
    _made_completely(conformance(bundle))


@BOUNDED
@given(document=JSON)
def test_any_json_value_gets_findings_never_an_exception(document: Any) -> None:
    for checked in check_document(document):
        if checked.result is not None:
            _made_completely(checked.result)


@pytest.fixture(scope="module")
def samples(pipeline: Pipeline) -> list[dict[str, Any]]:
    """Real messages: a CareCommunication, a referral and the closing report's status message."""
    event = (GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json").read_bytes()
    referral = transform(event, pipeline, NOW).outgoing[0].message
    course = Course("2512489996", "715541000016001", "851", True, "hospital")
    report = (GOLDEN / "closing" / "01-full-items.report.xml").read_bytes()
    status = transform(report, pipeline, NOW, state=FixedState(courses={course.patient: course})).outgoing[0].message
    cc = json.loads((GOLDEN / "hotline" / "municipality-routine.carecommunication.json").read_text(encoding="utf-8"))
    return [fhir_json.loads(fhir_json.dumps(m)) for m in (cc, referral, status)]  # decimals stay JSON numbers


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*path, index))
    return found


@BOUNDED
@given(data=st.data(), replacement=JSON, remove=st.booleans())
def test_a_real_message_with_any_value_replaced_or_removed_gets_findings(
    samples: list[dict[str, Any]], data: st.DataObject, replacement: Any, remove: bool
) -> None:
    bundle = copy.deepcopy(data.draw(st.sampled_from(samples), label="sample"))
    path = data.draw(st.sampled_from(_paths(bundle)[1:]), label="path")
    parent = bundle
    for step in path[:-1]:
        parent = parent[step]
    if remove:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    _made_completely(conformance(bundle))
    as_output = [{"route": {"routingKey": "x"}, "message": bundle}, {"message": replacement}, replacement]
    for checked in check_document(as_output):
        if checked.result is not None:
            _made_completely(checked.result)


def test_the_real_messages_conform(samples: list[dict[str, Any]]) -> None:
    """The mutations start from messages the checks pass (else a finding would prove nothing)."""
    for sample in samples:
        result = conformance(sample)
        assert result.incomplete == () and Decimal(len(result.findings)) == 0, result.findings
