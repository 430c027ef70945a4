"""deploy/compose/compose.yaml against the Compose Specification, offline.

The validator is Debian's compose-spec package (trixie; in the offline build environment
through tools/debian-bazel/packages.txt): compose-go, the loader Docker Compose itself uses,
which checks a file against the Compose Specification JSON schema it embeds, then
interpolates, normalises and checks consistency. Nothing of the schema is committed here.
Elsewhere set COMPOSE_SPEC_BIN to an unpacked copy of the package's /usr/bin/compose-spec.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import checks

COMPOSE_DIR = Path(__file__).absolute().parent / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
BIN_ENV = "COMPOSE_SPEC_BIN"
MISSING = (
    "install Debian's compose-spec package (trixie: `apt-get install compose-spec`; it is in "
    f"tools/debian-bazel/packages.txt), or set {BIN_ENV} to an unpacked copy of its /usr/bin/compose-spec"
)


def compose_spec_bin() -> str:
    found = (
        os.environ.get(BIN_ENV)
        or shutil.which("compose-spec")
        or shutil.which("compose-spec", path="/usr/bin")
    )
    if not found or not os.access(found, os.X_OK):
        pytest.fail(f"the compose-spec command is missing: {MISSING}", pytrace=False)
    return found


def load_with_compose_go(path: Path) -> subprocess.CompletedProcess[str]:
    """`compose-spec -format json FILE` with none of the kit's variables set: the defaults are what is checked."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CEPHALOPROXY_")}
    return subprocess.run(
        [compose_spec_bin(), "-format", "json", str(path)],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def normalized() -> dict[str, Any]:
    done = load_with_compose_go(COMPOSE_FILE)
    assert done.returncode == 0, f"compose-spec rejected {COMPOSE_FILE}:\n{done.stderr}"
    return json.loads(done.stdout)


def test_compose_go_rejects_an_unknown_key_and_a_wrong_type(tmp_path: Path) -> None:
    """The validator can fail: the schema's additionalProperties and types are enforced."""
    text = COMPOSE_FILE.read_text()
    control = tmp_path / "control" / "compose.yaml"
    control.parent.mkdir()
    control.write_text(text)
    assert load_with_compose_go(control).returncode == 0, (
        "an unchanged copy must load where the broken ones do not"
    )
    broken = {
        "unknown-key": text.replace(
            "    stop_grace_period: 40s\n", "    stop_grace_periodd: 40s\n"
        ),
        "unknown-nested-key": text.replace(
            "      retries: 3\n", '      retries: 3\n      tset: [CMD, "true"]\n'
        ),
        "wrong-type": text.replace("    read_only: true\n", "    read_only: maybe\n"),
        "tmpfs-as-map": text.replace("      - /tmp:size=64m\n", "      /tmp: size=64m\n"),
    }
    for name, variant in broken.items():
        assert variant != text, f"{name}: the replacement did not apply"
        path = tmp_path / name / "compose.yaml"
        path.parent.mkdir()
        path.write_text(variant)
        done = load_with_compose_go(path)
        assert done.returncode != 0, f"{name}: compose-spec accepted it:\n{done.stdout[:500]}"


def test_compose_go_loads_it(normalized: dict[str, Any]) -> None:
    assert list(normalized["services"]) == ["cephaloproxy"]


def test_the_loaded_service_keeps_the_image_contract(normalized: dict[str, Any]) -> None:
    """What Compose makes of the file (interpolated, normalised) still keeps the contract."""
    assert (
        checks.compose_service_problems(
            normalized["services"]["cephaloproxy"], "compose.yaml (loaded)"
        )
        == []
    )


def test_compose_resolves_the_default_mounts_as_checked(
    raw: dict[str, Any], normalized: dict[str, Any]
) -> None:
    sources = checks.bind_sources(raw["services"]["cephaloproxy"], COMPOSE_DIR)
    loaded = [
        Path(v["source"])
        for v in normalized["services"]["cephaloproxy"]["volumes"]
        if v["type"] == "bind"
    ]
    assert sources == loaded
