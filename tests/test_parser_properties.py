"""Every parser entry keeps its invariants for any input: property tests through the fuzz harness.

Inputs come from our own JSON Schemas (hypothesis-jsonschema: whole documents, and the golden samples with
one top-level part drawn from the schema), from the golden samples with a value made hostile (control
characters, huge, Unicode look-alikes, CPR-shaped, dates at the edges, numbers of many digits), keys
duplicated, and XML with entity tricks and other encodings. For each, `tests/fuzz/harness.answer` holds:
a FlowResult or a Rejected and nothing else, under two seconds, no CPR number in a rejection, and every
emitted message passes the fast layers of `integration validate` (and validate's engine never raises).
Through the CLI (`integration transform -`, `integration validate -`): exit 0, 1, 2 or 3, one line on
stderr at most, never a traceback or a CPR number.

Findings of the fuzz targets are replayed from tests/fuzz/regressions/ (test_fuzz_regressions).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from integration.cli.main import main
from integration.log import cpr_numbers_in
from tests.cli_runs import run_integration
from tests.fuzz.harness import (
    ENTRIES,
    REGRESSIONS,
    SCHEMAS,
    Entry,
    golden_seeds,
    known,
    pipeline,
)
from tests.fuzz.harness import answer as harness_answer

PROPERTY = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is deterministic, and its cost bounded
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
CPR_SHAPED = ["2512489996", "251248-9996", "2512489996 ", "0101001234", "x2512489996x", "25 12 48 99 96"]
HOSTILE = [
    "",
    "\u0000",
    "a\u0001b",
    "\u001f",
    "\u007f",
    "\u0085",
    "\u2028",
    "\u200b",
    "\ufeff",
    "\ud7ff\ue000",
    "\U0001f600",
    "e\u0301",
    "x" * 100_000,
    "٢٥١٢٤٨٩٩٩٦",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "2026-02-29",
    "2024-02-29T24:00:00Z",
    "2016-12-31T23:59:60Z",
    "1" * 500,
    "<![CDATA[x]]>",
    "&lt;&#0;",
    *CPR_SHAPED,
]
RAW_NUMBERS = ["1" * 330, "-" + "9" * 40, "0." + "0" * 400 + "1", "1e-400", "1e308", "123456789012345678901234567890"]


def answer(raw: bytes, entry: Entry) -> Any:
    """The harness's answer; a finding whose fix is under way (harness.KNOWN) is not this suite's failure."""
    try:
        return harness_answer(raw, entry, pipeline())
    except Exception as exc:
        if known(exc) is None:
            raise
        return None


# -- drawn from our own JSON Schemas ---------------------------------------------------------------


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return schema


def _part_from_schema(schema: dict[str, Any], key: str) -> st.SearchStrategy[Any]:
    """A value for one top-level property, drawn from its own subschema (with the schema's $defs)."""
    part = dict(schema["properties"][key])
    for defs in ("$defs", "definitions"):
        if defs in schema:
            part[defs] = schema[defs]
    return from_schema(part)


def _golden_with_schema_part(entry: str, schema_name: str) -> st.SearchStrategy[bytes]:
    schema = _schema(schema_name)
    samples = [orjson.loads(s) for s in golden_seeds(ENTRIES[entry])]

    def replace(sample: Any, key: str, value: Any) -> bytes:
        changed = copy.deepcopy(sample)
        changed[key] = value
        return orjson.dumps(changed)

    keys = st.sampled_from(sorted(schema["properties"]))
    return st.tuples(st.sampled_from(samples), keys).flatmap(
        lambda pair: _part_from_schema(schema, pair[1]).map(lambda value: replace(pair[0], pair[1], value))
    )


@settings(PROPERTY, max_examples=10)
@given(document=from_schema(_schema("discharge-event.schema.json")))
def test_any_schema_valid_discharge_event_is_answered(document: Any) -> None:
    answer(orjson.dumps(document), ENTRIES["discharge_event"])


@settings(PROPERTY, max_examples=20)
@given(document=from_schema(_schema("advice-request.schema.json")))
def test_any_schema_valid_advice_form_is_answered(document: Any) -> None:
    answer(orjson.dumps(document), ENTRIES["advice_form"])


@settings(PROPERTY, max_examples=25)
@given(raw=_golden_with_schema_part("discharge_event", "discharge-event.schema.json"))
def test_a_discharge_event_with_one_part_drawn_from_its_schema_is_answered(raw: bytes) -> None:
    answer(raw, ENTRIES["discharge_event"])


@settings(PROPERTY, max_examples=25)
@given(raw=_golden_with_schema_part("advice_form", "advice-request.schema.json"))
def test_an_advice_form_with_one_part_drawn_from_its_schema_is_answered(raw: bytes) -> None:
    answer(raw, ENTRIES["advice_form"])


# -- the golden inputs, made hostile ---------------------------------------------------------------

JSON_ENTRIES = ["discharge_event", "advice_form", "care_communication_json", "acknowledgement", "validate"]
XML_ENTRIES = ["care_communication_xml", "closing_report", "validate"]
STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
NUMBER = re.compile(rb"(?<=[:\[,\s])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?=[,\]}\s])")
KEY = re.compile(rb'"(?:[^"\\]|\\.)*"\s*:')


def _json_seeds() -> list[tuple[str, bytes]]:
    return [(name, seed) for name in JSON_ENTRIES for seed in golden_seeds(ENTRIES[name])[:3] if seed[:1] != b"<"]


def _replace_nth(raw: bytes, pattern: re.Pattern[bytes], n: int, new: bytes) -> bytes:
    found = list(pattern.finditer(raw))
    if not found:
        return raw
    match = found[n % len(found)]
    return raw[: match.start()] + new + raw[match.end() :]


@st.composite
def hostile_json(draw: st.DrawFn) -> tuple[str, bytes]:
    """A golden JSON input with one string or number replaced, or one object key repeated."""
    name, raw = draw(st.sampled_from(_json_seeds()))
    n = draw(st.integers(min_value=0, max_value=400))
    how = draw(st.sampled_from(["string", "string", "number", "duplicate-key"]))
    if how == "string":
        value = draw(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12)))
        return name, _replace_nth(raw, STRING, n, json.dumps(value).encode("utf-8", "surrogatepass"))
    if how == "number":
        return name, _replace_nth(raw, NUMBER, n, draw(st.sampled_from(RAW_NUMBERS)).encode())
    keys = list(KEY.finditer(raw))
    key = keys[n % len(keys)]
    value = draw(st.sampled_from([b'"x"', b"null", b"{}", b'"2512489996"']))
    return name, raw[: key.end()] + value + b"," + raw[key.start() : key.end()] + raw[key.end() :]


@settings(PROPERTY, max_examples=200)
@given(case=hostile_json())
def test_any_golden_json_input_made_hostile_is_answered(case: tuple[str, bytes]) -> None:
    name, raw = case
    answer(raw, ENTRIES[name])


def _xml_seeds() -> list[tuple[str, bytes]]:
    return [(n, s) for n in XML_ENTRIES for s in golden_seeds(ENTRIES[n])[:3] if s.lstrip()[:1] == b"<"]


TEXT_OR_ATTRIBUTE = re.compile(rb'(?<=>)[^<>]+(?=</)|(?<==")[^"]*(?=")')
XML_VALUES = [
    "&#1;",
    "&#0;",
    "&#x1F;",
    "&#xD800;",
    "&#65535;",
    "&amp;#1;",
    "&e;",
    "&lt;x&gt;",
    "<![CDATA[2512489996]]>",
    "<!-- c -->x",
    "<?pi x?>",
    "x" * 50_000,
    "\u00a0",
    "\u2028",
    "2512489996",
    " 2027-02-15 ",
    "2027-02-15T24:00:00Z",
    "-0001-01-01",
]
PROLOGUES = [
    b"",
    b"\xef\xbb\xbf",
    b'<!DOCTYPE x [<!ENTITY e "2512489996">]>',
    b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/hostname">]>',
    b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY e "&b;&b;&b;">]>',
    b'<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>',
    b'<?xml-stylesheet href="x.xsl"?>',
]
ENCODINGS = ["utf-8", "utf-16", "utf-16-le", "utf-16-be", "latin-1", "ascii"]


@st.composite
def hostile_xml(draw: st.DrawFn) -> tuple[str, bytes]:
    """A golden XML input with one text or attribute value replaced, a prologue trick, or another encoding."""
    name, raw = draw(st.sampled_from(_xml_seeds()))
    body = raw.split(b"?>", 1)[1] if raw.startswith(b"<?xml") else raw
    value = draw(st.sampled_from(XML_VALUES)).encode("utf-8")
    body = _replace_nth(body, TEXT_OR_ATTRIBUTE, draw(st.integers(min_value=0, max_value=400)), value)
    prologue = draw(st.sampled_from(PROLOGUES))
    encoding = draw(st.sampled_from(ENCODINGS))
    declared = draw(st.sampled_from([encoding, "utf-8", None]))
    text = (f'<?xml version="1.0" encoding="{declared}"?>' if declared else "") + (prologue + body).decode("utf-8")
    return name, text.encode(encoding, errors="xmlcharrefreplace")


@settings(PROPERTY, max_examples=150)
@given(case=hostile_xml())
def test_any_golden_xml_input_made_hostile_is_answered(case: tuple[str, bytes]) -> None:
    name, raw = case
    answer(raw, ENTRIES[name])


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_golden_input_of_every_entry_keeps_the_invariants(name: str) -> None:
    for seed in golden_seeds(ENTRIES[name]):
        answer(seed, ENTRIES[name])


# -- through the command line ----------------------------------------------------------------------

CLI_EXITS = {0, 1, 2, 3}


def _cli_stderr_is_clean(stderr: str, code: int) -> None:
    assert code in CLI_EXITS, f"exit {code}: {stderr[-500:]}"
    assert "Traceback" not in stderr
    assert not cpr_numbers_in(stderr), "a CPR number on stderr"
    assert len(stderr.strip().splitlines()) <= 1, stderr[-500:]


def _invoke(command: str, raw: bytes) -> None:
    args = [command, "-"] if command == "validate" else [command, "--at", "2027-01-12T10:20:00+01:00", "-"]
    done = CliRunner().invoke(main, args, input=raw)
    exit_code = done.exit_code
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    _cli_stderr_is_clean(done.stderr, exit_code)


@settings(PROPERTY, max_examples=60)
@given(case=st.one_of(hostile_json(), hostile_xml()), command=st.sampled_from(["transform", "validate"]))
def test_the_cli_answers_any_hostile_input_with_a_documented_exit_and_one_clean_line(
    case: tuple[str, bytes], command: str
) -> None:
    _invoke(command, case[1])


CLI_SAMPLES = [
    b"",
    b"\xff\xfe",
    b'{"eventType":"discharge","eventType":"visitation"}',
    b'<!DOCTYPE x [<!ENTITY e "2512489996">]><Bundle xmlns="http://hl7.org/fhir">&e;</Bundle>',
    b'{"resourceType":"Bundle","type":"message","entry":[{"resource":null},{}]}',
    b'{"requestId":"2512489996","urgency":"2512489996"}',
]


@pytest.mark.parametrize("command", ["transform", "validate"])
def test_the_installed_command_answers_hostile_input_cleanly(command: str) -> None:
    """The real process (its stderr is what an operator sees, and the suite's CPR scan reads it too)."""
    for raw in CLI_SAMPLES:
        done = run_integration(command, "-", input=raw, timeout=60)
        _cli_stderr_is_clean(done.stderr.decode("utf-8", "replace"), done.returncode)


# -- the fuzzers' findings, replayed ---------------------------------------------------------------

# tests/fuzz/regressions/<entry>--<what>.input; a finding whose fix is under way (issue #11) is xfail until
# it lands: flip it by removing its line here and its entry in harness.KNOWN.
UNDER_WAY: dict[str, str] = {}


def _regressions() -> list[Any]:
    found = []
    for path in sorted(REGRESSIONS.glob("*.input")):
        reason = UNDER_WAY.get(path.name)
        marks = [pytest.mark.xfail(strict=True, reason=f"finding: {reason} (fixed by issue #11 work in progress)")]
        found.append(pytest.param(path, marks=marks if reason else [], id=path.stem))
    return found


@pytest.mark.parametrize("path", _regressions())
def test_fuzz_regressions(path: Path) -> None:
    entry = ENTRIES[path.name.split("--")[0]]
    harness_answer(path.read_bytes(), entry, pipeline())
