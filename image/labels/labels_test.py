"""The label file leaves the publisher labels out by default and writes them when they are set."""

from __future__ import annotations

import os
from pathlib import Path


def _labels(env: str) -> dict[str, str]:
    lines = Path(os.environ[env]).read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def test_no_publisher_label_unless_the_builder_sets_it() -> None:
    labels = _labels("DEFAULTS")
    assert labels == {"org.opencontainers.image.title": "CephaloProxy"}


def test_set_values_become_labels_and_empty_ones_stay_out() -> None:
    labels = _labels("SET")
    assert labels["org.opencontainers.image.title"] == "CephaloProxy"
    assert labels["org.opencontainers.image.source"] == "https://git.example/team/cephaloproxy"
    assert labels["org.opencontainers.image.vendor"] == "Example Platform Team"
    assert "org.opencontainers.image.url" not in labels
