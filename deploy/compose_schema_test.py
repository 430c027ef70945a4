"""deploy/compose/compose.yaml against the Compose Specification, offline.

Two validators, both from Debian's compose-spec package (trixie; in the offline build
environment, tools/debian-bazel/packages.txt): its JSON schema, checked with
python3-jsonschema, and its `compose-spec` command (compose-go, the loader Docker Compose
uses: schema, interpolation, consistency). The schema is not committed here. Elsewhere,
point COMPOSE_SPEC_SCHEMA / COMPOSE_SPEC_BIN at an unpacked copy of that package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from deploy import checks

COMPOSE_DIR = Path(__file__).absolute().parent / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
SCHEMA_ENV = "COMPOSE_SPEC_SCHEMA"
BIN_ENV = "COMPOSE_SPEC_BIN"
DEBIAN_SCHEMA = "/usr/share/gocode/src/github.com/compose-spec/compose-go/schema/compose-spec.json"
MISSING = (
    "install Debian's compose-spec package (trixie: `apt-get install compose-spec`; it is in "
    f"tools/debian-bazel/packages.txt), or set {SCHEMA_ENV}/{BIN_ENV} to an unpacked copy"
)


def schema() -> dict[str, Any]:
    path = Path(os.environ.get(SCHEMA_ENV) or DEBIAN_SCHEMA)
    if not path.is_file():
        pytest.fail(f"the Compose Specification schema {path} is missing: {MISSING}", pytrace=False)
    return json.loads(path.read_text())


def compose_spec_bin() -> str:
    found = os.environ.get(BIN_ENV) or shutil.which("compose-spec") or shutil.which("compose-spec", path="/usr/bin")
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


def validate(document: dict[str, Any]) -> None:
    # The schema says draft-07 in a spelling jsonschema does not recognise; name it.
    jsonschema.Draft7Validator(schema()).validate(document)


def test_compose_file_matches_the_schema(raw: dict[str, Any]) -> None:
    validate(raw)


def test_the_schema_rejects_what_the_upstream_file_got_wrong(raw: dict[str, Any]) -> None:
    """The validator can fail: unknown keys and a wrong type."""
    bad_key = json.loads(json.dumps(raw))
    bad_key["services"]["cephaloproxy"]["stop_grace_periodd"] = "40s"
    bad_nested_key = json.loads(json.dumps(raw))
    bad_nested_key["services"]["cephaloproxy"]["healthcheck"]["tset"] = ["CMD", "true"]
    bad_type = json.loads(json.dumps(raw))
    bad_type["services"]["cephaloproxy"]["tmpfs"] = {"/tmp": "size=64m"}
    for broken in (bad_key, bad_nested_key, bad_type):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_compose_go_loads_it(normalized: dict[str, Any]) -> None:
    assert list(normalized["services"]) == ["cephaloproxy"]


def test_compose_go_rejects_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("read_only: true\n    tmpfs:", "read_only: maybe\n    tmpfs:"))
    assert "read_only: maybe" in broken.read_text()
    done = load_with_compose_go(broken)
    assert done.returncode != 0, done.stdout


def test_the_loaded_service_keeps_the_image_contract(normalized: dict[str, Any]) -> None:
    """What Compose makes of the file (interpolated, normalised) still keeps the contract."""
    assert checks.compose_service_problems(normalized["services"]["cephaloproxy"], "compose.yaml (loaded)") == []


def test_compose_resolves_the_default_mounts_as_checked(raw: dict[str, Any], normalized: dict[str, Any]) -> None:
    sources = checks.bind_sources(raw["services"]["cephaloproxy"], COMPOSE_DIR)
    loaded = [Path(v["source"]) for v in normalized["services"]["cephaloproxy"]["volumes"] if v["type"] == "bind"]
    assert sources == loaded
