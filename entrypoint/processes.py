"""Child processes of PID 1: spawning, reaping every exited child (orphans too), output relays.

One owner of waitpid(): `ChildProcesses.reap` runs on SIGCHLD and on every monitoring tick and
collects *all* exited children, so re-parented orphans never stay zombies. Exit statuses of the
children we spawned are handed out through futures; nobody else may wait for them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TypeVar

from entrypoint import proc_table

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
P = TypeVar("P", bound=asyncio.BaseProtocol)


def become_child_subreaper() -> bool:
    """Adopt orphaned descendants like PID 1 does, when we are not PID 1 (tests, `docker run --init`)."""
    if os.getpid() == 1:
        return True
    import ctypes  # only here: PID 1 (the image) never needs it, and it costs the start ~1 ms

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result: int = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        return result == 0
    except (OSError, AttributeError):
        return False


def describe_exit(returncode: int) -> str:
    """`exit code N` or `signal SIGNAME` from a Popen-style return code."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"signal {name}"
    return f"exit code {returncode}"


class _Capture(asyncio.Protocol):
    """Collects a short-lived child's combined output (`squid -k parse`, certgen)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (orphans re-parented to a subreaper included)."""
    return [p.pid for p in proc_table.process_tree(pid)[1:] if p.state not in ("Z", "X")]


def kill_descendants_now(timeout: float = 2.0) -> int:
    """SIGKILL every descendant of this process until none is left (or `timeout`); reaps them.

    Used on every way out of PID 1: whatever Squid, its kids, the health server or an orphan
    that called setsid() left behind is stopped, not only Squid's process group. A descendant
    we may not signal (EPERM: e.g. root's, from `docker exec -u 0 ... &`) is not ours to kill:
    it is logged once and not waited for.
    """
    me = os.getpid()
    killed = 0
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in descendants(me) if pid not in _not_ours]
        if not left or time.monotonic() > deadline:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
            except PermissionError:
                _give_up_on(pid)
        _reap_all_now()
        time.sleep(0.01)
    _reap_all_now()
    return killed


# Descendants a kill was refused for (EPERM), by pid; each is logged once.
_not_ours: set[int] = set()


def _give_up_on(pid: int) -> None:
    _not_ours.add(pid)
    info = proc_table.read_process(pid)
    comm = (
        repr(info.comm) if info is not None else "gone"
    )  # repr: a name may hold control characters
    logging.getLogger("cephaloproxy").warning(
        "Process %d (%s) is not ours to kill (another user's: EPERM); not waiting for it", pid, comm
    )


def exited_children() -> Iterator[tuple[int, int]]:
    """(pid, Popen-style return code) of every child that has exited, without waiting."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)


def _reap_all_now() -> None:
    for _ in exited_children():
        pass


class ForkError(OSError):
    """The kernel refused a new process (EAGAIN, ENOMEM): nothing is wrong with the program itself."""

    def __init__(self, what: str, error: OSError) -> None:
        if error.errno == errno.EAGAIN:
            reason = "the container's process limit (RLIMIT_NPROC / pids.max) is reached: raise it"
        else:
            reason = "the container is out of memory: raise its memory limit"
        super().__init__(error.errno, f"{reason} ({error.strerror})")
        self.what = what

    def __str__(self) -> str:
        return f"cannot start {self.what}: {self.strerror}"


class ChildProcesses:
    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.loop = asyncio.get_running_loop()
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._popens: dict[int, subprocess.Popen[bytes]] = {}
        self.orphans_reaped = 0

    def install(self) -> None:
        become_child_subreaper()
        self.loop.add_signal_handler(signal.SIGCHLD, self.reap)

    def spawn(
        self, argv: Sequence[str], what: str | None = None, **popen_options: object
    ) -> subprocess.Popen[bytes]:
        """Start a child (never through a shell); its exit is collected by `reap`.

        ForkError when the kernel refuses a new process (an OSError: callers that handle a
        program that cannot run handle it too, but its message names the limit to raise).
        """
        try:
            # popen_options is **kwargs: typeshed's overloads cannot see that it sets no text mode.
            process: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
                list(argv), shell=False, **popen_options
            )
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.ENOMEM):
                raise ForkError(
                    what or " ".join([os.path.basename(argv[0]), *argv[1:3]]), error
                ) from None
            raise
        return self.adopt(process)

    def adopt(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """Collect the exit of `process` (spawned here, or before the event loop ran) by `reap`."""
        self._exits[process.pid] = self.loop.create_future()
        self._popens[process.pid] = process
        self.loop.call_soon(self.reap)  # it may already have exited before we registered it
        return process

    def reap(self) -> None:
        for pid, returncode in exited_children():
            future = self._exits.get(pid)
            if future is None:
                self.orphans_reaped += 1
                self.log.debug("Reaped orphaned process %d (%s)", pid, describe_exit(returncode))
                continue
            process = self._popens.pop(pid)
            process.returncode = returncode  # so subprocess never waits for it again
            if not future.done():
                future.set_result(returncode)

    def exit_future(self, process: subprocess.Popen[bytes]) -> asyncio.Future[int]:
        return self._exits[process.pid]

    def returncode(self, process: subprocess.Popen[bytes]) -> int | None:
        future = self._exits[process.pid]
        return future.result() if future.done() else None

    async def wait(
        self, process: subprocess.Popen[bytes], timeout: float | None = None
    ) -> int | None:
        """The exit code, or None if it is still running after `timeout` seconds."""
        future = self._exits[process.pid]
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None

    @staticmethod
    def kill_group(process: subprocess.Popen[bytes], signum: int = signal.SIGKILL) -> None:
        """Signal the process group led by `process` (children started with process_group=0)."""
        try:
            os.killpg(process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def signal(process: subprocess.Popen[bytes], signum: int) -> None:
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass

    async def open_pipe(self, protocol: Callable[[], P]) -> tuple[int, P]:
        """A pipe whose write end (returned) goes to a child; `protocol()` reads the other end.

        The pipe belongs to our UID, so a child can reopen it as /dev/stdout or /dev/stderr
        (Squid's `stdio:/dev/stdout`), which fails for a pipe owned by the container runtime.
        """
        read_fd, write_fd = os.pipe()
        os.set_inheritable(write_fd, False)
        reader = protocol()
        read_file: IO[bytes] = os.fdopen(read_fd, "rb", buffering=0)
        await self.loop.connect_read_pipe(lambda: reader, read_file)
        return write_fd, reader

    async def run(self, argv: Sequence[str], timeout: float) -> tuple[int, str]:
        """Run a short command to completion; returns (exit code, combined output).

        Cancelled (signal during startup) or timed out: its whole process group is killed.
        """
        write_fd, reader = await self.open_pipe(_Capture)
        try:
            process = self.spawn(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                process_group=0,
            )
        except BaseException:
            reader.close()  # no child: the read end would leak (a reload retried under a process limit)
            raise
        finally:
            os.close(write_fd)
        return await self.collect(process, reader, timeout)

    async def collect_adopted(
        self, process: subprocess.Popen[bytes], read_fd: int, timeout: float
    ) -> tuple[int, str]:
        """`run`'s outcome for a command `adopt`ed from before the event loop ran (head_start),
        its combined output on `read_fd` (a pipe's read end, closed here)."""
        reader = _Capture()
        try:
            await self.loop.connect_read_pipe(lambda: reader, os.fdopen(read_fd, "rb", buffering=0))
        except BaseException:
            self.kill_group(process)
            raise
        return await self.collect(process, reader, timeout)

    async def collect(
        self, process: subprocess.Popen[bytes], reader: _Capture, timeout: float
    ) -> tuple[int, str]:
        """Wait for `process` (its group killed when cancelled or after `timeout`), then its output."""
        try:
            returncode = await self.wait(process, timeout)
        except asyncio.CancelledError:
            self.kill_group(process)
            await asyncio.shield(self.exit_future(process))
            raise
        if returncode is None:
            self.kill_group(process)
            await self.exit_future(process)
            returncode = -signal.SIGKILL
            reader.chunks.append(f"\n(killed after {timeout:g} s)\n".encode())
        try:
            await asyncio.wait_for(asyncio.shield(reader.closed), 5)
        except TimeoutError:
            pass  # a leftover grandchild holds the pipe open; use what we have
        reader.close()
        return returncode, reader.text()
