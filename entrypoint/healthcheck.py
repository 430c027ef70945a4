#!/usr/bin/python3
"""Health check CLI: `/usr/bin/python3 /usr/local/bin/healthcheck.py --check` (Docker HEALTHCHECK)
or, without --check, the health server itself.

The entrypoint script shares its name with the `entrypoint` package, so its own directory must not
shadow the package on sys.path. The package is found, in this order:
  1. beside this file, as a sibling dir `entrypoint/` (a copy next to the package);
  2. in this file's parent dir, when this file lives inside the package (source tree,
     Bazel runfiles);
  3. on sys.path / PYTHONPATH (the image: PYTHONPATH=/usr/lib/cephaloproxy);
  4. /usr/lib/cephaloproxy as a last resort.
"""

import signal
import sys

# Before anything that takes time: a SIGTERM/SIGINT during the imports is recorded, and the
# server then exits 0 instead of dying of the signal mid-import.
_received: list[int] = []


def _remember(signum: int, frame: object) -> None:
    _received.append(signum)
    if _imported:
        raise SystemExit(0)


_imported = False
for _signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_signum, _remember)

import os  # noqa: E402


# The same few lines stand in entrypoint.py: nothing can be shared before they have run,
# because they are what makes the shared package importable.
def _locate_package() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isfile(os.path.join(here, "entrypoint", "__init__.py")):
        return  # (1) a package dir beats a same-named module in the same sys.path entry
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    if os.path.isfile(os.path.join(here, "__init__.py")):
        sys.path.insert(0, os.path.dirname(here))  # (2)
    sys.path.append("/usr/lib/cephaloproxy")  # (4); (3) is already on sys.path


_locate_package()

from entrypoint.healthcheck_cli import main  # noqa: E402

_imported = True
if __name__ == "__main__":
    sys.exit(0 if _received else main())
