"""The image the checks read: the built layout, or a skip saying how to get one."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from image.layers.oci_layout import Image, image_layout_from_env, load_image


def built_image_or_skip(
    inspect_file: Callable[[str, bytes], object | None] | None = None,
    inspect_prefix_bytes: bytes = b"",
) -> Image:
    layout = image_layout_from_env()
    if layout is None:
        pytest.skip("no built image: run under Bazel or after `bazel build //image:image`")
    return load_image(
        Path(layout), inspect_file=inspect_file, inspect_prefix_bytes=inspect_prefix_bytes
    )
