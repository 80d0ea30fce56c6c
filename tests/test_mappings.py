"""The mapping files: complete, consistent with the shared facts, and loud when wrong."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from integration.config import PROJECT_ROOT
from integration.errors import ConfigurationError
from integration.mappings import load_mappings

NORDJYLLAND = {"773", "787", "810", "813", "820", "825", "840", "846", "849", "851", "860"}


@pytest.fixture(scope="module")
def mappings():
    return load_mappings(PROJECT_ROOT / "mappings")


def test_all_98_municipalities(mappings) -> None:
    assert len(mappings.directory.municipalities) == 98


def test_region_nordjylland_has_placeholder_endpoints_and_no_other(mappings) -> None:
    with_endpoint = {c for c, m in mappings.directory.municipalities.items() if m.endpoint}
    assert with_endpoint == NORDJYLLAND
    assert all(mappings.directory.municipalities[c].placeholder for c in NORDJYLLAND)
    assert {m.region for c, m in mappings.directory.municipalities.items() if c in NORDJYLLAND} == {
        "Region Nordjylland"
    }


def test_region_traps(mappings) -> None:
    municipalities = mappings.directory.municipalities
    assert municipalities["779"].region == "Region Midtjylland"  # Skive sits between Nordjylland codes
    assert municipalities["791"].region == "Region Midtjylland"
    assert "411" not in municipalities  # Ertholmene is outside the municipal division


def test_municipalities_match_the_shared_register(mappings, shared: Path) -> None:
    with (shared / "domain" / "kommunekoder.csv").open(encoding="utf-8") as f:
        rows = {r["code"]: (r["name"], r["region"]) for r in csv.DictReader(f)}
    ours = {c: (m.name, m.region) for c, m in mappings.directory.municipalities.items()}
    assert ours == rows


def test_departments_name_existing_rehabilitation_units(mappings) -> None:
    departments = mappings.directory.departments
    for department in departments.values():
        assert department.rehabilitation_unit is None or department.rehabilitation_unit in departments


@pytest.fixture
def copy_of_mappings(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(PROJECT_ROOT / "mappings", target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_bad_ean_in_mapping_is_a_configuration_error(copy_of_mappings: Path) -> None:
    _edit(copy_of_mappings / "departments.yaml", '"5790001382445"', '"5790001382446"')
    with pytest.raises(ConfigurationError, match="EAN 5790001382446 has a wrong GS1 check digit"):
        load_mappings(copy_of_mappings)


def test_duplicate_municipality_is_a_configuration_error(copy_of_mappings: Path) -> None:
    _edit(copy_of_mappings / "municipalities.yaml", 'code: "147"', 'code: "101"')
    with pytest.raises(ConfigurationError, match="code 101 appears twice"):
        load_mappings(copy_of_mappings)


def test_unknown_high_risk_criterion_is_a_configuration_error(copy_of_mappings: Path) -> None:
    _edit(copy_of_mappings / "referral.yaml", "highRiskCriteria: []", "highRiskCriteria: [obesity]")
    with pytest.raises(ConfigurationError, match="unknown criteria"):
        load_mappings(copy_of_mappings)


def test_configured_high_risk_criterion_is_used(copy_of_mappings: Path) -> None:
    _edit(copy_of_mappings / "referral.yaml", "highRiskCriteria: []", "highRiskCriteria: [icd-or-arrhythmia-risk]")
    policy = load_mappings(copy_of_mappings).referral_rules.risk_policy
    assert policy.high_risk_criteria == frozenset({"icd-or-arrhythmia-risk"})


def test_missing_label_is_a_configuration_error(copy_of_mappings: Path) -> None:
    _edit(copy_of_mappings / "referral.yaml", '    diet: "Kostvejledning"\n', "")
    with pytest.raises(ConfigurationError, match="labels.rehabElement lacks diet"):
        load_mappings(copy_of_mappings)


def test_missing_file_is_a_configuration_error(copy_of_mappings: Path) -> None:
    (copy_of_mappings / "terminology.yaml").unlink()
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_mappings(copy_of_mappings)


def test_missing_key_is_a_configuration_error(copy_of_mappings: Path) -> None:
    _edit(copy_of_mappings / "referral.yaml", "sternotomyBicycleTestDelayWeeks: 6", "")
    with pytest.raises(ConfigurationError, match="sternotomyBicycleTestDelayWeeks"):
        load_mappings(copy_of_mappings)


def _endpoints_in_files() -> list[tuple[str, dict[str, object]]]:
    """Every entry in mappings/*.yaml that is a receiving endpoint (it has a SOR id and an EAN), with its file."""
    import yaml

    found: list[tuple[str, dict[str, object]]] = []
    for path in sorted((PROJECT_ROOT / "mappings").glob("*.yaml")):
        stack: list[object] = [yaml.safe_load(path.read_text(encoding="utf-8"))]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                if "sor" in item and "ean" in item:
                    found.append((path.name, item))
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return found


def test_every_endpoint_identifier_in_the_mappings_is_unique() -> None:
    endpoints = _endpoints_in_files()
    assert len(endpoints) >= 11 + 4 + 3  # Nordjylland's units, the departments, the GP clinics
    for key in ("sor", "ean"):
        values = [str(item[key]) for _, item in endpoints]
        shared = {v: [f"{f} {i.get('name')}" for f, i in endpoints if str(i[key]) == v] for v in values}
        assert all(len(names) == 1 for names in shared.values()), {v: n for v, n in shared.items() if len(n) > 1}


def test_two_endpoints_sharing_a_sor_id_are_refused(tmp_path: Path) -> None:
    copy = tmp_path / "mappings"
    shutil.copytree(PROJECT_ROOT / "mappings", copy)
    text = (copy / "gp-clinics.yaml").read_text(encoding="utf-8")
    (copy / "gp-clinics.yaml").write_text(text.replace('"485621000016007"', '"715541000016001"'), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="SOR id 715541000016001 is also departments.yaml"):
        load_mappings(copy)


EARLIER_REFERRAL_ROUTING = """
routing:
  exchange: "rehab.referral"
  municipality: "referral.municipality.{code}"
  hospital: "referral.hospital.{sor}"
"""


def test_an_earlier_releases_routing_table_that_says_what_the_topology_says_is_accepted(copy_of_mappings: Path) -> None:
    with (copy_of_mappings / "referral.yaml").open("a", encoding="utf-8") as file:
        file.write(EARLIER_REFERRAL_ROUTING)
    load_mappings(copy_of_mappings)


def test_a_routing_table_that_routes_elsewhere_is_refused_not_ignored(copy_of_mappings: Path) -> None:
    with (copy_of_mappings / "referral.yaml").open("a", encoding="utf-8") as file:
        file.write(EARLIER_REFERRAL_ROUTING.replace("referral.hospital.{sor}", "elsewhere.{sor}"))
    with pytest.raises(ConfigurationError, match=r"referral.yaml: routing.hospital is not the topology's"):
        load_mappings(copy_of_mappings)
