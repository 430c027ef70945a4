"""Started as root: the user Squid switches to, refused when Squid would fail, and what it must own.

Squid started as root drops to its `cache_effective_user` (the compiled-in default when the
config sets none: `squid` in the image) and refuses to run as root ("Don't run Squid as root").
That user then reopens /dev/stdout and /dev/stderr for `stdio:` logs and writes the runtime
dirs and the certificate DB, so the entrypoint hands those to it (owner only; group 0 and
mode 0770 stay for OpenShift).
"""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path
from typing import Iterable

from entrypoint.processes import ChildProcesses, ForkError
from entrypoint.squid_config import ConfigError, Directive

SQUID_BUILTIN_DEFAULT_USER = "nobody"  # Squid's own default without --with-default-user
_DEFAULT_USER = re.compile(r"--with-default-user=([^'\s]+)")


def compiled_default_user(version_output: str) -> str:
    """The effective user compiled into Squid, from `squid -v`'s configure options."""
    match = _DEFAULT_USER.search(version_output)
    return match.group(1) if match else SQUID_BUILTIN_DEFAULT_USER


def effective_user(directives: tuple[Directive, ...], version_output: str) -> pwd.struct_passwd:
    """The user Squid will run as when started as root; ConfigError if Squid would refuse it."""
    configured = [d for d in directives if d.name == "cache_effective_user" and d.args]
    name = configured[-1].args[0] if configured else compiled_default_user(version_output)
    where = (
        f"Squid config {configured[-1].where}: cache_effective_user {name}"
        if configured
        else f"Squid's compiled-in effective user {name}"
    )
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"{where}: no such user in /etc/passwd; started as root, Squid switches to that user."
            " Name an existing non-root user, or run the container as a non-root UID"
        ) from None
    if user.pw_uid == 0:
        raise ConfigError(
            f"{where}: Squid refuses to run as root ('Don't run Squid as root')."
            " Remove cache_effective_user (the image's default is squid) or name a non-root user,"
            " or run the container as a non-root UID"
        )
    return user


async def when_root(
    children: ChildProcesses, squid_bin: Path, directives: tuple[Directive, ...]
) -> pwd.struct_passwd | None:
    """The user Squid will switch to if we run as root (None otherwise); ConfigError if unusable."""
    if os.geteuid() != 0:
        return None
    try:
        _, version_output = await children.run([str(squid_bin), "-v"], timeout=30)
    except ForkError as error:
        raise ConfigError(str(error)) from None
    except OSError as error:
        raise ConfigError(
            f"cannot run {squid_bin} -v: {error.strerror} (set CEPHALOPROXY_SQUID_BIN)"
        ) from None
    return effective_user(directives, version_output)


def hand_over(paths: Iterable[Path], uid: int, recursive: bool = False) -> None:
    """Make `uid` the owner of each path (and, if recursive, of everything below it)."""
    try:
        for path in dict.fromkeys(paths):
            os.chown(path, uid, -1, follow_symlinks=False)
            if recursive and path.is_dir() and not path.is_symlink():
                for dirpath, dirnames, filenames in os.walk(path):
                    for name in dirnames + filenames:
                        os.chown(os.path.join(dirpath, name), uid, -1, follow_symlinks=False)
    except OSError as error:
        raise ConfigError(
            f"cannot hand {error.filename} to Squid's user (UID {uid}): {error.strerror}"
        ) from None
