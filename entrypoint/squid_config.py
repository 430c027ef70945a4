"""Squid config selection, parsing of uncommented directives, and rendering of the default.

Only what the entrypoint needs is understood: `http_port`/`https_port`, SSL-bump markers,
`pid_filename`, `cache_dir`, helper programs and `sslcrtd_program`. Lines are joined and split
as Squid's preprocessor does (cache_cf.cc). `include` is followed as Squid does (globs;
relative paths from the working directory), within bounds (depth, files, bytes, time), and
every file is read once: `files` keeps those bytes for the snapshot Squid is pointed at.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import itertools
import math
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from entrypoint.mounted_files import CONFIG_SIZE_LIMIT, FileProblem, check_file, read_bounded
from entrypoint.redact import MAX_REMEMBERED_PER_SET, secrets_in
from entrypoint.settings import DEFAULT_SQUID_PORT, Settings, port_number

DISK_CACHE_TYPES = frozenset({"ufs", "aufs", "diskd", "rock"})
MAX_INCLUDE_DEPTH = 16  # Squid's own limit (parseOneConfigFile in cache_cf.cc)
# Files read for one config: the config itself and every inclusion. Squid 7.7 aborts at startup
# with 1000 or more (each inclusion logs an early message, and debug.cc asserts fewer than 1000
# of those); `squid -k parse` accepts them, so the limit is ours, with room for its other messages.
MAX_CONFIG_FILES = 900
MAX_CONFIG_BYTES = CONFIG_SIZE_LIMIT  # the config and all its includes together
READ_TIME_LIMIT = 20.0  # seconds to read and expand one config tree
MAX_GLOB_ENTRIES = 100_000  # directory entries include globs may visit in one config tree
# Squid reads a config line with fgets() into BUFSIZ (8192) bytes: the rest of a line of 8191
# bytes or more becomes a line of its own, one PID 1 would never have seen.
MAX_LINE_BYTES = 8190
ACTIVE_CONFIG_NAME = "squid.conf"  # in the run dir: the snapshot Squid is started with
CACHE_MARKER = ".cephaloproxy-initialised"  # in a cache_dir once `squid -z` completed there
ROCK_HEADER_SIZE = 16 * 1024  # Rock::SwapDir::HeaderSize: -z sizes the db, then writes it


class ConfigError(Exception):
    """A config problem the operator must fix; the message says what and where."""

    # What the failed read had read or looked for (files, absolute include patterns): watch
    # mode watches them too, so fixing a file only the refused config names is a change.
    read_paths: tuple[str, ...] = ()
    # The secret strings of what was read before the problem (redact.secrets_in): remembered
    # like a config's, as the message or Squid may print them.
    secrets: tuple[str, ...] = ()


class TooManySecrets(ConfigError):
    """A config holding more secret strings than redaction remembers (MAX_REMEMBERED_PER_SET):
    refused before Squid reads it, so none of its values is remembered (nothing prints them,
    the message holds none, and a set that large would cost the event loop seconds to compile)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Directive:
    line_number: int
    name: str
    args: tuple[str, ...]
    source: Path | None = None  # the file it is in (an included file, or the config itself)

    @property
    def where(self) -> str:
        return (
            f"{self.source} line {self.line_number}" if self.source else f"line {self.line_number}"
        )


@dataclasses.dataclass(frozen=True)
class ListenAddress:
    host: str | None  # None when Squid listens on every address
    port: int


@dataclasses.dataclass(frozen=True)
class CacheDir:
    store_type: str
    path: Path

    @property
    def marker(self) -> Path:
        """Written only after `squid -z` succeeded: its first L1 dir (ufs family) or its db file
        (rock) exist as soon as -z starts, so they do not prove an interrupted -z finished."""
        return self.path / CACHE_MARKER

    def is_initialised(self) -> bool:
        return self.marker.is_file()

    def made_by_squid(self) -> bool:
        """What `squid -z` makes is there: the first L1 dir, or a rock db with its header."""
        if self.store_type != "rock":
            return (self.path / "00").is_dir()
        try:
            return (self.path / "rock").stat().st_size >= ROCK_HEADER_SIZE
        except OSError:
            return False

    def remove_partial_rock_db(self) -> bool:
        """A rock db file cut short before its header (-z skips any existing db file): removed,
        so -z makes it again. Returns whether one was removed."""
        if self.store_type != "rock" or self.made_by_squid():
            return False
        try:
            (self.path / "rock").unlink()
        except FileNotFoundError:
            return False
        return True


@dataclasses.dataclass(frozen=True)
class CertDb:
    path: Path
    size: str


@dataclasses.dataclass(frozen=True)
class IncludeLine:
    """One `include` directive: its physical lines and the files it names, in Squid's order."""

    first: int
    last: int  # > first when continued with `\\`
    targets: tuple[int, ...]  # indices into ActiveConfig.files


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """One file of the config tree as read (once): where it is, its bytes, its includes."""

    path: Path
    data: bytes
    includes: tuple[IncludeLine, ...] = ()
    secrets: tuple[str, ...] = ()  # what redaction must remember of its lines (redact.secrets_in)


@dataclasses.dataclass(frozen=True)
class ActiveConfig:
    path: Path  # the file Squid is started with: the snapshot in the run dir (config_snapshot)
    source: Path  # the file the operator provided (or the packaged default)
    is_custom: bool
    directives: tuple[Directive, ...]
    # The tree as read: files[0] is the config (the rendered default's text), then every
    # included file, once per inclusion. Empty for an ActiveConfig made by hand.
    files: tuple[ConfigFile, ...] = ()

    def named(self, name: str) -> list[Directive]:
        return [d for d in self.directives if d.name == name]

    @property
    def secrets(self) -> frozenset[str]:
        """Every secret string of the tree: what Squid may print of it, to be redacted."""
        return frozenset(secret for file in self.files for secret in file.secrets)

    @property
    def uses_ssl_bump(self) -> bool:
        return uses_ssl_bump(self.directives)

    @property
    def http_ports(self) -> list[ListenAddress]:
        return [parse_listen_address(d) for d in self.named("http_port") if d.args]

    @property
    def pid_file(self) -> Path | None:
        values = [d.args[0] for d in self.named("pid_filename") if d.args]
        if not values or values[-1] == "none":
            return None
        return Path(values[-1])

    @property
    def disk_cache_dirs(self) -> list[CacheDir]:
        dirs = []
        for directive in self.named("cache_dir"):
            if len(directive.args) >= 2 and directive.args[0] in DISK_CACHE_TYPES:
                dirs.append(CacheDir(directive.args[0], Path(directive.args[1])))
        return dirs

    def cert_dbs(self, default_db: Path) -> list[CertDb]:
        dbs = []
        for directive in self.named("sslcrtd_program"):
            path, size = default_db, "4MB"
            args = list(directive.args[1:])
            for flag, value in itertools.pairwise(args):
                if flag == "-s":
                    path = Path(value)
                elif flag == "-M":
                    size = value
            dbs.append(CertDb(path, size))
        return dbs


def _squid_lines(
    text: str, secrets: dict[str, None] | None = None
) -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, words) of each directive, joined as Squid's preprocessor does.

    Lines end at LF only (a CR or NUL ends a line's content); leading spaces/tabs are dropped; a
    line starting with `#` and an empty line are skipped (inside a continuation too); a
    trailing `\\` joins the next line directly; a continuation still open at the end is
    dropped, as Squid drops it. `secrets`: gets the secret strings of every joined line.
    """
    parts: list[str] = []
    first = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("\r", 1)[0].split("\0", 1)[0].lstrip(" \t")  # C strings end at NUL
        if not line or line[0] == "#":
            continue
        if not parts:
            first = number
        if line[-1] == "\\":
            parts.append(line[:-1])
            continue
        parts.append(line)
        joined = "".join(parts)
        if secrets is not None:  # Squid may echo its values, or pieces of them, in any later line
            secrets.update(dict.fromkeys(secrets_in(joined)))
        # Words are separated by spaces and tabs only (Squid's w_space; CR/LF are gone).
        words = [word for word in joined.replace("\t", " ").split(" ") if word]
        parts = []
        if words:
            yield first, number, words


def parse_directives(text: str, source: Path | None = None) -> tuple[Directive, ...]:
    """Uncommented directives with their (first) line numbers; `\\` continues a line."""
    return tuple(
        Directive(first, words[0], tuple(words[1:]), source)
        for first, _, words in _squid_lines(text)
    )


class _Budget:
    """What reading one config tree may cost: files, bytes, time; and a flag to give up early."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self.files = 0
        self.bytes = 0
        self.entries = 0  # directory entries include globs visited
        self.seen: dict[str, None] = {}  # files read and include patterns looked for, in order
        self.secrets: dict[str, None] = {}  # of every file read (redact remembers them)
        self.deadline = time.monotonic() + READ_TIME_LIMIT
        self.cancel = cancel

    def check_time(self, where: object) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise ConfigError(f"Squid config {where}: reading the config was abandoned")
        if time.monotonic() > self.deadline:
            raise ConfigError(
                f"Squid config {where}: reading the config and its includes took longer than"
                f" {READ_TIME_LIMIT:g} s (the limit): include fewer or smaller files"
            )

    def add_files(self, where: object, count: int) -> None:
        self.files += count
        if self.files > MAX_CONFIG_FILES:
            raise ConfigError(
                f"Squid config {where}: the config and its includes come to more than"
                f" {MAX_CONFIG_FILES} files (the limit: Squid 7.7 aborts at startup near 1000; each inclusion counts): include fewer files"
            )

    def visit_entry(self, where: object) -> None:
        """One directory entry an include glob looked at: time, cancel and count checked."""
        self.check_time(where)
        self.entries += 1
        if self.entries > MAX_GLOB_ENTRIES:
            raise ConfigError(
                f"Squid config {where}: expanding the include globs visited more than"
                f" {MAX_GLOB_ENTRIES} directory entries (the limit): name the files or a narrower pattern"
            )

    def check_secrets(self, where: object, count: int) -> None:
        """ConfigError naming `where` when `count` secret strings are past the limit."""
        if count > MAX_REMEMBERED_PER_SET:
            raise TooManySecrets(
                f"Squid config {where}: the config and its includes hold more than"
                f" {MAX_REMEMBERED_PER_SET} distinct secret values and pieces of them (passwords,"
                " keys, tokens; the limit: the log redaction remembers each to replace it wherever"
                " Squid prints it): use fewer distinct credentials in one config"
            )

    def add_bytes(self, path: Path, count: int) -> None:
        self.bytes += count
        if self.bytes > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"Squid config {path}: the config and its includes come to more than"
                f" {MAX_CONFIG_BYTES} bytes (the limit for all files together)"
            )


def _glob_in_dir(
    directory: str, pattern: str, dir_only: bool, budget: _Budget, where: str
) -> list[str]:
    """The names in `directory` matching one pattern component, as Python's glob (and glob(3)
    without GLOB_PERIOD) match them: a leading '.' only by a pattern starting with '.'."""
    names: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                budget.visit_entry(where)
                if pattern[0] != "." and entry.name[0] == ".":
                    continue
                if dir_only:
                    try:
                        if not entry.is_dir():
                            continue
                    except OSError:
                        continue
                if fnmatch.fnmatchcase(entry.name, pattern):
                    names.append(entry.name)
    except OSError:
        pass  # glob(3) without GLOB_ERR, and Python's glob, skip what cannot be read
    return names


def _glob(pattern: str, dir_only: bool, budget: _Budget, where: str) -> list[str]:
    """glob.glob(pattern) for an absolute pattern, with the budget checked at every directory
    entry visited (glob.iglob could walk a huge tree for nothing: `/sys/*/*/*/.../nomatch`)."""
    directory, name = os.path.split(pattern)
    if not glob.has_magic(pattern):
        if name:
            return [pattern] if os.path.lexists(pattern) else []
        return [pattern] if os.path.isdir(directory) else []
    parents = (
        _glob(directory, True, budget, where)
        if directory != pattern and glob.has_magic(directory)
        else [directory]
    )
    found: list[str] = []
    for parent in parents:
        if glob.has_magic(name):
            found += [
                os.path.join(parent, match)
                for match in _glob_in_dir(parent, name, dir_only, budget, where)
            ]
        elif os.path.isdir(parent) if not name else os.path.lexists(os.path.join(parent, name)):
            found.append(os.path.join(parent, name))
        budget.check_time(where)
    return found


def _include_targets(directive: Directive, pattern: str, budget: _Budget) -> list[Path]:
    """The files one `include` argument names, in Squid's order (glob() sorts)."""
    # Squid opens relative include paths from its working directory, which is ours.
    full = pattern if os.path.isabs(pattern) else os.path.join(os.getcwd(), pattern)
    budget.seen[full] = None
    where = f"{directive.where}: include {pattern}"
    if glob.has_magic(full):
        matches = sorted(_glob(full, False, budget, where))
        budget.add_files(where, len(matches))
    else:
        try:
            matches = [full] if check_file(Path(full)) else []
        except FileProblem as error:
            raise ConfigError(f"Squid config {where}: {error}") from None
        budget.add_files(where, len(matches))
    if matches:
        return [Path(match) for match in matches]
    hint = ""
    if not os.path.isabs(pattern) and directive.source is not None:
        beside = directive.source.parent / pattern
        if (
            _glob(str(beside), False, budget, where)
            if glob.has_magic(str(beside))
            else os.path.lexists(beside)
        ):
            hint = (
                "; Squid resolves relative include paths from its working directory"
                f" {os.getcwd()}, not from the config's directory: write 'include {beside}'"
            )
    raise ConfigError(f"Squid config {where} matches no file{hint}")


def _check_line_lengths(path: Path, data: bytes) -> None:
    """ConfigError naming the first line Squid would split (it reads lines with fgets into 8192 bytes)."""
    lines = data.split(b"\n")
    if max(map(len, lines)) <= MAX_LINE_BYTES:
        return
    number, line = next(
        (n, line) for n, line in enumerate(lines, start=1) if len(line) > MAX_LINE_BYTES
    )
    raise ConfigError(
        f"Squid config {path} line {number}: the line is {len(line)} bytes long, more than"
        f" {MAX_LINE_BYTES} bytes (the limit): Squid would read the rest of it as another line:"
        " shorten or split it (a line ending in \\ continues on the next)"
    )


def _read_tree(
    path: Path,
    data: bytes | None,
    stack: tuple[str, ...],
    budget: _Budget,
    directives: list[Directive],
    files: list[ConfigFile],
) -> int:
    """Read `path` (or take `data`, its bytes), expanding includes; returns its index in `files`."""
    real = os.path.realpath(path)
    if real in stack:
        raise ConfigError(f"Squid config include cycle: {' -> '.join((*stack, real))}")
    if len(stack) > MAX_INCLUDE_DEPTH:
        raise ConfigError(
            f"Squid config {path}: includes nest deeper than {MAX_INCLUDE_DEPTH} levels"
        )
    budget.check_time(path)
    budget.seen[str(path)] = None
    if data is None:
        try:
            data = read_bounded(path, CONFIG_SIZE_LIMIT)
        except FileProblem as error:
            raise ConfigError(f"Squid config: {error}") from None
    budget.add_bytes(path, len(data))
    _check_line_lengths(path, data)
    index = len(files)
    files.append(ConfigFile(path, data))
    includes: list[IncludeLine] = []
    secrets: dict[str, None] = {}
    try:
        # A newline byte stays a newline whatever the decoding replaces: line numbers hold.
        for count, (first, last, words) in enumerate(
            _squid_lines(data.decode("utf-8", errors="replace"), secrets)
        ):
            directive = Directive(first, words[0], tuple(words[1:]), path)
            budget.check_secrets(directive.where, len(secrets))  # names the line that crossed it
            if count % 4096 == 4095:
                budget.check_time(directive.where)
            if directive.name != "include":
                directives.append(directive)
                continue
            targets: list[int] = []
            for pattern in directive.args:
                for target in _include_targets(directive, pattern, budget):
                    targets.append(
                        _read_tree(target, None, (*stack, real), budget, directives, files)
                    )
            if targets:  # a bare `include` is no include to Squid either: left as it is
                includes.append(IncludeLine(first, last, tuple(targets)))
    finally:  # on a problem too: its message, or Squid, may print what was read before it
        budget.secrets.update(secrets)
    budget.check_secrets(path, len(budget.secrets))
    files[index] = ConfigFile(path, data, tuple(includes), tuple(secrets))
    return index


def read_tree(
    path: Path, data: bytes | None = None, cancel: threading.Event | None = None
) -> tuple[tuple[Directive, ...], tuple[ConfigFile, ...]]:
    """The directives of `path` (or of `data`, its bytes) with every `include` expanded in
    place, and every file as read; ConfigError past a limit (depth, files, bytes, time)."""
    directives: list[Directive] = []
    files: list[ConfigFile] = []
    budget = _Budget(cancel)
    try:
        _read_tree(path, data, (), budget, directives, files)
    except ConfigError as error:
        error.read_paths = tuple(budget.seen)
        if not isinstance(error, TooManySecrets):
            error.secrets = tuple(budget.secrets)
        raise
    return tuple(directives), tuple(files)


def load_directives(path: Path, text: str | None = None) -> tuple[Directive, ...]:
    """The directives of `path` (or of `text`, its content) with each `include` expanded in place."""
    data = None if text is None else text.encode("utf-8", errors="surrogatepass")
    return read_tree(path, data)[0]


def uses_ssl_bump(directives: tuple[Directive, ...]) -> bool:
    for directive in directives:
        if directive.name in ("ssl_bump", "sslcrtd_program"):
            return True
        if directive.name in ("http_port", "https_port") and "ssl-bump" in directive.args:
            return True
    return False


_ASCII_DIGITS = re.compile(r"[0-9]+")  # not \d or int() alone: they take "٨٠٨١" and "3_128"


def parse_listen_address(directive: Directive) -> ListenAddress:
    """The address of an http_port/https_port line; ConfigError (never another exception) if unreadable."""
    spec = directive.args[0]
    host: str | None
    if _ASCII_DIGITS.fullmatch(spec):
        host, port_text = None, spec
    elif spec.startswith("["):
        host, _, port_text = spec[1:].partition("]:")
    else:
        host, _, port_text = spec.rpartition(":")
    port = port_number(port_text)  # over-long digit strings too: int() would raise ValueError
    if port is None:
        line = (
            f"'{directive.name} {spec}'"
            if len(spec) <= 80
            else f"'{directive.name} {spec[:80]}...' ({len(spec)} characters)"
        )
        raise ConfigError(
            f"Squid config {directive.where}: cannot read the port of {line}:"
            " expected [host:]port with a port 1-65535 in ASCII digits"
        )
    if host in ("", "0.0.0.0", "::"):
        host = None
    return ListenAddress(host, port)


# Directives naming a helper program: name -> index of the program among the arguments
# (None: the first absolute path after the ACL name, as in external_acl_type).
_HELPER_DIRECTIVES: dict[str, int | None] = {
    "sslcrtd_program": 0,
    "url_rewrite_program": 0,
    "store_id_program": 0,
    "logfile_daemon": 0,
    "external_acl_type": None,
}


def helper_programs(directives: tuple[Directive, ...]) -> list[tuple[Directive, str]]:
    """(directive, program path) for every helper the config names."""
    helpers: list[tuple[Directive, str]] = []
    for directive in directives:
        args = directive.args
        program: str | None = None
        if directive.name == "auth_param":
            if len(args) >= 3 and args[1] == "program":
                program = args[2]
        elif directive.name in _HELPER_DIRECTIVES:
            index = _HELPER_DIRECTIVES[directive.name]
            if index is not None:
                program = args[index] if len(args) > index else None
            else:
                program = next((a for a in args[1:] if a.startswith("/")), None)
        if program is not None and program != "none":
            helpers.append((directive, program))
    return helpers


def _helper_problem(program: str) -> str | None:
    path = program if os.path.isabs(program) else os.path.join(os.getcwd(), program)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as error:
        return f"cannot be checked ({error.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if not os.access(path, os.X_OK):
        return f"is not executable by UID {os.getuid()} GID {os.getgid()} (mode {stat.filemode(info.st_mode)})"
    return None


def check_helpers(directives: tuple[Directive, ...], helpers_dir: Path) -> None:
    """Every helper program exists and is executable: `squid -k parse` does not check, and a
    wrong path only shows later as `helpers are crashing too rapidly`."""
    for directive, program in helper_programs(directives):
        problem = _helper_problem(program)
        if problem is None:
            continue
        candidate = helpers_dir / os.path.basename(program)
        hint = (
            f" (did you mean {candidate}?)"
            if candidate.is_file() and str(candidate) != program
            else ""
        )
        raise ConfigError(
            f"Squid config {directive.where}: {directive.name} program {program} {problem}{hint};"
            f" the image's Squid helpers are in {helpers_dir}"
        )


def validate(active: ActiveConfig, helpers_dir: Path | None = None) -> None:
    """What the entrypoint relies on, checked before anything starts (a message, not a traceback)."""
    for directive in active.named("http_port") + active.named("https_port"):
        if directive.args:
            parse_listen_address(directive)
    pid_files = [d for d in active.named("pid_filename") if d.args]
    if pid_files and pid_files[-1].args[0] != "none" and not os.path.isabs(pid_files[-1].args[0]):
        last = pid_files[-1]
        raise ConfigError(
            f"Squid config {last.where}: pid_filename {last.args[0]} must be an absolute path"
            " (for example /var/run/squid/squid.pid)"
        )
    if helpers_dir is not None:
        check_helpers(active.directives, helpers_dir)


def _read_default(settings: Settings) -> str:
    try:
        return read_bounded(settings.default_config, CONFIG_SIZE_LIMIT).decode("utf-8")
    except (FileProblem, UnicodeDecodeError) as error:
        raise ConfigError(
            f"cannot read the packaged default config {settings.default_config}:"
            f" {error} (set CEPHALOPROXY_DEFAULT_CONFIG or mount /etc/squid/squid.conf)"
        ) from None


def _render(text: str, settings: Settings) -> str:
    text = re.sub(
        rf"^(\s*http_port\s+){DEFAULT_SQUID_PORT}\b",
        rf"\g<1>{settings.squid_port}",
        text,
        flags=re.MULTILINE,
    )
    # Squid's own drain limit follows SHUTDOWN_TIMEOUT (whole seconds, rounded up).
    text = re.sub(
        r"^([ \t]*shutdown_lifetime[ \t]+)\S+(?:[ \t]+[A-Za-z]+)?",
        lambda match: f"{match.group(1)}{math.ceil(settings.shutdown_timeout)} seconds",
        text,
        flags=re.MULTILINE,
    )
    if settings.log_format == "json":  # the access log to stdout in the packaged JSON logformat
        text = re.sub(
            r"^([ \t]*access_log[ \t]+stdio:/dev/stdout)(?=[ \t]|$)",
            r"\g<1> logformat=cephaloproxy_json",
            text,
            flags=re.MULTILINE,
        )
    for default_dir, actual_dir in settings.default_path_substitutions().items():
        if str(actual_dir) != default_dir:
            text = re.sub(re.escape(default_dir) + r"(?=/|\s|$)", str(actual_dir), text)
    return text


def render_default(settings: Settings) -> str:
    """The packaged default with SQUID_PORT and the configured runtime dirs applied."""
    return _render(_read_default(settings), settings)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to a temp file beside `path`, then rename: readers never see half a file."""
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise


def select_config(settings: Settings, cancel: threading.Event | None = None) -> ActiveConfig:
    """A mounted config wins; otherwise the packaged default, rendered (SQUID_PORT, dirs).

    Every file is read once, here; nothing is written (runtime dirs may not exist yet):
    config_snapshot writes what was read into the run dir, never under the config dirs, so
    a read-only root filesystem works. `cancel`: set to make a read in a worker thread stop.
    """
    try:
        custom = check_file(settings.config)
    except FileProblem as error:
        # Only a truly absent path selects the default: a broken mount must fail closed.
        raise ConfigError(
            f"Squid config: {error} (remove it to use the packaged default)"
        ) from None
    source = settings.config if custom else settings.default_config
    data = None if custom else _render(_read_default(settings), settings).encode("utf-8")
    directives, files = read_tree(source, data, cancel)
    active = ActiveConfig(settings.run_dir / ACTIVE_CONFIG_NAME, source, custom, directives, files)
    # Squid's helpers live beside security_file_certgen (/usr/lib/squid in the image).
    try:
        validate(active, settings.certgen_bin.parent)
    except ConfigError as error:
        error.read_paths = tuple(str(file.path) for file in files) + include_patterns(active)
        error.secrets = tuple(active.secrets)
        raise
    return active


def include_patterns(config: ActiveConfig) -> tuple[str, ...]:
    """Every `include` argument of the tree as read, absolute (for watch mode's re-evaluation)."""
    patterns: dict[str, None] = {}
    for file in config.files:
        if not file.includes:
            continue
        lines = file.data.split(b"\n")
        for include in file.includes:
            text = b"\n".join(lines[include.first - 1 : include.last]).decode(
                "utf-8", errors="replace"
            )
            for directive in parse_directives(text):
                for pattern in directive.args if directive.name == "include" else ():
                    patterns[
                        pattern if os.path.isabs(pattern) else os.path.join(os.getcwd(), pattern)
                    ] = None
    return tuple(patterns)


def include_glob_matches(
    patterns: tuple[str, ...], cancel: threading.Event | None = None
) -> dict[str, tuple[str, ...]]:
    """What each absolute include glob matches now, all within one budget of the walker's
    bounds (entries visited, time): ConfigError past them."""
    budget = _Budget(cancel)
    return {
        pattern: tuple(sorted(_glob(pattern, False, budget, f"include {pattern}")))
        for pattern in patterns
        if glob.has_magic(pattern)
    }
