"""`integration validate` as an operator runs it (issue 11, point 9): findings for any shape, never a
traceback; exit 0 when the layers that ran find nothing, 1 with findings, 2 when it could not check; the
array `integration transform` prints is read message by message; without definitions it says the profiles
were not checked and never that the message conforms."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from integration.conformance.definitions import CORE_FILES
from integration.log import cpr_numbers_in
from tests.cli_runs import run_integration
from tests.conftest import GOLDEN, SHARED

CC = json.loads((GOLDEN / "hotline" / "municipality-routine.carecommunication.json").read_text(encoding="utf-8"))
EVENT = GOLDEN / "discharge" / "01-municipal-gop-general-sternotomy.event.json"
EDGE = SHARED / "cases" / "edge-inputs"


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    return env | {f"INTEGRATION_{k.upper()}": v for k, v in settings.items()}


def _validate(document: Any = None, *args: str, raw: bytes | None = None, **settings: str) -> Any:
    data = raw if raw is not None else json.dumps(document).encode()
    done = run_integration("validate", *args, "-", input=data, env=_env(**settings), timeout=120)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert "Traceback" not in err and len(err.splitlines()) <= 1, err
    assert not cpr_numbers_in(out + err)
    return subprocess.CompletedProcess(done.args, done.returncode, out, err)


def _no_definitions(tmp_path: Path) -> dict[str, str]:
    return {"medcom_definitions_dir": str(tmp_path / "no-definitions")}


def _broken(change: Any) -> dict[str, Any]:
    bundle = copy.deepcopy(CC)
    change(bundle)
    return bundle


SHAPES = {
    "entry without resourceType": lambda b: b["entry"][1]["resource"].pop("resourceType"),
    "resource null": lambda b: b["entry"][1].update(resource=None),
    "entry without resource": lambda b: b["entry"][1].pop("resource"),
    "resource without id": lambda b: b["entry"][2]["resource"].pop("id"),
    "entry a number": lambda b: b["entry"].__setitem__(1, 7),
    "entry a string": lambda b: b["entry"].__setitem__(1, "entry"),
    "entries an object": lambda b: b.update(entry={"resource": {}}),
    "no entries": lambda b: b.pop("entry"),
    "meta a string": lambda b: b["entry"][0]["resource"].update(meta="profile"),
    "profile a number": lambda b: b["entry"][0]["resource"].update(meta={"profile": [5]}),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_bundle_of_any_shape_gets_findings_and_exit_1(shape: str, tmp_path: Path) -> None:
    done = _validate(_broken(SHAPES[shape]), **_no_definitions(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("- ") and done.stdout.splitlines()[-1].split()[1] == "finding(s);"
    assert "conforms" not in done.stdout


@pytest.mark.parametrize("document", [{}, {"resourceType": "Patient"}, "Bundle", 5, None, [1, "x"]], ids=repr)
def test_what_is_no_bundle_is_a_finding(document: Any, tmp_path: Path) -> None:
    done = _validate(document, **_no_definitions(tmp_path))
    assert done.returncode == 1, done.stdout
    assert "not a FHIR Bundle" in done.stdout or "not a transform output item" in done.stdout


def test_the_shared_entry_without_resourcetype_is_reported_with_every_layer(shared: Path) -> None:
    done = run_integration("validate", str(EDGE / "13-entry-without-resourcetype.carecommunication.json"), text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "entry[6]: not a FHIR resource" in done.stdout and done.stdout.splitlines()[-1].endswith("finding(s)")


@pytest.mark.parametrize(
    ("raw", "says"),
    [(b"not json", "malformed JSON"), (b"", "cannot read"), (b"<Bundle><unclosed></Bundle>", "cannot read")],
)
def test_input_that_cannot_be_read_is_exit_2_and_one_line(raw: bytes, says: str) -> None:
    done = _validate(raw=raw)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: cannot read") and says in done.stderr


def test_without_definitions_it_says_the_profiles_were_not_checked_and_never_conforms(tmp_path: Path) -> None:
    done = _validate(CC, **_no_definitions(tmp_path))
    assert done.returncode == 0 and "conforms" not in done.stdout
    assert done.stdout.splitlines() == [
        "no findings in the layers that ran; profiles not checked: MedCom's definitions are not in "
        f"{tmp_path / 'no-definitions' / 'hl7.fhir.dk.core#3.4.0'} (../shared/medcom/definitions)"
    ]
    required = _validate(CC, "--require-profiles", **_no_definitions(tmp_path))
    assert required.returncode == 2 and "could not check everything" in required.stdout


def test_definitions_that_cannot_be_read_are_exit_2(tmp_path: Path) -> None:
    core = tmp_path / "core"
    core.mkdir()
    for name in CORE_FILES:
        (core / name).write_text("{not json", encoding="utf-8")
    done = _validate(CC, fhir_core_dir=str(core))
    assert done.returncode == 2
    assert "could not check: the definitions in" in done.stdout and "cannot be read" in done.stdout
    assert "conforms" not in done.stdout


def _definitions_at_hand() -> None:
    if not (SHARED / "medcom" / "definitions").is_dir():
        pytest.skip("../shared/medcom/definitions is absent: the profile layer cannot run")
    from integration.config import Settings

    if not all((Settings.from_env({}).fhir_core_dir / name).is_file() for name in CORE_FILES):
        pytest.skip("the FHIR R4 core definitions are absent (make fhir-core)")


def test_a_clean_message_with_every_layer_conforms() -> None:
    _definitions_at_hand()
    done = _validate(CC)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "conforms: no findings"
    assert done.stdout.startswith("profiles checked: ")


def _transformed() -> list[dict[str, Any]]:
    done = run_integration("transform", str(EVENT), env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    output: list[dict[str, Any]] = json.loads(done.stdout)
    return output


def test_transform_output_is_validated_message_by_message(tmp_path: Path) -> None:
    output = _transformed()
    (referral,) = output
    key = referral["route"]["routingKey"]
    done = _validate(output, **_no_definitions(tmp_path))
    assert done.returncode == 0 and done.stdout.startswith(f"message 1 ({key}): profiles not checked: ")
    assert done.stdout.splitlines()[-1].startswith("no findings in the layers that ran; profiles not checked")
    broken = copy.deepcopy(referral)
    broken["message"]["entry"] = broken["message"]["entry"][1:]
    form = {"route": {"routingKey": "hotline.reply.434751000016002"}, "message": {"schemaVersion": "1"}}
    done = _validate([referral, broken, form, 7], **_no_definitions(tmp_path))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert f"- message 2 ({key}): entry[0] must be the MessageHeader" in "\n".join(lines)
    assert not [line for line in lines if line.startswith(f"- message 1 ({key})")]
    assert "message 3 (hotline.reply.434751000016002): not a FHIR resource (a JSON form); not checked" in lines
    assert "- item 4: not a transform output item (route and message)" in lines


def test_transform_output_with_no_fhir_message_is_exit_0_saying_so() -> None:
    """`[]` is transform's "no referral": `transform … | validate -` must not fail on a valid outcome."""
    for output in ([], [{"route": {"routingKey": "hotline.unmatched"}, "message": {"requestId": "r"}}]):
        done = _validate(output)
        assert done.returncode == 0 and done.stdout.splitlines()[-1].startswith("no FHIR message to check")


# Attack on issue 11, F7: the same content error is a finding (exit 1) in XML as in JSON.
@pytest.mark.parametrize(
    ("xml", "json_document", "says"),
    [
        (b'<Bundle xmlns="http://hl7.org/fhir"/>', {"resourceType": "Bundle"}, "type"),
        (b"<a/>", {}, "not a FHIR Bundle"),
        (
            b'<Bundle xmlns="http://hl7.org/fhir"><type value="message"/><bogus value="x"/></Bundle>',
            {"resourceType": "Bundle", "type": "message", "bogus": "x"},
            "bogus",
        ),
    ],
    ids=["empty Bundle", "not a Bundle", "unknown element"],
)
def test_an_xml_content_error_is_a_finding_as_in_json(
    xml: bytes, json_document: Any, says: str, tmp_path: Path
) -> None:
    for done in (
        _validate(raw=xml, **_no_definitions(tmp_path)),
        _validate(json_document, **_no_definitions(tmp_path)),
    ):
        assert done.returncode == 1, done.stdout + done.stderr
        assert says in done.stdout and done.stderr == ""


@pytest.mark.parametrize(
    "raw",
    [
        b"<Bundle xmlns='http://hl7.org/fhir'><type value='message'/>",
        b'{"resourceType": "Bundle", "type": "a", "type": "b"}',
        b'<Bundle xmlns="http://hl7.org/fhir"><id value="&#7;"/></Bundle>',
    ],
    ids=["malformed XML", "a JSON key twice", "a forbidden character"],
)
def test_what_cannot_be_read_unambiguously_is_exit_2(raw: bytes) -> None:
    done = _validate(raw=raw)
    assert done.returncode == 2 and done.stderr.startswith("error: cannot read")


def test_a_cpr_number_quoted_by_a_finding_is_masked(tmp_path: Path) -> None:
    bundle = _broken(lambda b: b["entry"][1]["resource"].update(subject={"reference": "Patient/2512489996"}))
    done = _validate(bundle, **_no_definitions(tmp_path))  # _validate asserts no CPR number in the output
    assert done.returncode == 1 and "<cpr>" in done.stdout


def test_a_file_over_the_inbound_limit_is_read_with_max_bytes(tmp_path: Path) -> None:
    """A large `audit export` is no inbound message: `--max-bytes` raises the limit for this one check."""
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": []}
    raw = json.dumps(bundle).encode() + b" " * 2000
    small = _validate(None, raw=raw, max_payload_bytes="1000")
    assert small.returncode == 2 and "--max-bytes" in small.stderr
    done = _validate(None, "--max-bytes", "5000", raw=raw, max_payload_bytes="1000")
    assert done.returncode != 2 and "too large" not in done.stderr
