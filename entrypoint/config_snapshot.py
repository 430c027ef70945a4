"""The config Squid reads: a snapshot in the run dir of exactly the bytes read and checked.

The config is written to a candidate `.squid.conf.<n>` in the run dir and each included file
to `config-<n>/<k>/<j>.conf` (`k` numbers the include lines, `j` a line's files in Squid's
order). Each include line is rewritten in place to `include <run dir>/config-<n>/<k>/*.conf`,
which globs to exactly those files in that order; its continuation lines are left empty, so
every line number stays the operator's. Once `squid -k parse` accepted the candidate it is
renamed over `squid.conf`, the path Squid is started with: a reconfigure re-reads that new
snapshot, and nothing written to the mounted files later reaches Squid unchecked. Three
generations are kept (a Squid slow to re-read may still be reading an earlier one); older
ones are removed.
Files are not fsynced: they are rebuilt on every start, and a rename shows other processes
the whole file. `SnapshotNames` maps snapshot paths in Squid's messages back to the originals.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

from entrypoint.squid_config import ACTIVE_CONFIG_NAME, ActiveConfig, ConfigError, ConfigFile

FILE_MODE = 0o640  # configs may hold secrets (cachemgr_passwd, login=)
DIR_MODE = 0o750
_GENERATION = re.compile(rf"config-([0-9]+)|\.{re.escape(ACTIVE_CONFIG_NAME)}\.([0-9]+)")
# What Squid's include cannot name without quoting (strwordtok) or globbing.
_UNSAFE_PATH = re.compile(r'[\s"\\*?\[]')
GENERATIONS_KEPT = 3  # the active one and the two before it
NAMES_KEPT = GENERATIONS_KEPT + 1  # generations whose paths are mapped back (and a candidate)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    generation: int
    candidate: Path  # the config's copy, checked before it is renamed to the active path
    active: Path
    originals: dict[str, str]  # snapshot path -> the operator's path
    # The config's secret strings: redact remembers them while Squid may print its lines.
    secrets: frozenset[str] = frozenset()


def _generations(run_dir: Path) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {}
    with os.scandir(run_dir) as entries:
        for entry in entries:
            match = _GENERATION.fullmatch(entry.name)
            if match:
                found.setdefault(int(match.group(1) or match.group(2)), []).append(Path(entry.path))
    return found


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _write_file(path: Path, data: bytes) -> None:
    descriptor = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
    )
    try:
        os.fchmod(descriptor, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    finally:
        os.close(descriptor)


def _make_dir(path: Path) -> None:
    path.mkdir(DIR_MODE)
    os.chmod(path, DIR_MODE)


def _layout(
    files: tuple[ConfigFile, ...], directory: Path
) -> tuple[dict[int, Path], dict[tuple[int, int], Path]]:
    """Where each included file goes, and the directory each include line globs."""
    places: dict[int, Path] = {}
    line_dirs: dict[tuple[int, int], Path] = {}
    for index, config_file in enumerate(files):
        for include in config_file.includes:
            line_dir = directory / str(len(line_dirs))
            line_dirs[(index, include.first)] = line_dir
            for position, target in enumerate(include.targets):
                places[target] = line_dir / f"{position:05d}.conf"
    return places, line_dirs


def _rewritten(
    index: int, config_file: ConfigFile, line_dirs: dict[tuple[int, int], Path]
) -> bytes:
    if not config_file.includes:
        return config_file.data
    lines = config_file.data.split(b"\n")
    for include in config_file.includes:
        lines[include.first - 1] = b"include " + os.fsencode(
            line_dirs[(index, include.first)] / "*.conf"
        )
        for number in range(include.first, include.last):
            lines[number] = b""
    return b"\n".join(lines)


def write(config: ActiveConfig) -> Snapshot:
    """Write the next generation's candidate and included files; OSError or ConfigError."""
    run_dir = config.path.parent
    generation = max(_generations(run_dir), default=0) + 1
    directory = run_dir / f"config-{generation}"
    candidate = run_dir / f".{ACTIVE_CONFIG_NAME}.{generation}"
    places, line_dirs = _layout(config.files, directory)
    if line_dirs and _UNSAFE_PATH.search(str(directory)):
        raise ConfigError(
            f"the run dir {run_dir} contains a space, quote, backslash or glob character: Squid's"
            " include lines cannot name the config snapshot there; set CEPHALOPROXY_RUN_DIR to a plain path"
        )
    originals = {str(candidate): str(config.source), str(config.path): str(config.source)}
    try:
        if line_dirs:
            _make_dir(directory)
            for line_dir in line_dirs.values():
                _make_dir(line_dir)
        for index, config_file in enumerate(config.files):
            data = _rewritten(index, config_file, line_dirs)
            if index == 0:
                _write_file(candidate, data)
            else:
                _write_file(places[index], data)
                originals[str(places[index])] = str(config_file.path)
    except BaseException:
        discard_paths(directory, candidate)
        raise
    return Snapshot(generation, candidate, config.path, originals, config.secrets)


def discard_paths(*paths: Path) -> None:
    for path in paths:
        try:
            _remove(path)
        except OSError:
            pass


def discard(snapshot: Snapshot) -> None:
    """Remove a candidate that is not used (refused, or the reload was abandoned)."""
    discard_paths(snapshot.candidate, snapshot.active.parent / f"config-{snapshot.generation}")


def activate(snapshot: Snapshot) -> None:
    """Rename the candidate over the active path (atomic), then remove older generations."""
    os.replace(snapshot.candidate, snapshot.active)
    kept = range(snapshot.generation - GENERATIONS_KEPT + 1, snapshot.generation + 1)
    for generation, paths in _generations(snapshot.active.parent).items():
        # Candidates left over (a crash mid-write) go whatever their number.
        discard_paths(
            *(path for path in paths if generation not in kept or path.name.startswith("."))
        )


class SnapshotNames:
    """Maps snapshot paths in Squid's messages back to the operator's files."""

    def __init__(self) -> None:
        self.prefix = ""
        self.pattern: re.Pattern[str] | None = None
        self.generations: list[dict[str, str]] = []
        self.names: dict[str, str] = {}

    def remember(self, snapshot: Snapshot) -> None:
        run_dir = str(snapshot.active.parent)
        self.prefix = run_dir + os.sep
        self.pattern = re.compile(
            re.escape(self.prefix)
            + rf"(?:config-[0-9]+/[0-9]+/[0-9]+\.conf|\.?{re.escape(ACTIVE_CONFIG_NAME)}(?:\.[0-9]+)?)(?![\w-]|\.\w)"
        )
        self.generations = [*self.generations[-(NAMES_KEPT - 1) :], snapshot.originals]
        self.names = {key: value for names in self.generations for key, value in names.items()}

    def restore(self, text: str) -> str:
        if self.pattern is None or self.prefix not in text:
            return text
        return self.pattern.sub(lambda match: self.names.get(match.group(0), match.group(0)), text)
