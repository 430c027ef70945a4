"""Squid commands: config check, cache init, start in the foreground, stop, reconfigure."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from entrypoint.processes import ChildProcesses, _PipeReader, describe_exit
from entrypoint.redact import redact, redact_text
from entrypoint.squid_config import ActiveConfig

PARSE_TIMEOUT = 60.0
CACHE_INIT_TIMEOUT = 600.0
START_TIMEOUT = 30.0

# Lines of `squid -k parse` output worth showing: errors, warnings, and line references.
_PROBLEM_LINE = re.compile(r"FATAL|ERROR|Bungled|WARNING|line \d+", re.IGNORECASE)


class SquidError(Exception):
    """Squid refused the config or did not start; the message carries Squid's own words."""


def process_name(pid: int) -> tuple[str, str] | None:
    """(comm, state) of a live process from /proc, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    comm = data[data.index("(") + 1 : data.rindex(")")]
    state = data[data.rindex(")") + 2 :].split(" ", 1)[0]
    return comm, state


def is_live_process(pid: int, expected_comm: str) -> bool:
    info = process_name(pid)
    return info is not None and info[1] not in ("Z", "X") and info[0] == expected_comm[:15]


def read_pid_file(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def problem_lines(output: str) -> list[str]:
    """Squid's error lines (or its last 20), redacted: Squid echoes config lines verbatim."""
    lines = [line for line in output.splitlines() if _PROBLEM_LINE.search(line)]
    return [redact(line) for line in lines or output.strip().splitlines()[-20:]]


class SquidProcess:
    """The running Squid master: our direct child and leader of its own process group."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        relays: list[_PipeReader],
        children: ChildProcesses,
    ) -> None:
        self.process = process
        self.relays = relays
        self.children = children

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def exited(self) -> asyncio.Future[int]:
        return self.children.exit_future(self.process)

    def request_graceful_stop(self) -> None:
        # Exactly what `squid -k shutdown` does, without starting another process.
        self.children.signal(self.process, signal.SIGTERM)

    def kill_all(self) -> None:
        """SIGKILL the master and whatever remains of its group (kids, helpers)."""
        self.children.kill_group(self.process, signal.SIGKILL)

    async def drain_output(self, timeout: float) -> None:
        pending = [relay.closed for relay in self.relays]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for relay in self.relays:
            relay.close()


class SquidCommands:
    def __init__(self, squid_bin: Path, children: ChildProcesses, log: logging.Logger) -> None:
        self.squid_bin = squid_bin
        self.children = children
        self.log = log
        # Started as root, Squid's effective user reopens /dev/stdout and /dev/stderr: it must own the pipes.
        self.stdio_owner: int | None = None

    @property
    def comm(self) -> str:
        return self.squid_bin.name

    def _check_binary(self) -> None:
        if not os.access(self.squid_bin, os.X_OK):
            raise SquidError(
                f"Squid binary {self.squid_bin} is missing or not executable"
                " (set CEPHALOPROXY_SQUID_BIN)"
            )

    async def check_config(self, config: ActiveConfig) -> None:
        self._check_binary()
        argv = [str(self.squid_bin), "-k", "parse", "-f", str(config.path)]
        returncode, output = await self.children.run(argv, timeout=PARSE_TIMEOUT)
        self.log.debug("squid -k parse output:\n%s", redact_text(output.rstrip()))
        if returncode != 0:
            details = "\n".join(problem_lines(output))
            raise SquidError(
                f"Squid rejected the config {config.source} ({describe_exit(returncode)}):\n{details}"
            )

    async def initialise_cache(self, config: ActiveConfig) -> bool:
        """`squid -z` when a disk cache_dir is not initialised yet; returns whether it ran."""
        missing = [d for d in config.disk_cache_dirs if not d.is_initialised()]
        if not missing:
            return False
        self.log.info(
            "Initialising Squid cache: %s", ", ".join(str(d.path) for d in missing)
        )
        # -N: without it `squid -z` backgrounds itself and returns before the dirs exist.
        argv = [str(self.squid_bin), "-N", "-z", "-f", str(config.path)]
        returncode, output = await self.children.run(argv, timeout=CACHE_INIT_TIMEOUT)
        self.log.debug("squid -z output:\n%s", redact_text(output.rstrip()))
        if returncode != 0 or any(not d.is_initialised() for d in missing):
            details = "\n".join(problem_lines(output))
            raise SquidError(f"Squid cache initialisation failed ({describe_exit(returncode)}):\n{details}")
        return True

    async def start(self, config: ActiveConfig) -> SquidProcess:
        """Start Squid in the foreground as our direct child, in its own process group.

        Its stdout/stderr are pipes we own and relay to ours (see ChildProcesses.open_pipe).
        """
        self._check_binary()
        out_fd, out_relay = await self.children.open_pipe(sys.stdout.fileno())
        err_fd, err_relay = await self.children.open_pipe(sys.stderr.fileno())
        try:
            if self.stdio_owner is not None:
                os.fchown(out_fd, self.stdio_owner, -1)
                os.fchown(err_fd, self.stdio_owner, -1)
            process = self.children.spawn(
                [str(self.squid_bin), "--foreground", "-d", "0", "-f", str(config.path)],
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                process_group=0,
            )
        finally:
            os.close(out_fd)
            os.close(err_fd)
        return SquidProcess(process, [out_relay, err_relay], self.children)

    async def wait_until_running(self, squid: SquidProcess, pid_file: Path) -> int:
        """Wait for the pid file naming a live squid process; returns that pid."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if squid.exited.done():
                raise SquidError(
                    f"Squid exited during startup ({describe_exit(squid.exited.result())});"
                    " see its messages above"
                )
            pid = read_pid_file(pid_file)
            if pid is not None and is_live_process(pid, self.comm):
                return pid
            await asyncio.sleep(0.05)
        raise SquidError(
            f"Squid did not write a pid file {pid_file} naming a running squid process"
            f" within {START_TIMEOUT:g} s"
        )

    async def reconfigure(self, squid: SquidProcess, config: ActiveConfig) -> None:
        """Check the config first (a bad one would kill Squid), then `-k reconfigure` (SIGHUP)."""
        await self.check_config(config)
        self.children.signal(squid.process, signal.SIGHUP)
