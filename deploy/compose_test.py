"""deploy/compose/compose.yaml keeps the image's contract (deploy/checks.py); PyYAML only.

Read-only root with tmpfs for the runtime dirs, user 1000:0, the image's own health check
(no shell, no curl in the image), stop_grace_period derived from SHUTDOWN_TIMEOUT, default
mount sources that exist. compose_schema_test.py validates the same file against the
Compose Specification.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import checks

COMPOSE_DIR = Path(__file__).absolute().parent / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_the_service_keeps_the_image_contract(raw: dict[str, Any]) -> None:
    assert checks.compose_service_problems(raw["services"]["cephaloproxy"], "compose.yaml") == []


def test_every_default_mount_source_exists(raw: dict[str, Any]) -> None:
    """A missing bind source fails `compose up`; the defaults must work on a fresh checkout."""
    sources = checks.bind_sources(raw["services"]["cephaloproxy"], COMPOSE_DIR)
    assert len(sources) == 4
    for source in sources:
        assert source.is_dir(), source
    assert (sources[0] / "squid.conf").is_file(), "the default config dir has no squid.conf"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        (
            "healthcheck",
            {"test": ["CMD-SHELL", "curl -f http://localhost:8080/health"]},
            "healthcheck",
        ),
        ("stop_grace_period", "10s", "grace period"),
        ("environment", {"SHUTDOWN_TIMEOUT": "30", "LOG_LEVEL": "1"}, "LOG_LEVEL"),
        ("environment", {"LOG_LEVEL": "INFO"}, "SHUTDOWN_TIMEOUT explicitly"),
        ("user", "0:0", "user"),
        ("user", "1000", "user"),
        ("read_only", False, "read_only"),
        ("tmpfs", ["/var/run/squid"], "/tmp"),
        ("cap_drop", [], "cap_drop"),
        ("security_opt", [], "no-new-privileges"),
        ("volumes", [{"type": "bind", "source": "./squid", "target": "/etc/squid"}], "hides"),
    ],
)
def test_a_planted_bug_is_reported(
    raw: dict[str, Any], field: str, value: Any, expected: str
) -> None:
    service = json.loads(json.dumps(raw["services"]["cephaloproxy"]))
    service[field] = value
    problems = checks.compose_service_problems(service, "compose.yaml")
    assert any(expected in problem for problem in problems), problems
