"""Scale the suite's wait bounds for slow engines (vfs storage, arm64 emulation) with one variable.

Only *waits* are scaled (an engine answering, a container becoming ready or exiting,
a download starting): they exist so a wedged engine fails a test instead of hanging it,
and a slow but correct engine must not fail them. Contract bounds (the 30 s `stop`
grace period) are not scaled: they are what the image promises.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

SCALE_ENV = "CEPHALOPROXY_TEST_TIMEOUT_SCALE"


class TimeoutScaleError(ValueError):
    """$CEPHALOPROXY_TEST_TIMEOUT_SCALE is not a number >= 1."""


def scale(environ: Mapping[str, str] | None = None) -> float:
    """The factor from $CEPHALOPROXY_TEST_TIMEOUT_SCALE (default 1); raises on a bad value."""
    env = os.environ if environ is None else environ
    raw = env.get(SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        raise TimeoutScaleError(
            f"{SCALE_ENV}={raw!r} is not a number; set it to a factor such as 3"
        ) from None
    # Below 1 would tighten bounds the suite was written with; inf/nan would never time out.
    if not math.isfinite(factor) or factor < 1.0:
        raise TimeoutScaleError(
            f"{SCALE_ENV}={raw!r} must be a finite factor >= 1 (e.g. 3 for vfs or emulation)"
        )
    return factor


def scaled(seconds: float, environ: Mapping[str, str] | None = None) -> float:
    """`seconds` times the scale factor."""
    return seconds * scale(environ)
