"""Lets `python3 -m pytest` run any test file from the repository root.

Bazel puts the workspace root on sys.path itself; plain pytest needs this file
so that `import entrypoint` and friends resolve the same way.
"""

import sys
from pathlib import Path

_REPO_ROOT = str(Path(__file__).resolve().parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
