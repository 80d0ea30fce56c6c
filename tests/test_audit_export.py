"""`integration audit export` (issue 14): the audit trail as a FHIR R4 Bundle of AuditEvents shaped after IHE
BALP, from a real SQLite store filled by the processor running real sample messages (tests/golden/pathway:
scenario 06 has refusals, scenario 29 a patient known by a replacement number). Every AuditEvent passes
`integration validate`; the export is audited before it is written and the chain stays intact; bad input is
one line and its exit code; mappings/audit-events.yaml maps every step the code base records."""

from __future__ import annotations

import ast
import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from integration.adapters.memory import InMemoryBroker, drain_in_memory
from integration.adapters.sql.sqlite import SqliteAuditStore
from integration.adapters.sql.stores import open_audit_store
from integration.bootstrap import build
from integration.cli.main import main
from integration.config import PROJECT_ROOT, Settings
from integration.conformance.checks import conformance
from integration.domain.cpr import CPR_SYSTEM
from integration.log import cpr_numbers_in
from integration.service.audit_chain import AuditEntry, AuditRecord
from integration.service.audit_events import EventCodes
from integration.service.processor import RetryPolicy
from integration.topology import DEAD_LETTER_EXCHANGE, FLOWS, SENDERS_BY_KIND, outbound_exchanges
from tests.cli_runs import run_integration
from tests.pathway_runs import SCENARIOS, SENDER_OF_FLOW, steps

FAST = RetryPolicy(attempts=2, seconds=1, initial_wait=0.001, max_wait=0.01)
CPR = "2512489996"  # scenario 06's patient
X_ECPR = "urn:oid:1.2.208.176.1.6.1.1"
REPLACEMENT = f"{X_ECPR}|2512481AB1"  # scenario 29's patient
TABLE = PROJECT_ROOT / "mappings" / "audit-events.yaml"


class _Clock:
    now: Any = None

    def __call__(self) -> Any:
        return self.now


def _process(scenario: str, store: SqliteAuditStore) -> None:
    """The scenario's messages through the processor on the in-memory broker, into `store`."""
    broker = InMemoryBroker()
    for exchange in outbound_exchanges():
        broker.bind(exchange, "out", "#")
    for flow in FLOWS:
        broker.bind(DEAD_LETTER_EXCHANGE, "dead", flow.name)
    clock = _Clock()
    processor = build(Settings.from_env({}), bus=broker, store=store, clock=clock, retry=FAST).processor
    for step in steps(next(s for s in SCENARIOS if s.name.startswith(scenario))):
        clock.now = step.received_at
        broker.user_id = step.sender_user
        exchange = SENDERS_BY_KIND[SENDER_OF_FLOW[step.flow]].exchange
        broker.publish(exchange, step.flow, step.body, step.message_id, content_type=step.content_type)
        drain_in_memory(broker, processor, list(FLOWS))


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "audit.sqlite3"
    store = SqliteAuditStore(str(path))
    _process("06-", store)  # a visitation before its discharge: refused, dead-lettered
    _process("29-", store)  # a patient known by an X-eCPR
    store.close()
    return path


@pytest.fixture
def dsn(filled: Path, tmp_path: Path) -> str:
    copy = tmp_path / "audit.sqlite3"
    shutil.copy(filled, copy)
    return f"sqlite:///{copy}"


def _env(dsn: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"INTEGRATION_AUDIT_DSN": dsn}


def _records(dsn: str) -> list[AuditRecord]:
    store = open_audit_store(dsn, create=False)
    try:
        return list(store.records())
    finally:
        store.close()


def _export(dsn: str, out: Path, *args: str) -> dict[str, Any]:
    done = run_integration("audit", "export", "--out", str(out), *args, env=_env(dsn), timeout=120, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1 and done.stderr.startswith("exported "), done.stderr
    assert cpr_numbers_in(done.stderr) == []
    bundle: dict[str, Any] = json.loads(out.read_bytes())
    return bundle


def _events(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in bundle["entry"]]


def _chain(event: dict[str, Any]) -> dict[str, str]:
    """The chain entity's seq, hash and prevHash."""
    entity = next(e for e in event["entity"] if e["type"]["code"] == "2")
    return {d["type"]: d["valueString"] for d in entity["detail"]}


def _patients(event: dict[str, Any]) -> list[dict[str, str]]:
    return [e["what"]["identifier"] for e in event["entity"] if e.get("role", {}).get("code") == "1"]


# -- the whole log ------------------------------------------------------------------------------------------
def test_the_whole_log_exports_as_one_auditevent_per_record_in_chain_order(dsn: str, tmp_path: Path) -> None:
    before = _records(dsn)
    bundle = _export(dsn, tmp_path / "export.json")
    after = _records(dsn)
    assert len(after) == len(before) + 1 and after[-1].step == "audit-exported"
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    events = _events(bundle)
    assert [int(_chain(e)["seq"]) for e in events] == [r.seq for r in after]
    assert [_chain(e)["hash"] for e in events] == [r.hash for r in after]
    assert [_chain(e)["prevHash"] for e in events] == [r.prev_hash for r in after]
    assert [e["recorded"] for e in events] == [r.at for r in after]
    assert bundle["timestamp"] == after[-1].at and all(e["resourceType"] == "AuditEvent" for e in events)
    by_step = {r.step: e for r, e in zip(after, events, strict=True)}
    received = by_step["received"]
    assert (received["type"]["code"], received["action"], received["outcome"]) == ("110107", "C", "0")
    sender, us = received["agent"]
    assert sender["who"]["display"] == "rehab-hospital" and sender["requestor"] is True
    assert us["type"]["coding"][0]["code"] == "110152" and us["requestor"] is False
    published = by_step["published"]
    assert (published["type"]["code"], published["agent"][0]["requestor"]) == ("110106", True)
    assert published["agent"][1]["who"]["display"].startswith("referral.")
    assert by_step["rejected"]["outcome"] == "4" and by_step["dead-lettered"]["outcome"] == "4"
    assert "outcomeDesc" in by_step["rejected"]
    assert all(e["source"]["observer"]["display"] == "rehab-integration" for e in events)


def test_the_patient_is_named_under_the_cpr_system_or_its_replacement_numbers(dsn: str, tmp_path: Path) -> None:
    events = _events(_export(dsn, tmp_path / "export.json"))
    named = {(i["system"], i["value"]) for e in events for i in _patients(e)}
    assert named == {(CPR_SYSTEM, CPR), (X_ECPR, "2512481AB1")}


def test_every_auditevent_and_the_bundle_pass_validate(dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "export.json"
    bundle = _export(dsn, out)
    done = run_integration("validate", str(out), env=_env(dsn), timeout=120, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "conforms: no findings", done.stdout
    assert "profiles checked" in done.stdout and "warnings" not in done.stdout  # dom-6: each has a narrative
    assert all(cpr_numbers_in(e["resource"]["text"]["div"]) == [] for e in bundle["entry"])
    for entry in bundle["entry"]:  # each on its own, as a collection of one
        alone = {"resourceType": "Bundle", "id": bundle["id"], "type": "collection", "entry": [entry]}
        result = conformance(alone)
        assert result.findings == [] and result.incomplete == () and result.profiles is not None, entry


def test_a_broken_auditevent_is_a_finding_of_validate(dsn: str, tmp_path: Path) -> None:
    """The validate path really checks the AuditEvents: an outcome R4 does not have, a missing agent."""
    bundle = _export(dsn, tmp_path / "export.json")
    event = bundle["entry"][0]["resource"]
    event["outcome"] = "5"
    del event["agent"]
    findings = conformance(bundle).findings
    assert any("outcome" in f for f in findings) and any("agent" in f for f in findings), findings


def test_ids_are_deterministic(dsn: str, tmp_path: Path) -> None:
    first = _events(_export(dsn, tmp_path / "one.json"))
    second = _events(_export(dsn, tmp_path / "two.json"))
    assert [e["id"] for e in second[: len(first)]] == [e["id"] for e in first]
    assert len({e["id"] for e in second}) == len(second)


# -- filters ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("typed", "key"), [("251248-9996", CPR), (REPLACEMENT, REPLACEMENT), ("2512481AB1", REPLACEMENT)]
)
def test_by_patient_only_their_records_and_the_export_filed_under_them(
    dsn: str, tmp_path: Path, typed: str, key: str
) -> None:
    theirs = [r for r in _records(dsn) if r.patient == key]
    events = _events(_export(dsn, tmp_path / "export.json", "--patient", typed))
    assert [int(_chain(e)["seq"]) for e in events[:-1]] == [r.seq for r in theirs]
    assert all(len(_patients(e)) == 1 for e in events)
    last = _records(dsn)[-1]
    assert last.step == "audit-exported" and last.patient == key
    assert last.detail["filters"] == {"patient": True, "since": None} and last.detail["records"] == len(events)
    assert cpr_numbers_in(json.dumps(last.detail)) == [] and key.rpartition("|")[2] not in json.dumps(last.detail)


def test_since_keeps_the_records_written_at_or_after_it(dsn: str, tmp_path: Path) -> None:
    since = "2026-12-04T10:05:00+01:00"
    events = _events(_export(dsn, tmp_path / "export.json", "--since", since))
    *earlier, export = _records(dsn)
    wanted = [r.seq for r in earlier if datetime.fromisoformat(r.at) >= datetime.fromisoformat(since)]
    assert 1 < len(wanted) < len(earlier)
    assert [int(_chain(e)["seq"]) for e in events] == [*wanted, export.seq]  # the export's own record always
    assert _records(dsn)[-1].detail["filters"] == {"patient": False, "since": "2026-12-04T10:05:00+01:00"}


# -- the export is audited ----------------------------------------------------------------------------------
def test_the_export_is_recorded_with_the_os_user_and_the_chain_stays_intact(dsn: str, tmp_path: Path) -> None:
    events = _events(_export(dsn, tmp_path / "export.json"))
    record = _records(dsn)[-1]
    assert record.step == "audit-exported" and {"by", "uid"} <= record.detail.keys()
    assert record.detail["records"] == len(events) and record.detail["out"] == str(tmp_path / "export.json")
    own = events[-1]  # recorded before the Bundle was written: it is in it
    assert _chain(own)["hash"] == record.hash and own["type"]["code"] == "110101"
    user = own["agent"][0]
    assert user["requestor"] is True and user["who"]["display"] == record.detail["by"]
    verified = run_integration("audit", "verify", env=_env(dsn), timeout=120, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_to_stdout_the_bundle_and_one_line_on_stderr(dsn: str) -> None:
    env = {k: None for k in os.environ if k.startswith("INTEGRATION_")} | {"INTEGRATION_AUDIT_DSN": dsn}
    done = CliRunner().invoke(main, ["audit", "export", "--patient", "urn:oid:1.2.208.176.1.2|2512489996"], env=env)
    assert done.exit_code == 0, done.output
    bundle = json.loads(done.stdout)
    assert bundle["type"] == "collection" and _patients(_events(bundle)[0]) == [{"system": CPR_SYSTEM, "value": CPR}]
    assert done.stderr.count("\n") == 1 and "to stdout" in done.stderr and cpr_numbers_in(done.stderr) == []


def test_store_option_reads_another_store(dsn: str, tmp_path: Path) -> None:
    elsewhere = _env(f"sqlite:///{tmp_path / 'absent.sqlite3'}")
    out = tmp_path / "export.json"
    done = run_integration("audit", "export", "--store", dsn, "--out", str(out), env=elsewhere, timeout=120, text=True)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(out.read_bytes())["entry"]) == len(_records(dsn))


# -- bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--patient", "3201702512"), 2, "not a CPR number"),
        (("--patient", "2512489997x"), 2, "not a CPR number"),
        (("--since", "yesterday"), 2, "not an ISO 8601 date and time"),
        (("--since", "2026-12-01T12:00:00"), 2, "needs a time zone"),
        (("--since", "2512489996"), 2, "not an ISO 8601 date and time"),
        (("--out", "/nonexistent-folder/export.json"), 74, "cannot write there"),
    ],
)
def test_bad_input_is_one_line_its_exit_code_and_nothing_recorded(
    dsn: str, args: tuple[str, ...], code: int, says: str
) -> None:
    before = len(_records(dsn))
    done = run_integration("audit", "export", *args, env=_env(dsn), timeout=120, text=True)
    assert done.returncode == code, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
    assert cpr_numbers_in(done.stderr) == [] and "2512489996" not in done.stderr and "3201702512" not in done.stderr
    assert len(_records(dsn)) == before


def test_an_out_that_is_a_folder_is_74(dsn: str, tmp_path: Path) -> None:
    done = run_integration("audit", "export", "--out", str(tmp_path), env=_env(dsn), timeout=120, text=True)
    assert done.returncode == 74 and done.stderr.count("\n") == 1, done.stderr
    assert not list(tmp_path.glob(".*.part"))


def test_without_a_store_it_exits_66_creates_none_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.sqlite3"
    out = tmp_path / "export.json"
    done = run_integration("audit", "export", "--out", str(out), env=_env(f"sqlite:///{path}"), timeout=120, text=True)
    assert done.returncode == 66 and done.stderr.startswith("error: no audit store at ")
    assert done.stderr.count("\n") == 1 and not path.exists() and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_step_the_table_does_not_map_is_exit_3_before_anything_is_recorded(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(dsn)
    store.record([AuditEntry("a-later-release-step", "audit", "-")], datetime.fromisoformat("2026-12-01T12:00+01:00"))
    store.close()
    done = run_integration("audit", "export", env=_env(dsn), timeout=120, text=True)
    assert done.returncode == 3 and "a-later-release-step" in done.stderr and done.stderr.count("\n") == 1
    assert done.stdout == "" and len(_records(dsn)) == 1


# -- the table ----------------------------------------------------------------------------------------------
# name called → (prefix of its step, the position of the step among its arguments)
AUDITING_CALLS = {"AuditEntry": ("", 0), "_entry": ("", 0), "AuditFact": ("fact:", 0)}
# helpers of one module that take the step further along (the board's `_record(store, step, ...)`)
AUDITING_HELPERS = {("integration/web/app.py", "_record"): ("", 1)}
# First arguments that are not a step: a helper's parameter (its callers are enumerated), a record rebuilt
# from a stored one, the received record carried on, each fact as `fact:<kind>` (the kinds are enumerated).
PASSED_ON = {
    ("integration/service/processor.py", "step"),
    ("integration/service/processor.py", "received.step"),
    ("integration/service/processor.py", "f'fact:{fact.kind}'"),
    ("integration/service/outbound.py", "step"),
    ("integration/service/audit_chain.py", "record.step"),
    ("integration/web/app.py", "step"),
}


def _assigned_literals(tree: ast.AST, name: str) -> set[str]:
    """Every string literal assigned to `name` anywhere in the module (e.g. `kind = "a" if x else "b"`)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            found |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return found


def _mapping_values(path: Path, expression: ast.Subscript) -> set[str]:
    """The values of a module-level table indexed by the step's expression (`FACT_BY_ACTION[...]`)."""
    module = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    table = getattr(__import__(module, fromlist=["_"]), ast.unparse(expression.value))
    return {str(v) for v in table.values()}


def steps_written() -> set[str]:
    """Every step name the code base can record: the first argument of each AuditEntry, `_entry` and
    AuditFact call in integration/ (a fact as `fact:<kind>`), literals read directly, a name through its
    assignments, a table through its values. A form this cannot read fails the test (extend it)."""
    found: set[str] = set()
    for path in sorted((PROJECT_ROOT / "integration").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = str(path.relative_to(PROJECT_ROOT))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            called = AUDITING_HELPERS.get((where, name)) or AUDITING_CALLS.get(name)
            if called is None:
                continue
            prefix, position = called
            first = (
                node.args[position]
                if len(node.args) > position
                else next((k.value for k in node.keywords if k.arg in ("step", "kind")), None)
            )
            assert first is not None, f"{where}:{node.lineno}: {name} without a step"
            shown = ast.unparse(first)
            if (where, shown) in PASSED_ON:
                continue
            if isinstance(first, ast.Constant | ast.IfExp):
                literals = {
                    c.value for c in ast.walk(first) if isinstance(c, ast.Constant) and isinstance(c.value, str)
                }
            elif isinstance(first, ast.Name):
                literals = _assigned_literals(tree, first.id)
            elif isinstance(first, ast.Subscript):
                literals = _mapping_values(path, first)
            else:
                literals = set()
            assert literals, f"{where}:{node.lineno}: cannot tell which step {name}({shown}) records"
            found |= {prefix + literal for literal in literals}
    return found


def test_the_table_maps_every_step_the_code_records_and_no_other() -> None:
    written = steps_written()
    assert {
        "received",
        "published",
        "dead-lettered",
        "fact:referral-built",
        "fact:ack-resent",
        "state-changed",
    } <= written
    assert {"audit-exported", "audit-trail-viewed", "hotline-overdue", "outbound-gave-up"} <= written
    table = EventCodes.from_mapping(yaml.safe_load(TABLE.read_text(encoding="utf-8")))
    assert sorted(written - table.steps.keys()) == [], "steps the table does not map"
    assert sorted(table.steps.keys() - written) == [], "the table maps steps nothing records"


def test_the_table_has_only_r4_actions_and_outcomes() -> None:
    table = EventCodes.from_mapping(yaml.safe_load(TABLE.read_text(encoding="utf-8")))
    assert {codes.action for codes in table.steps.values()} <= {"C", "R", "U", "D", "E"}
    assert {codes.outcome for codes in table.steps.values()} <= {0, 4, 8, 12}
    assert table.codes("rejected").outcome == 4 and table.codes("failed").outcome == 8


def test_only_validate_reads_a_collection_as_plain_fhir_a_received_one_is_still_no_message(
    dsn: str, tmp_path: Path
) -> None:
    from integration.conformance.layers import Use, layer_findings

    bundle = _export(dsn, tmp_path / "export.json")
    assert [f.text for f in layer_findings(bundle, Use.VALIDATE)] == []
    assert "Bundle.type must be 'message'" in [f.text for f in layer_findings(bundle, Use.RECEIVED)]
