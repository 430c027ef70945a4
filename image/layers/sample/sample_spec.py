"""Prints a layer_builder spec that installs the given Python files as image_layer would, with bytecode."""

from __future__ import annotations

import json
import sys
from pathlib import PurePosixPath

PACKAGE_DIR = "usr/lib/cephaloproxy/entrypoint"


def spec(sources: list[str]) -> dict[str, object]:
    """The entrypoint package's layout in the image: files, owned runtime dirs, a symlink, bytecode."""
    entries: list[dict[str, object]] = [
        {
            "type": "file",
            "path": f"{PACKAGE_DIR}/{PurePosixPath(source).name}",
            "src": source,
            "mode": "auto",
        }
        for source in sources
    ]
    entries += [
        {"type": "dir", "path": "var/log/squid", "mode": "0770", "uid": 1000, "gid": 0},
        {
            "type": "symlink",
            "path": "usr/local/bin/entrypoint",
            "target": f"/{PACKAGE_DIR}/main.py",
        },
    ]
    return {
        "mtime": 0,
        "bytecode": {
            "cache_tag": f"cpython-{sys.version_info[0]}{sys.version_info[1]}",
            "under": ["usr/lib/cephaloproxy"],
        },
        "entries": entries,
    }


if __name__ == "__main__":
    print(json.dumps(spec(sys.argv[1:]), indent=1, sort_keys=True))
