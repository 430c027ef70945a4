"""Squid config selection, parsing of uncommented directives, and rendering of the default.

Only what the entrypoint needs is understood: `http_port`/`https_port`, SSL-bump markers,
`pid_filename`, `cache_dir` and `sslcrtd_program`. `include` files are not followed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from pathlib import Path

from entrypoint.mounted_files import CONFIG_SIZE_LIMIT, FileProblem, check_file, read_bounded
from entrypoint.settings import DEFAULT_SQUID_PORT, Settings

DISK_CACHE_TYPES = frozenset({"ufs", "aufs", "diskd", "rock"})


class ConfigError(Exception):
    """A config problem the operator must fix; the message says what and where."""


@dataclasses.dataclass(frozen=True)
class Directive:
    line_number: int
    name: str
    args: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ListenAddress:
    host: str | None  # None when Squid listens on every address
    port: int


@dataclasses.dataclass(frozen=True)
class CacheDir:
    store_type: str
    path: Path

    def is_initialised(self) -> bool:
        # `squid -z` creates the first L1 dir (ufs family) or the db file (rock).
        marker = self.path / ("rock" if self.store_type == "rock" else "00")
        return marker.exists()


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


def parse_directives(text: str) -> tuple[Directive, ...]:
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
        directives.append(Directive(pending_line, words[0], tuple(words[1:])))
    if pending.strip():
        words = pending.split()
        directives.append(Directive(pending_line, words[0], tuple(words[1:])))
    return tuple(directives)


def uses_ssl_bump(directives: tuple[Directive, ...]) -> bool:
    for directive in directives:
        if directive.name in ("ssl_bump", "sslcrtd_program"):
            return True
        if directive.name in ("http_port", "https_port") and "ssl-bump" in directive.args:
            return True
    return False


_PORT_ONLY = re.compile(r"^\d+$")


def parse_listen_address(directive: Directive) -> ListenAddress:
    spec = directive.args[0]
    host: str | None
    if _PORT_ONLY.match(spec):
        host, port_text = None, spec
    elif spec.startswith("["):
        host, _, port_text = spec[1:].partition("]:")
    else:
        host, _, port_text = spec.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(
            f"line {directive.line_number}: cannot read the port of"
            f" '{directive.name} {spec}'"
        ) from None
    if host in ("", "0.0.0.0", "::"):
        host = None
    return ListenAddress(host, port)


def read_config(path: Path) -> tuple[Directive, ...]:
    try:
        text = read_bounded(path, CONFIG_SIZE_LIMIT).decode("utf-8", errors="replace")
    except FileProblem as error:
        raise ConfigError(f"Squid config: {error}") from None
    return parse_directives(text)


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
        directives = read_config(settings.config)
        return ActiveConfig(settings.config, settings.config, True, directives)
    original = _read_default(settings)
    rendered = _render(original, settings)
    directives = parse_directives(rendered)
    if rendered == original:
        return ActiveConfig(settings.default_config, settings.default_config, False, directives)
    target = settings.run_dir / "squid.conf"
    return ActiveConfig(target, settings.default_config, False, directives, rendered)


def write_rendered(active: ActiveConfig) -> None:
    if active.rendered is None:
        return
    try:
        write_atomically(active.path, active.rendered.encode("utf-8"), 0o644)
    except OSError as error:
        raise ConfigError(
            f"cannot write the rendered default config {active.path}: {error.strerror}"
        ) from None
