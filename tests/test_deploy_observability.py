"""The alerting rules (deploy/prometheus/alerts.yml) and the dashboard (deploy/grafana/dashboard.json) name only
metrics the service exports, and between them show every metric it defines: a metric renamed in
`integration.service.metrics` without its rules is an alert that never fires, which nobody would notice."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

import integration.service.metrics  # noqa: F401 - defines the service's metrics in REGISTRY
from integration.config import PROJECT_ROOT

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"

# What Prometheus itself provides: not the service's to export.
PROMETHEUS_OWN = {"up": "set by Prometheus for every scrape target: the process is down or unreachable"}
# Metrics the service exports that neither the rules nor the dashboard need to name, with the reason.
NOT_SHOWN_PREFIXES = {
    "python_": "prometheus_client's default collectors (garbage collector, interpreter): generic, not ours",
    "process_": "prometheus_client's default process collector (memory, CPU, fds): node dashboards show them",
}
# The sample names each metric type adds to its family's name in the exposition (OpenMetrics and text format).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
    "untyped": ("",),
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
KEYWORDS |= {"inf", "nan"}
REQUIRED_ANNOTATIONS = {"summary", "description"}


def exported() -> tuple[dict[str, str], set[str]]:
    """(metric family defined → its type, every sample name a scrape may carry), from the default registry
    and its exposition. A labelled metric without a child yet has its # TYPE line but no sample: the type
    gives the names its samples will have. (The text format shows an unlabelled counter's _created as a
    gauge family of its own: the families are the registry's, not the # TYPE lines.)"""
    text = generate_latest(REGISTRY).decode()
    families = {family.name: family.type for family in REGISTRY.collect()}
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    names = set(samples)
    for family, kind in [*families.items(), *typed.items()]:
        base = family.removesuffix("_total") if kind == "counter" else family
        names.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return families, names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: strings, label matchers, ranges, grouping clauses and
    function calls taken out; what is left that looks like an identifier and is no keyword is a metric."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)  # strings (regexes in matchers)
    expr = re.sub(r"\{[^{}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range and subquery windows
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel, rows' panels too, and of the template queries."""
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            found.extend((panel["title"], t["expr"]) for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(doc["panels"])
    for variable in doc.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((\w+),\s*\w+\)", text)
            assert inner, f"template variable {variable['name']}: only label_values(metric, label) is checked"
            found.append((f"variable {variable['name']}", inner.group(1)))
    return found


def test_the_rules_file_is_prometheus_rule_groups_each_rule_actionable() -> None:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert set(doc) == {"groups"} and doc["groups"]
    seen = set()
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            name = rule["alert"]
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", name) and name not in seen, name
            seen.add(name)
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), name
            assert re.fullmatch(r"\d+[smhdw]", str(rule["for"])), f"{name}: for {rule['for']!r}"
            assert rule["labels"]["severity"] in {"page", "ticket"}, name
            assert REQUIRED_ANNOTATIONS <= set(rule["annotations"]), name
            assert len(rule["annotations"]["description"]) > 80, f"{name}: say what to do"
            assert rule["expr"].count("(") == rule["expr"].count(")"), name
    covered = {"RehabDependencyDown", "RehabDeadLettersWaiting", "RehabOutboundFlagged", "RehabHotlineOverdue"}
    covered |= {"RehabPathwayOverdue", "RehabConsumerNotReady", "RehabNoProcessingWhileMessagesWait"}
    covered |= {"RehabAuditChainNotMoving"}
    assert covered <= seen


def test_every_metric_a_rule_or_panel_names_is_exported() -> None:
    _, names = exported()
    used = [(f"rule {r['alert']}", r["expr"]) for r in rules()] + [(f"panel {t}", e) for t, e in dashboard_exprs()]
    assert len(used) > 30
    missing = sorted(
        f"{where}: {metric}"
        for where, expr in used
        for metric in metric_names(expr)
        if metric not in names and metric not in PROMETHEUS_OWN
    )
    assert not missing, "not exported by integration.service.metrics:\n" + "\n".join(missing)


def test_every_metric_the_service_defines_is_alerted_on_or_shown() -> None:
    families, _ = exported()
    used = {m for r in rules() for m in metric_names(r["expr"])} | {
        m for _, e in dashboard_exprs() for m in metric_names(e)
    }
    unseen = []
    for family, kind in sorted(families.items()):
        if any(family.startswith(prefix) for prefix in NOT_SHOWN_PREFIXES):
            continue
        base = family.removesuffix("_total") if kind == "counter" else family
        if not any(base + suffix in used for suffix in SUFFIXES.get(kind, ("",))):
            unseen.append(f"{family} ({kind})")
    assert not unseen, "neither in deploy/prometheus/alerts.yml nor in deploy/grafana/dashboard.json: " + ", ".join(
        unseen
    )


def test_the_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert doc["title"] and doc["uid"] and doc["schemaVersion"] >= 30
    assert any(v["type"] == "datasource" for v in doc["templating"]["list"])
    ids = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            ids.append(panel["id"])
            assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            for target in panel.get("targets", []):
                assert target["expr"].count("(") == target["expr"].count(")"), panel["title"]
                assert target["refId"]
            walk(panel.get("panels", []))

    walk(doc["panels"])
    assert len(ids) == len(set(ids)), "panel ids must be unique"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (flow) (rate(rehab_messages_total{outcome!="failed",x=~"a|b"}[5m]))', {"rehab_messages_total"}),
        (
            "histogram_quantile(0.95, sum by (le) (rate(rehab_batch_seconds_bucket[5m]))) > 30",
            {"rehab_batch_seconds_bucket"},
        ),
        ("(a_metric > 0) and on () ((sum(rate(b_total[10m])) or vector(0)) == 0)", {"a_metric", "b_total"}),
        ("time() - rehab_ready offset 5m", {"rehab_ready"}),
        ('up{job="hjerterehab-integration"} == 0', {"up"}),
    ],
)
def test_metric_names_are_read_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_rule_naming_a_metric_the_service_does_not_export_is_caught() -> None:
    """The check above must be able to fail: a renamed metric in a rule is reported."""
    _, names = exported()
    assert "rehab_messages_total" in names and "rehab_processing_seconds_bucket" in names
    assert "rehab_dead_letter_queue_messages" in names and "rehab_pathway_overdue" in names
    wrong = metric_names("max by (queue) (rehab_dlq_depth) > 0 and rehab_messages_total > 0")
    assert {m for m in wrong if m not in names and m not in PROMETHEUS_OWN} == {"rehab_dlq_depth"}


def _promtool() -> str:
    fetched = PROJECT_ROOT / ".cache" / "prometheus" / "usr" / "bin" / "promtool"  # `make promtool`
    found = os.environ.get("PROMTOOL") or shutil.which("promtool") or (str(fetched) if fetched.is_file() else None)
    if not found:
        pytest.skip("promtool is not installed (Debian: the prometheus package; or set PROMTOOL)")
    return found


def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alerts_fire_when_and_as_their_unit_tests_say(tmp_path: Path) -> None:
    promtool = _promtool()
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")  # promtool would compare them word for word
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yml")
    done = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
