"""Installed without the checkout (`pip install .`, as the systemd unit's comment says), the service still finds
its default mappings and schemas: the build copies them into the package (setup.py), and the settings' defaults
look there first. Built here with setup.py's own build step (no network), run from elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from integration.config import PROJECT_ROOT, Settings, shipped


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as setup.py's own build step makes it (no network), built once for the module."""
    lib = tmp_path_factory.mktemp("build") / "lib"
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return lib


def test_a_checkout_reads_its_own_top_level_mappings_and_schemas() -> None:
    settings = Settings.from_env({})
    assert (settings.mappings_dir, settings.schemas_dir) == (shipped("mappings"), shipped("schemas"))
    assert shipped("mappings") == PROJECT_ROOT / "mappings" and shipped("schemas") == PROJECT_ROOT / "schemas"


def test_the_built_package_carries_the_mappings_and_schemas_and_uses_them(built: Path, tmp_path: Path) -> None:
    for name in ("mappings", "schemas"):
        copied = sorted(p.name for p in (built / "integration" / "_shipped" / name).iterdir())
        assert copied == sorted(p.name for p in (PROJECT_ROOT / name).iterdir() if p.is_file()), name
    check = (
        "from integration.config import Settings; from integration.bootstrap import build; "
        "s = Settings.from_env({}); build(s); print(s.mappings_dir, s.schemas_dir)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"PYTHONPATH": str(built)}
    ran = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [str(built / "integration" / "_shipped" / n) for n in ("mappings", "schemas")]


DEMO_SAMPLES = PROJECT_ROOT / "integration" / "cli" / "samples"


def test_the_demos_samples_are_the_golden_inputs_they_were_copied_from() -> None:
    """The demo ships its samples as package data; they stay byte for byte the golden inputs (tests/golden) and,
    for its HL7 v2 A03, the ER7 twin it was copied from (tests/hl7)."""
    from tests.conftest import GOLDEN

    copies = sorted(p.relative_to(DEMO_SAMPLES) for p in DEMO_SAMPLES.rglob("*") if p.is_file())
    assert len(copies) == 21
    for copy in copies:
        source = GOLDEN.parent / copy if copy.parts[0] == "hl7" else GOLDEN / copy
        assert (DEMO_SAMPLES / copy).read_bytes() == source.read_bytes(), copy


def test_the_built_package_carries_the_demos_samples(built: Path, tmp_path: Path) -> None:
    carried = sorted(p.relative_to(built / "integration" / "cli" / "samples") for p in built.rglob("samples/*/*"))
    assert carried == sorted(p.relative_to(DEMO_SAMPLES) for p in DEMO_SAMPLES.rglob("*") if p.is_file())
    check = "from integration.cli import demo; print(len(demo.samples()), demo.SAMPLES)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")} | {"PYTHONPATH": str(built)}
    ran = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    # 14 discharge events and a bad one, 5 hotline requests, a closing report: from the built package
    assert ran.stdout.split() == ["21", str(built / "integration" / "cli" / "samples")]


def test_the_built_package_carries_the_boards_templates_and_style(built: Path) -> None:
    """`integration board serve` from a wheel: every template and the style sheet are package data."""
    web = PROJECT_ROOT / "integration" / "web"
    shipped = sorted(p.relative_to(web) for p in [*web.glob("templates/*"), *web.glob("static/*")])
    inside = built / "integration" / "web"
    carried = sorted(p.relative_to(inside) for p in [*inside.glob("templates/*"), *inside.glob("static/*")])
    assert shipped and carried == shipped
