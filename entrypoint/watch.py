"""Watch mode: stat-poll the mounted config, its includes and the TLS secret; ask for the SIGHUP reload once a change has settled.

A poll runs in one daemon thread (a hung file system stalls the watching, never the event
loop) and only stats: it opens no file, so a FIFO or device swapped in cannot block it.
Each watched path is stamped with where it leads (the kubelet's `..data` swap changes
that), its inode (a replaced file), size, mtime and ctime (an in-place edit) or that it is
absent. Include globs are re-evaluated with the include walker's bounds, and at most
MAX_WATCHED_FILES paths are stamped. A change counts once two polls in a row see the same
changed state (debounce): a rotation in progress is waited for, and a rotation that stays
half done (a certificate without its key) is what the reload then refuses ("Reload skipped").
"""

from __future__ import annotations

import asyncio
import dataclasses
import glob
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

from entrypoint.mounted_files import FileProblem, read_bounded
from entrypoint.settings import Settings
from entrypoint.squid_config import (
    MAX_CONFIG_FILES,
    ActiveConfig,
    ConfigError,
    include_glob_matches,
    include_patterns,
)
from entrypoint.threads import start_daemon_thread

MAX_WATCHED_FILES = MAX_CONFIG_FILES  # what the include walker reads at most for one config
MOUNTINFO_LIMIT = 4 * 1024 * 1024
# A file rewritten faster than the interval never looks the same twice: after this many looks
# of a pending change, and at least this long, the reload runs anyway (a WARNING names what
# keeps changing), so one restless file cannot hold back every other change for ever; the
# seconds keep a short interval from turning a restless file into a reconfigure a second.
MAX_UNSETTLED_LOOKS = 10
MIN_UNSETTLED_SECONDS = 20.0
Stamp = tuple[object, ...]
Fingerprint = dict[str, Stamp]


@dataclasses.dataclass(frozen=True)
class WatchSpec:
    """What to stamp: files (the config, its includes, the TLS pair) and the include globs."""

    files: tuple[str, ...]
    globs: tuple[str, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return self.files + self.globs


def spec_for(settings: Settings, config: ActiveConfig | None) -> WatchSpec:
    """The config path always (it may appear); its includes; the TLS pair unless the config does not bump."""
    files: dict[str, None] = {str(settings.config): None}
    globs: tuple[str, ...] = ()
    if config is not None and config.is_custom:
        for file in config.files[1:]:
            files[str(file.path)] = None
        globs = include_patterns(config)
    if config is None or config.uses_ssl_bump:
        files[str(settings.tls_cert)] = None
        files[str(settings.tls_key)] = None
    return WatchSpec(tuple(files), globs)


def with_attempted(spec: WatchSpec, attempted: tuple[str, ...]) -> WatchSpec:
    """`spec` plus what a skipped reload read: its files (also ones not there yet) and globs."""
    files = dict.fromkeys(spec.files)
    globs = dict.fromkeys(spec.globs)
    for path in attempted:
        (globs if glob.has_magic(path) else files)[path] = None
    return WatchSpec(tuple(files), tuple(globs))


def tls_read_by(settings: Settings, config: ActiveConfig | None) -> tuple[str, ...]:
    """The TLS pair when `config` bumps: its reload read them too (a rotation right after it
    must not become the baseline unnoticed when a reload turned SSL-bump on)."""
    if config is None or not config.uses_ssl_bump:
        return ()
    return (str(settings.tls_cert), str(settings.tls_key))


def stamp(path: str) -> Stamp:
    """What changes when the file at `path` is swapped, replaced, edited, removed or appears."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return ("absent",)
    except OSError as error:
        return ("unusable", error.errno)
    # Where the path leads: the kubelet's ..data swap points it at another directory.
    return (
        os.path.realpath(path),
        info.st_dev,
        info.st_ino,
        info.st_mode,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
    )


def fingerprint(spec: WatchSpec, cancel: threading.Event | None = None) -> tuple[Fingerprint, bool]:
    """Every watched path's stamp, the glob results under `glob:<pattern>`; and whether the cap cut it short."""
    prints: Fingerprint = {}
    paths = list(spec.files)
    # Always present, so that globs turning unusable (or usable again) is a change between two looks.
    prints["globs"] = ("expanded",)
    try:
        matches = include_glob_matches(spec.globs, cancel)
    except ConfigError as error:  # past the walker's bounds: the reload says what is wrong
        prints["globs"] = ("unusable", str(error))
        matches = {}
    for pattern, found in matches.items():
        prints[f"glob:{pattern}"] = found
        paths += found
    watched = list(dict.fromkeys(paths))
    for path in watched[:MAX_WATCHED_FILES]:
        prints[f"file:{path}"] = stamp(path)
    return prints, len(watched) > MAX_WATCHED_FILES


# File timestamps come from the kernel's coarse clock (a jiffy behind time.time_ns()): a file
# changed just after a read began may carry a time just before it.
CLOCK_SLACK_NS = 100_000_000
CHANGED_SINCE_READ: Stamp = ("changed since the config was read",)


def changed_paths(applied: Fingerprint, current: Fingerprint) -> list[str]:
    """What differs between two fingerprints on the paths both watch."""
    return [
        key.split(":", 1)[-1] for key in current if key in applied and applied[key] != current[key]
    ]


def changed_since_read(
    applied: Fingerprint,
    current: Fingerprint,
    config: ActiveConfig | None,
    read_at_ns: int,
    attempted: tuple[str, ...] = (),
) -> list[str]:
    """Paths a new config (a reload, the startup) or a skipped reload made watched that changed
    after it was read: an included file gone or changed since, a glob that now matches a file
    the read did not. Returns their fingerprint keys."""
    applied_read = {str(file.path) for file in config.files} if config is not None else set()
    read = applied_read | set(attempted)
    changed = []
    for key, value in current.items():
        if key in applied:
            continue
        kind, path = key.split(":", 1) if ":" in key else (key, key)
        if kind == "glob":
            if any(match not in read for match in value):
                changed.append(key)
        elif kind == "file" and path in read:
            # a file stamp's 7th field is its ctime in ns (see stamp()); a glob's value is names
            ctime_ns = value[6] if len(value) == 7 else None
            fresh = isinstance(ctime_ns, int) and ctime_ns >= read_at_ns - CLOCK_SLACK_NS
            # A skipped reload's file may never have been there (the missing include it named).
            gone = value[0] in ("absent", "unusable") and path in applied_read
            if gone or fresh:
                changed.append(key)
    return changed


class Watcher:
    """The polling thread; `on_change(paths)` runs on the event loop once per settled change."""

    def __init__(
        self,
        settings: Settings,
        current_config: Callable[[], ActiveConfig | None],
        read_at: Callable[[], int],
        on_change: Callable[[list[str]], None],
        on_warning: Callable[[str], None],
        attempted: Callable[[], tuple[str, ...]] = tuple,
    ) -> None:
        self.settings = settings
        # Read from the thread: one reference (or int), each replaced whole.
        self.current_config = current_config
        self.attempted = attempted  # what the last skipped reload read (ProxyState.attempted_paths)
        self.read_at = read_at  # time.time_ns() when the last config read began
        self.on_change = on_change
        self.on_warning = on_warning
        self.stopping = threading.Event()
        self.polls = 0
        self.told_cap = False  # the cap's WARNING is logged once
        self.unsettled_limit = max(
            MAX_UNSETTLED_LOOKS, math.ceil(MIN_UNSETTLED_SECONDS / settings.watch_interval)
        )
        self._spec: tuple[tuple[ActiveConfig | None, tuple[str, ...]], WatchSpec] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """RuntimeError when no thread can be had (RLIMIT_NPROC)."""
        self.loop = loop
        start_daemon_thread(self._run, "cephaloproxy-watch")

    def stop(self) -> None:
        self.stopping.set()

    def _spec_now(self) -> tuple[tuple[ActiveConfig | None, tuple[str, ...]], WatchSpec]:
        """The spec and what it was made from: (config, attempted) are taken once per look, so
        a reload finishing meanwhile cannot give a look the new spec but the old config."""
        config, attempted = self.current_config(), self.attempted()
        if self._spec is None or self._spec[0][0] is not config or self._spec[0][1] != attempted:
            # parsed once per config
            spec = with_attempted(spec_for(self.settings, config), attempted)
            self._spec = ((config, attempted), spec)
        return self._spec

    def _poll(self, spec: WatchSpec) -> Fingerprint:
        prints, capped = fingerprint(spec, self.stopping)
        self.polls += 1
        if capped and not self.told_cap:
            self.told_cap = True
            self._tell(
                self.on_warning,
                f"Watch mode stamps only the first {MAX_WATCHED_FILES} of the config's files"
                " (the include walker's limit): a change to the others needs a SIGHUP",
            )
        return prints

    def _restless(self, before: Fingerprint | None, now: Fingerprint) -> str:
        moving = changed_paths(before or {}, now)
        shown = ", ".join(moving[:3]) + (f" and {len(moving) - 3} more" if len(moving) > 3 else "")
        return (
            f"Watch: {shown} kept changing for {self.unsettled_limit + 1} looks"
            f" ({self.settings.watch_interval:g} s apart); reloading without waiting for it to settle"
        )

    def _tell(self, callback: Callable[..., None], *args: object) -> None:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            self.stopping.set()  # the loop is closed: PID 1 is exiting

    def _run(self) -> None:
        try:
            applied_for, spec = self._spec_now()
            applied = self._poll(spec)
            candidate: Fingerprint | None = None
            unsettled = 0  # looks in a row that saw a pending change still moving
            while not self.stopping.wait(self.settings.watch_interval):
                read_at = self.read_at()  # before the config: a read begun meanwhile is not missed
                made_from, spec = self._spec_now()
                current = self._poll(spec)
                if made_from != applied_for:  # a reload or the startup read a new tree
                    config, attempted = made_from
                    read_too = attempted + tls_read_by(self.settings, config)
                    for key in changed_since_read(applied, current, config, read_at, read_too):
                        applied[key] = CHANGED_SINCE_READ  # differs from any stamp until applied
                    applied_for = made_from
                changed = changed_paths(applied, current)
                if not changed:
                    applied, candidate, unsettled = current, None, 0  # also adopts new paths
                elif candidate != current and unsettled < self.unsettled_limit:
                    if candidate is not None:
                        unsettled += 1
                    candidate = current  # still changing (or just changed): wait one more interval
                else:
                    if unsettled >= self.unsettled_limit and candidate != current:
                        self._tell(self.on_warning, self._restless(candidate, current))
                    applied, candidate, unsettled = current, None, 0
                    self._tell(self.on_change, changed)
        except Exception as error:  # a bug here must not go unnoticed, nor take PID 1 along
            self._tell(
                self.on_warning,
                f"Watch mode stopped by an unexpected error ({type(error).__name__}: {error}); send SIGHUP to reload",
            )


def _unescape_mount_path(field: str) -> str:
    """/proc/self/mountinfo writes space, tab, newline and backslash as \\ooo."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_points(mountinfo: Path = Path("/proc/self/mountinfo")) -> set[str]:
    """The mount points of this mount namespace (field 5 of proc(5)'s mountinfo)."""
    try:
        text = read_bounded(mountinfo, MOUNTINFO_LIMIT).decode("utf-8", errors="replace")
    except FileProblem:
        return set()
    return {
        _unescape_mount_path(fields[4])
        for fields in (line.split(" ") for line in text.splitlines())
        if len(fields) > 4
    }


def single_file_mounts(
    paths: list[Path], mountinfo: Path = Path("/proc/self/mountinfo")
) -> list[Path]:
    """The paths that are regular files mounted on their own (Docker's `-v file:file`, a subPath)."""
    points = mount_points(mountinfo)
    return [path for path in paths if str(path) in points and path.is_file()]


def single_file_warning(path: Path) -> str:
    return (
        f"{path} is mounted as a single file: a change made by replacing the file (most editors,"
        " a ConfigMap/Secret update with subPath) never reaches the container, so neither watch mode"
        f" nor SIGHUP sees it; mount the directory holding it instead (e.g. -v ./conf:{path.parent}:ro,"
        " or a directory elsewhere with CEPHALOPROXY_CONFIG / CEPHALOPROXY_TLS_DIR pointing into it)"
    )
