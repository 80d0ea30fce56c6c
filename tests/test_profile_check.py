"""The profile layer: the snapshots' constraints, cardinalities, fixed and pattern values, required bindings and
slicing, over MedCom's examples and ours; every kind of check shown to fail."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from integration.conformance.definitions import CORE_DIR, DefinitionsMissing, load_definitions
from integration.conformance.profile_check import check_profiles, html_checks, standard_of
from integration.formats.care_communication import decode_xml_bundle

Bundle = dict[str, Any]


def _read(path: Path) -> Bundle:
    raw = path.read_bytes()
    return decode_xml_bundle(raw, 10**7) if path.suffix == ".xml" else json.loads(raw)


def _findings(bundle: Bundle) -> list[str]:
    return check_profiles(bundle, load_definitions(standard_of(bundle))).findings


def _cc(shared: Path) -> Bundle:
    folder = shared / "medcom" / "dk-medcom-carecommunication-testscripts" / "send"
    return _read(folder / "Bundle-S-C-new-aca3d03a-febd-4b88-ad53-ac1bc36da615.json")


def _ack(shared: Path) -> Bundle:
    return _read(
        shared / "medcom" / "dk-medcom-carecommunication" / "examples" / "Flow2-Acknowledgement_Ex_to_OIOXML.xml"
    )


def _of(bundle: Bundle, rtype: str) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)


def test_the_r4_core_definitions_are_installed() -> None:
    """`make test` fetches them; without them the profile layer would silently check less."""
    assert (CORE_DIR / "profiles-resources.min.json").is_file(), "run: make fhir-core"


def test_missing_definitions_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(DefinitionsMissing, match="make fhir-core"):
        load_definitions("care-communication", tmp_path, tmp_path / "none")


def test_every_valid_hospitalnotification_example_passes_the_profiles(shared: Path) -> None:
    folder = shared / "medcom" / "dk-medcom-hospitalnotification-testscripts"
    for path in sorted(folder.glob("HospitalNotification_Ex_*.json")):
        findings = _findings(_read(path))
        assert (findings != []) == (path.name == "HospitalNotification_Ex_TEK_FCC.json"), (path.name, findings)


def test_the_checks_cover_what_they_claim(shared: Path) -> None:
    report = check_profiles(_cc(shared), load_definitions("care-communication"))
    assert report.findings == [] and report.unevaluable == set()
    assert report.counts["constraints"] > 250 and report.counts["cardinalities"] > 1000
    assert report.counts["required bindings"] > 20 and report.counts["fixed and pattern values"] > 10


Breakage = Callable[[Bundle], object]


def _header(b: Bundle) -> dict[str, Any]:
    return b["entry"][0]["resource"]


BREAKAGES: list[tuple[str, Breakage, str]] = [
    (
        "MedCom invariant (via resolve)",
        lambda b: _of(b, "PractitionerRole").pop("practitioner"),
        "medcom-careCommunication-13",
    ),
    ("core invariant", lambda b: _of(b, "Patient").update(contact=[{"gender": "male"}]), "pat-1"),
    (
        "narrative (htmlChecks)",
        lambda b: _header(b)["text"].update(div='<div xmlns="http://www.w3.org/1999/xhtml"> </div>'),
        "txt-2",
    ),
    ("cardinality", lambda b: _of(b, "Communication").pop("category"), "category: 0 found"),
    ("a slice's cardinality", lambda b: _of(b, "Organization")["identifier"].pop(1), "identifier:SOR-ID: 0 found"),
    (
        "pattern value",
        lambda b: _header(b)["eventCoding"].update(system="http://example.org/events"),
        "must be pattern 'http://medcomfhir.dk/ig/terminology/CodeSystem/medcom-messaging-eventCodes'",
    ),
    (
        "fixed value (a slice's type profile)",
        lambda b: _of(b, "Patient")["identifier"][0].update(use="temp"),
        "must be fixed 'official'",
    ),
    ("required binding", lambda b: _of(b, "Communication").update(status="finished"), "not in the required value set"),
    (
        "closed slicing",
        lambda b: _header(b)["destination"][0]["extension"][0]["valueCoding"].update(code="bcc"),
        "fit no slice of the closed slicing",
    ),
    (
        "reference target",
        lambda b: _header(b).update(sender={"reference": f"Patient/{_of(b, 'Patient')['id']}"}),
        "is none of medcom-messaging-organization",
    ),
    (
        "datatype profile's own constraint",
        lambda b: _of(b, "Organization")["identifier"][0].update(value="5790000121780"),
        "gln-modulus-10",
    ),
]


@pytest.mark.parametrize(("what", "breakage", "expected"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_each_kind_of_check_can_fail(shared: Path, what: str, breakage: Breakage, expected: str) -> None:
    bundle = copy.deepcopy(_cc(shared))
    assert not [f for f in _findings(bundle) if expected in f]
    breakage(bundle)
    assert any(expected in f for f in _findings(bundle)), _findings(bundle)


def test_an_ack_is_checked_against_the_acknowledgement_profiles(shared: Path) -> None:
    ack = copy.deepcopy(_ack(shared))
    assert standard_of(ack) == "acknowledgement" and _findings(ack) == []
    _header(ack)["response"]["code"] = "fatal-error"
    assert any("medcom-acknowledgement-1" in f for f in _findings(ack))


def test_conforms_to_follows_the_claimed_profiles_base_chain(shared: Path) -> None:
    bundle = copy.deepcopy(_cc(shared))
    _header(bundle)["meta"]["profile"] = ["http://example.org/StructureDefinition/other-header"]
    findings = _findings(bundle)
    assert any("medcom-messaging-1" in f for f in findings), findings


@pytest.mark.parametrize(
    ("div", "ok"),
    [
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p>Tekst</p></div>', True),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><script>x()</script>Tekst</div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="x()">Tekst</p></div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml">  </div>', False),
        ("<div><p>no namespace</p></div>", False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p>unclosed</div>', False),
        ('<p xmlns="http://www.w3.org/1999/xhtml">not a div</p>', False),
        # a receiver showing the narrative as HTML ignores the tag's case (the second attack on issue 16)
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p>Hej</p><SCRIPT>alert(1)</SCRIPT></div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><scRipt>alert(1)</scRipt>Tekst</div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p>x</p><META HTTP-EQUIV="refresh" CONTENT="0"/></div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><EMBED SRC="x.swf"/>Tekst</div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p style="width: expression(alert(1))">x</p></div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p style="background:url(javascript:alert(1))">x</p></div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><a href="data:text/html;base64,PHNjcmlwdD4=">x</a></div>', False),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><p style="font-weight: bold">Tekst</p></div>', True),
        ('<div xmlns="http://www.w3.org/1999/xhtml"><img src="data:image/png;base64,iVBO" alt="x"/>T</div>', True),
    ],
)
def test_html_checks(div: str, ok: bool) -> None:
    assert html_checks(div) is ok
