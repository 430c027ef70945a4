"""Lets `python3 -m pytest` run any test file from the repository root.

Bazel puts the workspace root on sys.path itself; plain pytest needs this file
so that `import entrypoint` and friends resolve the same way.
"""

import sys
from pathlib import Path

_REPO_ROOT = str(Path(__file__).resolve().parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

# Hypothesis: no example database (Bazel's runfiles are read-only, and CI starts fresh),
# no per-example deadline (2 shared cores and real processes), and derandomized so that a
# CI failure replays the same examples. HYPOTHESIS_PROFILE=explore searches at random with
# many more examples, for a local hunt.
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # a suite that needs no Hypothesis (the container suite's venv has it)
    pass
else:
    import os

    settings.register_profile(
        "ci",
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "explore",
        database=None,
        deadline=None,
        max_examples=2000,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
