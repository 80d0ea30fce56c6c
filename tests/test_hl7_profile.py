"""mappings/hl7.yaml: the default profile loads, and a wrong file is a ConfigurationError naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.config import PROJECT_ROOT
from integration.errors import ConfigurationError
from integration.formats.adt_profile import Place, profile_from_mapping
from integration.mappings import load_hl7_profile, load_mappings

DEFAULT = PROJECT_ROOT / "mappings" / "hl7.yaml"


def default() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(DEFAULT.read_text(encoding="utf-8"))
    return doc


def test_the_default_profile_loads_with_its_departments() -> None:
    directory = PROJECT_ROOT / "mappings"
    profile = load_hl7_profile(directory, load_mappings(directory).directory)
    assert profile.unit_sor == Place("PV1", 3, 10) and str(profile.timezone) == "Europe/Copenhagen"
    assert "715541000016001" in profile.departments
    assert str(profile.rehabilitation["decision"]) == "ZRH-3"
    assert str(profile.exercise_test["performed"]) == "OBX[RH-EXT-PERFORMED]"


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("version", 2, "version"),
        ("timezone", "Europe/Atlantis", "timezone"),
        ("timezone", None, "timezone"),
        ("admission.unitSor", "PV1-3.x", "admission.unitSor"),
        ("admission.visitNumber", None, "admission.visitNumber"),
        ("patient.identifier", 3, "patient.identifier"),
        ("patient.assigningAuthorities", "CPR", "patient.assigningAuthorities"),
        ("event.occurredAt", [], "event.occurredAt"),
        ("diagnoses.codingSystems", {"I10": "ICD-9"}, "diagnoses.codingSystems.I10"),
        ("exerciseTest.performed", {"segment": "OBX"}, "exerciseTest.performed"),
        ("rehabilitation.colour", {"field": "ZRH-9"}, "rehabilitation.colour"),
        ("values.decision", {"X": "maybe"}, "values.decision.X"),
        ("values.note", {"X": "y"}, "values.note"),
        ("procedures", None, "procedures"),
    ],
)
def test_a_wrong_profile_names_the_key(path: str, value: Any, named: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        profile_from_mapping(_set(default(), path, value), {})
    assert named in str(caught.value)


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="hl7.yaml"):
        load_hl7_profile(tmp_path, load_mappings(PROJECT_ROOT / "mappings").directory)
