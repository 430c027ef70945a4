"""Every path of the built image is on image/layers/allowlist.txt, every `#!`
line names an interpreter in the image and every symlink resolves."""

from __future__ import annotations

from image.built_image import built_image_or_skip
from image.layers import allowlist


def test_built_layers_hold_only_allowlisted_paths() -> None:
    image = built_image_or_skip(inspect_file=allowlist.first_line, inspect_prefix_bytes=b"#!")
    problems = allowlist.check(image, allowlist.load())
    assert problems == [], (
        "not allowed in the image (fix the layer or image/layers/allowlist.txt):\n"
        + "\n".join(problems)
    )


def test_the_check_saw_the_scripts_it_must_judge() -> None:
    """Guards the test above against reading no `#!` lines at all."""
    image = built_image_or_skip(inspect_file=allowlist.first_line, inspect_prefix_bytes=b"#!")
    assert image.file_facts.get("/usr/local/bin/entrypoint.py") == b"#!/usr/bin/python3"
