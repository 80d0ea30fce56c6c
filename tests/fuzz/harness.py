"""One harness for the property tests and the atheris fuzz targets: every parser entry, and what any input must keep.

An entry is how bytes come in (a discharge event, an advice form, a CareCommunication in JSON or XML, a
closing report, a MedCom acknowledgement, or a message given to `integration validate`) with the time and
state it is read at. For any bytes at all:

- `transform` returns a FlowResult or raises a Rejected, never anything else, in bounded time;
- a rejection is one line that holds no CPR number (its field and details neither, nor the OperationOutcome
  of the ack that answers it);
- every message it emits passes the fast layers of `integration validate` (FHIR content, MedCom's messaging
  or document rules, the TouchStone assertions: `conformance` without the profile layer), and every plain
  JSON message its JSON Schema;
- the engine of `integration validate` reports findings and never raises.

A broken invariant raises `Finding` (or the unexpected exception itself), which a fuzzer reports as a crash
and Hypothesis shrinks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from integration.domain.course import NO_STATE, Course, FixedState, OutboundStatus, State
from integration.errors import InvalidInput, Rejected
from integration.fhir import fhir_json
from integration.flows.dispatch import Pipeline, transform
from integration.flows.results import FHIR_JSON, FlowResult, Refusal
from integration.log import cpr_numbers_in
from integration.messages.acknowledgement import receiver_of

FUZZ = Path(__file__).parent
TESTS = FUZZ.parent
GOLDEN = TESTS / "golden"
CORPUS = FUZZ / "corpus"
REGRESSIONS = FUZZ / "regressions"
SCHEMAS = TESTS.parent / "schemas"

SECONDS_PER_INPUT = 2.0  # CPU seconds (process_time): other processes' load on a shared machine does not count
_WARMING = False  # the first input also pays for lazy imports and caches: not timed


@contextmanager
def warming() -> Iterator[None]:
    """Run the first input untimed: on a loaded machine its imports alone can outlast the limit."""
    global _WARMING
    _WARMING = True
    try:
        yield
    finally:
        _WARMING = False


WEEKDAY = datetime.fromisoformat("2027-01-12T10:20:00+01:00")
SATURDAY = datetime.fromisoformat("2027-01-16T10:20:00+01:00")  # after hours: the flows build replies too
CLOSING_TIME = datetime.fromisoformat("2027-02-20T10:05:00+01:00")
PATIENT = "2512489996"
COURSES = {PATIENT: Course(PATIENT, "715541000016001", "851", True, "hospital")}
NO_DEFINITIONS = Path("/nonexistent/fhir-definitions")  # the profile layer's definitions: absent on purpose


class Finding(AssertionError):
    """An input broke an invariant: what broke, never the input itself (it may hold a CPR number)."""


@dataclass(frozen=True)
class Entry:
    name: str
    now: datetime
    known: Callable[[], State] = lambda: NO_STATE
    validate: bool = False  # `integration validate`'s engine rather than `transform`
    seeds: tuple[str, ...] = field(default=())  # glob patterns under tests/golden

    @property
    def state(self) -> State:
        return self.known()


@cache
def _acknowledged_state() -> State:
    """Our golden referrals awaiting their acks (the acks answer them)."""
    sent = [(r["entry"][0]["resource"]["id"], receiver_of(r)) for r in golden_referrals()]
    return FixedState(courses=COURSES, sent={h: OutboundStatus(h, "awaiting", 0, PATIENT, to) for h, to in sent})


def WITH_COURSE() -> State:  # noqa: N802 - read as a constant in the table below
    return FixedState(courses=COURSES)


ENTRIES: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("discharge_event", WEEKDAY, WITH_COURSE, seeds=("discharge/*.event.json",)),
        Entry("hl7_adt", WEEKDAY, WITH_COURSE, seeds=("../hl7/*.er7", "../hl7/hostile/*.er7")),  # HL7 v2 ER7
        Entry("advice_form", WEEKDAY, WITH_COURSE, seeds=("hotline/*.request.json",)),
        Entry("care_communication_json", SATURDAY, WITH_COURSE, seeds=("hotline/*.carecommunication.json",)),
        Entry("care_communication_xml", SATURDAY, WITH_COURSE),
        Entry("closing_report", CLOSING_TIME, WITH_COURSE, seeds=("closing/*.report.xml",)),
        Entry("acknowledgement", SATURDAY, _acknowledged_state),
        Entry(
            "validate",
            WEEKDAY,
            validate=True,
        ),
    )
}


# -- the invariants --------------------------------------------------------------------------------


def no_cpr(text: str, where: str) -> None:
    if cpr_numbers_in(text):
        raise Finding(f"a CPR number in {where}")


def _check_rejection(rejection: Rejected, answer: FlowResult | None = None) -> None:
    message = str(rejection)
    if not message or "\n" in message:
        raise Finding(f"a rejection that is not one line: {type(rejection).__name__}")
    no_cpr(message, "a rejection's message")
    if isinstance(rejection, InvalidInput):
        no_cpr(rejection.field, "a rejection's field")
        for detail in rejection.details:
            no_cpr(detail, "a rejection's details")
    if answer is not None:  # a MedCom sender's ack: its OperationOutcome goes out
        for out in answer.outgoing:
            outcomes = [e.get("resource") for e in out.message.get("entry", []) if _is_outcome(e)]
            no_cpr(orjson.dumps(outcomes).decode(), "the OperationOutcome of a fatal-error ack")
        check_emitted(answer)


def _is_outcome(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("resource"), dict)
        and (entry["resource"].get("resourceType") == "OperationOutcome")
    )


def fast_findings(bundle: Any) -> list[str]:
    """What `integration validate` finds outside the profile layer: the same function, without definitions."""
    from integration.conformance.checks import conformance

    result = conformance(bundle, NO_DEFINITIONS, NO_DEFINITIONS)
    assert result.profiles is None, "the profile layer ran without definitions"
    return result.findings


@cache
def _json_schema(name: str) -> Any:
    import jsonschema_rs

    return jsonschema_rs.validator_for(orjson.loads((SCHEMAS / name).read_bytes()))


def check_emitted(result: FlowResult) -> None:
    """Every message leaving passes our own cheap checks, and can be written as the bytes we publish."""
    for out in result.outgoing:
        fhir_json.dumps(out.message)
        _ = out.id
        if out.content_type == FHIR_JSON:
            findings = fast_findings(out.message)
            if findings:
                raise Finding(f"an emitted message fails validate's fast layers: {findings[0][:300]}")
        else:
            schema = "advice-reply.schema.json" if "replyId" in out.message else "advice-request.schema.json"
            errors = [e.message for e in _json_schema(schema).iter_errors(out.message)]
            if errors:
                raise Finding(f"an emitted {schema} message fails its schema: {len(errors)} error(s)")


def answer(raw: bytes, entry: Entry, pipeline: Pipeline) -> FlowResult | Rejected | list[str]:
    """Run `raw` through the entry and check every invariant; the outcome (a FlowResult, the Rejected raised,
    or validate's findings). Raises Finding, or whatever unexpected exception the code raised."""
    started = time.process_time()
    outcome: FlowResult | Rejected | list[str]
    if entry.validate:
        outcome = validate_engine(raw, pipeline)
    else:
        try:
            result = transform(raw, pipeline, entry.now, state=entry.state)
        except Rejected as rejection:
            _check_rejection(rejection)
            outcome = rejection
        else:
            if isinstance(result, Refusal):
                _check_rejection(result.rejection, result.answer)
                outcome = result.rejection
            else:
                check_emitted(result)
                outcome = result
    took = time.process_time() - started
    if took > SECONDS_PER_INPUT and not _WARMING:
        raise Finding(f"{entry.name}: {took:.1f} s of CPU for one input of {len(raw)} bytes")
    return outcome


def validate_engine(raw: bytes, pipeline: Pipeline) -> list[str]:
    """`integration validate`'s path in-process: decode as it does, then every layer (the profile layer when
    the definitions are at hand). Unreadable input is an answer too."""
    from integration.config import Settings
    from integration.conformance.checks import conformance
    from integration.formats.care_communication import decode_xml_bundle
    from integration.formats.json_contract import decode_json

    settings = _settings()
    limit = pipeline.max_payload_bytes
    try:
        bundle = decode_xml_bundle(raw, limit) if raw.lstrip()[:1] == b"<" else decode_json(raw, max_bytes=limit)
    except InvalidInput as unreadable:
        no_cpr(str(unreadable), "validate's 'cannot read' line")
        return [str(unreadable)]
    result = conformance(bundle, settings.medcom_definitions_dir, settings.fhir_core_dir)
    for finding in result.findings:
        if not isinstance(finding, str):
            raise Finding(f"validate reported a finding that is not text: {type(finding).__name__}")
    assert isinstance(settings, Settings)
    return result.findings


@cache
def _settings() -> Any:
    from integration.config import Settings

    return Settings.from_env({})


@cache
def pipeline() -> Pipeline:
    """The pipeline as the CLI builds it (bootstrap, default settings)."""
    from integration.bootstrap import build

    return build(_settings()).pipeline


# -- seeds -----------------------------------------------------------------------------------------


def golden_seeds(entry: Entry) -> list[bytes]:
    """The golden inputs of the entry (the XML CareCommunication and the acks are made from them)."""
    if entry.name == "care_communication_xml":
        return [care_communication_xml(raw) for raw in golden_seeds(ENTRIES["care_communication_json"])]
    if entry.name == "acknowledgement":
        return [acknowledgement_of(referral) for referral in golden_referrals()[:3]]
    if entry.validate:  # a referral, a CareCommunication in JSON and XML, an ack
        others = [ENTRIES[n] for n in ("care_communication_json", "care_communication_xml", "acknowledgement")]
        return [orjson.dumps(golden_referrals()[0])] + [golden_seeds(e)[0] for e in others]
    return [p.read_bytes() for pattern in entry.seeds for p in sorted(GOLDEN.glob(pattern))]


@cache
def golden_referrals() -> list[dict[str, Any]]:
    """The referrals our golden discharge events produce (the goldens' expected files hold placeholder ids)."""
    found = []
    for path in sorted((GOLDEN / "discharge").glob("*.event.json")):
        found += [out.message for out in transform(path.read_bytes(), pipeline(), WEEKDAY).outgoing]
    return found


def care_communication_xml(raw_json: bytes) -> bytes:
    from fhir.resources.R4B.bundle import Bundle

    xml: str | bytes = Bundle.model_validate(orjson.loads(raw_json)).model_dump_xml()
    return xml.encode("utf-8") if isinstance(xml, str) else xml


def acknowledgement_of(referral: dict[str, Any], code: str = "ok") -> bytes:
    from integration.messages.acknowledgement import Issue, acknowledgement, addressing

    issues = [] if code == "ok" else [Issue("invalid", "MSG_BAD_FORMAT", "no", "Patient")]
    terminology = pipeline().referral.terminology
    return fhir_json.dumps(acknowledgement(addressing(referral), code, issues, SATURDAY, terminology))


Check = Callable[[bytes], Any]

# Findings whose fix is under way elsewhere (issue #11), each with its xfail regression test in
# tests/test_parser_properties.py: the fuzz targets do not stop on them. Remove an entry when its test passes.
KNOWN: dict[str, Callable[[BaseException], bool]] = {}


def known(exc: BaseException) -> str | None:
    """The KNOWN finding that `exc` shows, if any."""
    return next((name for name, shows in KNOWN.items() if shows(exc)), None)


def tolerating_known(check: Check) -> Callable[[bytes], None]:
    def one(raw: bytes) -> None:
        try:
            check(raw)
        except Exception as exc:
            if known(exc) is None:
                raise

    return one


def checker(name: str) -> Check:
    entry, flows = ENTRIES[name], pipeline()
    return lambda raw: answer(raw, entry, flows)
