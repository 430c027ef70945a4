#!/usr/bin/python3
"""Container entrypoint (PID 1): `/usr/bin/python3 /usr/local/bin/entrypoint.py`.

This file shares its name with the `entrypoint` package, so its own directory must not
shadow the package on sys.path. The package is found, in this order:
  1. beside this file, as a sibling dir `entrypoint/` (a copy next to the package);
  2. in this file's parent dir, when this file lives inside the package (source tree,
     Bazel runfiles);
  3. on sys.path / PYTHONPATH (the image: PYTHONPATH=/usr/lib/cephaloproxy);
  4. /usr/lib/cephaloproxy as a last resort.
"""

# Before anything that takes time: a SIGTERM/SIGINT from now on is recorded (startup then
# aborts cleanly) instead of killing us with the default action or being dropped by the
# kernel as PID 1's. The C module: `signal` would first import enum (5 ms). What comes before
# this line, Python's own start-up, is a window no code of ours can close (docs/operating.md, step 1).
import _signal  # type: ignore[import-not-found]  # the C module behind `signal`: typeshed has no stub

_received: list[int] = []


def _remember(signum: int, frame: object) -> None:
    _received.append(signum)


for _signum in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
    _signal.signal(_signum, _remember)

import gc  # noqa: E402

# The imports build many objects and free few: collecting meanwhile only costs time (about 7 %
# of the imports' CPU); main() turns the collector back on once they are done.
gc.disable()

import os  # noqa: E402
import sys  # noqa: E402


# The same few lines stand in healthcheck.py: nothing can be shared before they have run,
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

from entrypoint.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(_received))
