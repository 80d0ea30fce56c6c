"""The `dcs-suggested` fact of the referral flow (mappings/dcs-suggestions.yaml): audited beside the clinician's
criteria when a code suggests one, and never a change to the risk group, the pathway or a message we send."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration.config import PROJECT_ROOT
from integration.domain.risk import DCS_CRITERIA
from integration.errors import ConfigurationError
from integration.flows.dispatch import Pipeline, transform
from integration.flows.results import FlowResult
from integration.mappings import load_mappings
from tests.conftest import FIXED_NOW, GOLDEN

BASE = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"  # I21.4, incomplete-revascularisation


def _event(**changes: Any) -> bytes:
    event = json.loads(BASE.read_bytes())
    event.update(changes)
    return orjson.dumps(event)


def _without_table(pipeline: Pipeline) -> Pipeline:
    return replace(pipeline, referral=replace(pipeline.referral, dcs_suggestions=()))


def _suggested(result: FlowResult) -> list[dict[str, Any]]:
    return [dict(f.detail) for f in result.facts if f.kind == "dcs-suggested"]


def _sent(result: FlowResult) -> bytes:
    return b"\n".join(orjson.dumps(o.as_json(), option=orjson.OPT_SORT_KEYS) for o in result.outgoing)


def _risk_group(result: FlowResult) -> str:
    return next(f.detail["riskGroup"] for f in result.facts if f.kind == "referral-built")


def test_a_suggestion_is_audited_beside_the_clinicians_criteria(pipeline: Pipeline) -> None:
    raw = _event(
        diagnoses=[
            {"system": "SKS", "code": "DI214", "primary": True},
            {"system": "SKS", "code": "DI509"},
            {"system": "ICD-10", "code": "I48.0"},
        ],
        procedures=[{"system": "SKS", "code": "BFCB00", "date": "2026-11-10"}],
        riskCriteria=["heart-failure", "incomplete-revascularisation"],
    )
    result = transform(raw, pipeline, FIXED_NOW)
    event_id = json.loads(raw)["eventId"]
    assert _suggested(result) == [
        {
            "eventId": event_id,
            "suggested": [
                {"criterion": "heart-failure", "codes": ["DI509"]},
                {"criterion": "icd-or-arrhythmia-risk", "codes": ["BFCB00"]},
                {"criterion": "uncontrolled-arrhythmia", "codes": ["I48.0"]},
            ],
            "clinicianCriteria": ["heart-failure", "incomplete-revascularisation"],
            "notTicked": ["icd-or-arrhythmia-risk", "uncontrolled-arrhythmia"],
            "tickedWithoutCode": ["incomplete-revascularisation"],
            "riskGroup": "moderate",
        }
    ]
    assert [f.kind for f in result.facts][-1] == "dcs-suggested"  # after what the flow decided


def test_no_fact_when_no_code_suggests_anything(pipeline: Pipeline) -> None:
    assert _suggested(transform(_event(), pipeline, FIXED_NOW)) == []


def test_without_the_table_nothing_is_suggested(pipeline: Pipeline) -> None:
    raw = _event(diagnoses=[{"system": "ICD-10", "code": "I50.9", "primary": True}])
    assert _suggested(transform(raw, pipeline, FIXED_NOW)) != []
    assert _suggested(transform(raw, _without_table(pipeline), FIXED_NOW)) == []


def test_a_suggestion_the_clinician_did_not_tick_changes_no_message_and_no_risk_group(pipeline: Pipeline) -> None:
    # the clinician ticked nothing: low risk, whatever the codes say (an ICD, heart failure, COPD)
    raw = _event(
        diagnoses=[{"system": "ICD-10", "code": "I50.9", "primary": True}, {"system": "SKS", "code": "DJ441"}],
        procedures=[{"system": "SKS", "code": "BFCB00"}],
        riskCriteria=[],
        clinicianRiskGroup="low",
    )
    with_table = transform(raw, pipeline, FIXED_NOW)
    without = transform(raw, _without_table(pipeline), FIXED_NOW)
    assert _suggested(with_table)[0]["notTicked"] == [  # in the table's order
        "heart-failure",
        "icd-or-arrhythmia-risk",
        "significant-comorbidity",
    ]
    assert _risk_group(with_table) == _risk_group(without) == "low"
    assert with_table.outgoing and _sent(with_table) == _sent(without)
    assert [f for f in with_table.facts if f.kind != "dcs-suggested"] == list(without.facts)
    assert with_table.state == without.state


CODES = st.sampled_from(
    ["I21.4", "I50.9", "I11.0", "I42.0", "I46.9", "I47.2", "I48.9", "T81.4", "I97.0", "N18.5", "J44.1", "E11.7"]
)


@st.composite
def diagnoses(draw: st.DrawFn) -> list[dict[str, Any]]:
    codes = draw(st.lists(CODES, min_size=1, max_size=5))
    sks = draw(st.lists(st.booleans(), min_size=len(codes), max_size=len(codes)))
    items = [
        {"system": "SKS", "code": "D" + code.replace(".", "")} if as_sks else {"system": "ICD-10", "code": code}
        for code, as_sks in zip(codes, sks, strict=True)
    ]
    items[0]["primary"] = True
    return items


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    diagnoses=diagnoses(),
    procedures=st.lists(st.sampled_from(["BFCB00", "BFCA00", "KFNG05"]), max_size=2),
    ticked=st.lists(st.sampled_from(DCS_CRITERIA), unique=True, max_size=3),
)
def test_suggestions_never_change_what_is_sent_nor_the_risk_group(
    pipeline: Pipeline, diagnoses: list[dict[str, Any]], procedures: list[str], ticked: list[str]
) -> None:
    raw = _event(
        diagnoses=diagnoses, procedures=[{"system": "SKS", "code": c} for c in procedures], riskCriteria=ticked
    )
    with_table = transform(raw, pipeline, FIXED_NOW)
    without = transform(raw, _without_table(pipeline), FIXED_NOW)
    assert _sent(with_table) == _sent(without)  # byte for byte
    assert [f for f in with_table.facts if f.kind != "dcs-suggested"] == list(without.facts)
    assert with_table.state == without.state
    for fact in _suggested(with_table):
        assert fact["clinicianCriteria"] == ticked
        assert set(fact["notTicked"]).isdisjoint(ticked)


# -- the table file ------------------------------------------------------------------------------------------
@pytest.fixture
def table_copy(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(PROJECT_ROOT / "mappings", target)
    return target


def _replace_in_table(directory: Path, old: str, new: str) -> None:
    path = directory / "dcs-suggestions.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_shipped_table_loads() -> None:
    rules = load_mappings(PROJECT_ROOT / "mappings").dcs_suggestions
    assert len(rules) >= 20 and {r.criterion for r in rules} <= set(DCS_CRITERIA)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "criterion: uncontrolled-arrhythmia",
            "criterion: arrhythmia",
            r"rules\[4\]\.criterion names no DCS criterion",
        ),
        ("diagnoses: [I48]", "diagnoses: [DI48]", r"rules\[4\]\.diagnoses: 'DI48' is not an ICD-10 code prefix"),
        ("procedures: [BFCB]", "procedures: [B]", r"rules\[2\]\.procedures: 'B' is not an SKS procedure code prefix"),
        ("diagnoses: [I48]", "diagnosis: [I48]", r"rules\[4\] has unknown keys \['diagnosis'\]"),
        ("    diagnoses: [I48]\n", "", r"rules\[4\] names no diagnoses and no procedures"),
        ("diagnoses: [I48]", "diagnoses: I48", r"rules\[4\]\.diagnoses is not a list"),
        ("rules:", "rulez:", "lacks the key 'rules'"),
    ],
)
def test_a_wrong_table_stops_the_service_naming_the_rule(table_copy: Path, old: str, new: str, message: str) -> None:
    _replace_in_table(table_copy, old, new)
    with pytest.raises(ConfigurationError, match=message):
        load_mappings(table_copy)


def test_a_missing_table_is_a_configuration_error(table_copy: Path) -> None:
    (table_copy / "dcs-suggestions.yaml").unlink()
    with pytest.raises(ConfigurationError, match="cannot read .*dcs-suggestions.yaml"):
        load_mappings(table_copy)
