"""Squid config selection, parsing of uncommented directives, and rendering of the default.

Only what the entrypoint needs is understood: `http_port`/`https_port`, SSL-bump markers,
`pid_filename`, `cache_dir`, helper programs and `sslcrtd_program`. `include` is followed
as Squid does (globs; relative paths from the working directory), to a bounded depth.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
import stat
import tempfile
from pathlib import Path

from entrypoint.mounted_files import CONFIG_SIZE_LIMIT, FileProblem, check_file, read_bounded
from entrypoint.settings import DEFAULT_SQUID_PORT, Settings

DISK_CACHE_TYPES = frozenset({"ufs", "aufs", "diskd", "rock"})
MAX_INCLUDE_DEPTH = 16  # Squid's own limit (MAX_INCLUDE_DEPTH in cache_cf.cc)
CACHE_MARKER = ".cephaloproxy-initialised"  # in a cache_dir once `squid -z` completed there
ROCK_HEADER_SIZE = 16 * 1024  # Rock::SwapDir::HeaderSize: -z sizes the db, then writes it


class ConfigError(Exception):
    """A config problem the operator must fix; the message says what and where."""


@dataclasses.dataclass(frozen=True)
class Directive:
    line_number: int
    name: str
    args: tuple[str, ...]
    source: Path | None = None  # the file it is in (an included file, or the config itself)

    @property
    def where(self) -> str:
        return f"{self.source} line {self.line_number}" if self.source else f"line {self.line_number}"


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
class ActiveConfig:
    path: Path  # the file Squid is started with
    source: Path  # the file the operator provided (or the packaged default)
    is_custom: bool
    directives: tuple[Directive, ...]
    rendered: str | None = None  # text to write to `path` before use (rendered default)

    def named(self, name: str) -> list[Directive]:
        return [d for d in self.directives if d.name == name]

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
            for flag, value in zip(args, args[1:]):
                if flag == "-s":
                    path = Path(value)
                elif flag == "-M":
                    size = value
            dbs.append(CertDb(path, size))
        return dbs


def parse_directives(text: str, source: Path | None = None) -> tuple[Directive, ...]:
    """Uncommented directives with their (first) line numbers; `\\` continues a line."""
    directives: list[Directive] = []
    pending = ""
    pending_line = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not pending:
            pending_line = number
            if line.lstrip().startswith("#"):
                continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        words = full.split()
        directives.append(Directive(pending_line, words[0], tuple(words[1:]), source))
    if pending.strip():
        words = pending.split()
        directives.append(Directive(pending_line, words[0], tuple(words[1:]), source))
    return tuple(directives)


def _include_targets(directive: Directive, pattern: str) -> list[Path]:
    """The files one `include` argument names, in Squid's order (glob() sorts)."""
    # Squid opens relative include paths from its working directory, which is ours.
    full = pattern if os.path.isabs(pattern) else os.path.join(os.getcwd(), pattern)
    if glob.has_magic(full):
        matches = sorted(glob.glob(full))
    else:
        try:
            matches = [full] if check_file(Path(full)) else []
        except FileProblem as error:
            raise ConfigError(f"Squid config {directive.where}: include {pattern}: {error}") from None
    if matches:
        return [Path(match) for match in matches]
    hint = ""
    if not os.path.isabs(pattern) and directive.source is not None:
        beside = directive.source.parent / pattern
        if glob.glob(str(beside)):
            hint = (
                "; Squid resolves relative include paths from its working directory"
                f" {os.getcwd()}, not from the config's directory: write 'include {beside}'"
            )
    raise ConfigError(f"Squid config {directive.where}: include {pattern} matches no file{hint}")


def load_directives(path: Path, text: str | None = None, stack: tuple[str, ...] = ()) -> tuple[Directive, ...]:
    """The directives of `path` (or of `text`, its content) with each `include` expanded in place."""
    real = os.path.realpath(path)
    if real in stack:
        raise ConfigError(f"Squid config include cycle: {' -> '.join((*stack, real))}")
    if len(stack) > MAX_INCLUDE_DEPTH:
        raise ConfigError(f"Squid config {path}: includes nest deeper than {MAX_INCLUDE_DEPTH} levels")
    if text is None:
        try:
            text = read_bounded(path, CONFIG_SIZE_LIMIT).decode("utf-8", errors="replace")
        except FileProblem as error:
            raise ConfigError(f"Squid config: {error}") from None
    directives: list[Directive] = []
    for directive in parse_directives(text, path):
        if directive.name != "include":
            directives.append(directive)
            continue
        for pattern in directive.args:
            for target in _include_targets(directive, pattern):
                directives.extend(load_directives(target, None, (*stack, real)))
    return tuple(directives)


def uses_ssl_bump(directives: tuple[Directive, ...]) -> bool:
    for directive in directives:
        if directive.name in ("ssl_bump", "sslcrtd_program"):
            return True
        if directive.name in ("http_port", "https_port") and "ssl-bump" in directive.args:
            return True
    return False


_ASCII_DIGITS = re.compile(r"[0-9]+")  # not \d or int() alone: they take "٨٠٨١" and "3_128"


def parse_listen_address(directive: Directive) -> ListenAddress:
    spec = directive.args[0]
    host: str | None
    if _ASCII_DIGITS.fullmatch(spec):
        host, port_text = None, spec
    elif spec.startswith("["):
        host, _, port_text = spec[1:].partition("]:")
    else:
        host, _, port_text = spec.rpartition(":")
    if not _ASCII_DIGITS.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise ConfigError(
            f"Squid config {directive.where}: cannot read the port of '{directive.name} {spec}':"
            " expected [host:]port with a port 1-65535 in ASCII digits"
        )
    if host in ("", "0.0.0.0", "::"):
        host = None
    return ListenAddress(host, int(port_text))


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
        hint = f" (did you mean {candidate}?)" if candidate.is_file() and str(candidate) != program else ""
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


def read_config(path: Path) -> tuple[Directive, ...]:
    return load_directives(path)


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


def select_config(settings: Settings) -> ActiveConfig:
    """A mounted config wins; otherwise the packaged default (rendered into the run dir if needed).

    Nothing is written here (runtime dirs may not exist yet): `write_rendered` does that.
    Never writes under the config dirs, so a read-only root filesystem works.
    """
    try:
        custom = check_file(settings.config)
    except FileProblem as error:
        # Only a truly absent path selects the default: a broken mount must fail closed.
        raise ConfigError(
            f"Squid config: {error} (remove it to use the packaged default)"
        ) from None
    if custom:
        active = ActiveConfig(settings.config, settings.config, True, read_config(settings.config))
    else:
        original = _read_default(settings)
        rendered = _render(original, settings)
        if rendered == original:
            directives = load_directives(settings.default_config, original)
            active = ActiveConfig(settings.default_config, settings.default_config, False, directives)
        else:
            target = settings.run_dir / "squid.conf"
            directives = load_directives(target, rendered)
            active = ActiveConfig(target, settings.default_config, False, directives, rendered)
    # Squid's helpers live beside security_file_certgen (/usr/lib/squid in the image).
    validate(active, settings.certgen_bin.parent)
    return active


def write_rendered(active: ActiveConfig) -> None:
    if active.rendered is None:
        return
    try:
        write_atomically(active.path, active.rendered.encode("utf-8"), 0o644)
    except OSError as error:
        raise ConfigError(
            f"cannot write the rendered default config {active.path}: {error.strerror}"
        ) from None
