"""Processes and TCP sockets as /proc shows them: a process tree, its states, the sockets it owns.

Read-only and cheap (no subprocess, no connection to anyone): the health checks use it to see
whether Squid's processes are alive and own the proxy port, and the shutdown uses it to see
which client connections Squid still serves.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterable
from typing import NamedTuple

from entrypoint import sock_diag

# /proc/net/tcp `st` column (include/net/tcp_states.h).
TCP_ESTABLISHED = 0x01
TCP_FIN_WAIT1 = 0x04
TCP_FIN_WAIT2 = 0x05
TCP_LAST_ACK = 0x09
TCP_LISTEN = 0x0A
TCP_CLOSING = 0x0B


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    comm: str
    state: str  # R, S, D, T (stopped), t (traced), Z (zombie), X, I

    @property
    def runnable(self) -> bool:
        """Not stopped, traced, a zombie or dead: a process that can still answer."""
        return self.state not in ("T", "t", "Z", "X")


@dataclasses.dataclass(frozen=True)
class TcpSocket:
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    state: int
    inode: int
    send_queue: int = 0  # not yet acknowledged by the peer (tx_queue; a FIN counts one); not LISTEN


def _stat_fields(data: bytes) -> tuple[str, list[str]]:
    """comm and the fields after it (state first) of a /proc/<pid>/stat text."""
    text = data.decode("utf-8", errors="replace")
    # comm may contain spaces and parentheses: it runs from the first "(" to the last ")".
    end = text.rindex(")")
    return text[text.index("(") + 1 : end], text[end + 2 :].split()


def read_process(pid: int) -> ProcessInfo | None:
    """The process's /proc/<pid>/stat fields, or None when it does not exist (any more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    comm, fields = _stat_fields(data)
    return ProcessInfo(pid=pid, ppid=int(fields[1]), comm=comm, state=fields[0])


def all_processes() -> list[ProcessInfo]:
    processes = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = read_process(int(name))
            if info is not None:
                processes.append(info)
    return processes


def _children(pid: int) -> list[int] | None:
    """The pids of `pid`'s children (of all its threads), from /proc/<pid>/task/<tid>/children;
    None when the kernel has no such files (CONFIG_PROC_CHILDREN off)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []  # gone meanwhile
    found: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as handle:
                found.extend(int(child) for child in handle.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{task}"):
                continue  # the thread or the process went away
            return None  # the thread is there, its children file is not: no such files here
        except OSError:
            continue
    return found


def _tree_by_children(root: ProcessInfo) -> list[ProcessInfo] | None:
    tree, pending = [root], [root.pid]
    while pending:
        children = _children(pending.pop())
        if children is None:
            return None
        for pid in children:
            info = read_process(pid)
            if info is not None:  # exited since its parent listed it
                tree.append(info)
                pending.append(pid)
    return tree


def _tree_by_scan(root_pid: int) -> list[ProcessInfo]:
    processes = all_processes()
    children: dict[int, list[ProcessInfo]] = {}
    root = None
    for info in processes:
        children.setdefault(info.ppid, []).append(info)
        if info.pid == root_pid:
            root = info
    if root is None:
        return []
    tree, pending = [root], [root_pid]
    while pending:
        for child in children.get(pending.pop(), []):
            tree.append(child)
            pending.append(child.pid)
    return tree


def process_and_children(pid: int) -> list[ProcessInfo]:
    """`pid` and its direct children (root first): process_tree without the grandchildren,
    for a look that needs only those (the health checks: Squid's master and its kids)."""
    root = read_process(pid)
    if root is None:
        return []
    children = _children(pid)
    if children is None:
        return [p for p in _tree_by_scan(pid) if p.pid == pid or p.ppid == pid]
    return [root, *(info for info in map(read_process, children) if info is not None)]


# /proc/<pid>/stat fields after comm (0-based: state is 0): num_threads, starttime, arg_start, arg_end.
_THREADS, _START_TIME, _ARG_START, _ARG_END = 17, 19, 45, 46
HELD_LIMIT = 16  # descriptors HeldProcesses keeps open at most (the rest are read and closed)
_READ_SIZE = 4096


class Look(NamedTuple):
    """A process as one read of its stat file shows it."""

    info: ProcessInfo
    threads: int
    # starttime and the argument area's addresses: another process (a reused pid) or a new exec
    # of the same one shows other values, so what was read from its cmdline may be kept while
    # they stay the same. The addresses are 0 when /proc hides them from us (then keep nothing).
    image: tuple[str, str, str]


def _pread_all(descriptor: int) -> bytes:
    data = os.pread(descriptor, _READ_SIZE, 0)
    while len(data) % _READ_SIZE == 0 and data:  # rare: more than one read's worth
        chunk = os.pread(descriptor, _READ_SIZE, len(data))
        if not chunk:
            break
        data += chunk
    return data


class HeldProcesses:
    """The stat and children files of processes looked at again and again, held open: a look is
    one pread instead of an open, reads and a close (the health probes' cost).

    A descriptor stays bound to the process it was opened for: once that process is gone (and
    its pid perhaps reused), reading it fails with ESRCH and it is dropped, then the path is
    opened afresh; another process can never pass for the one first seen.
    """

    def __init__(self, limit: int = HELD_LIMIT) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}  # path -> descriptor

    def _read(self, pid: int, name: str) -> bytes | None:
        path = f"/proc/{pid}/{name}"
        descriptor = self._held.get(path)
        if descriptor is not None:
            try:
                return _pread_all(descriptor)
            except OSError:  # that process is gone: a process with its pid now is another one
                self.keep_only(other for other in self.pids() if other != pid)
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            data = _pread_all(descriptor)
        except OSError:
            os.close(descriptor)
            return None
        if len(self._held) < self.limit and (name == "stat" or f"/proc/{pid}/stat" in self._held):
            self._held[path] = descriptor
        else:
            os.close(descriptor)
        return data

    def _forget(self, path: str) -> None:
        os.close(self._held.pop(path))

    def look(self, pid: int) -> Look | None:
        data = self._read(pid, "stat")
        if not data:
            return None
        comm, fields = _stat_fields(data)
        info = ProcessInfo(pid=pid, ppid=int(fields[1]), comm=comm, state=fields[0])
        image = (fields[_START_TIME], fields[_ARG_START], fields[_ARG_END])
        return Look(info, int(fields[_THREADS]), image)

    def children(self, pid: int, threads: int) -> list[int] | None:
        """As _children: a single-threaded process's children file is read through its held
        descriptor (no listing of its tasks)."""
        if threads == 1:
            # Held only while the stat file is: a stat read that fails drops both (a held
            # children file of a process that is gone reads empty, not ESRCH).
            data = self._read(pid, f"task/{pid}/children")
            if data is not None:
                return [int(child) for child in data.split()]
        return _children(pid)

    def process_and_children(self, pid: int) -> list[Look]:
        """As process_and_children, each process read through its held descriptor."""
        root = self.look(pid)
        if root is None:
            return []
        children = self.children(pid, root.threads)
        if children is None:
            scanned = process_and_children(pid)
            return [look for look in map(self.look, (p.pid for p in scanned)) if look is not None]
        return [root, *(look for look in map(self.look, children) if look is not None)]

    def pids(self) -> set[int]:
        return {int(path.split("/", 3)[2]) for path in self._held}

    def keep_only(self, pids: Iterable[int]) -> None:
        """Close the descriptors of every other process (gone, or no longer looked at)."""
        kept = set(pids)
        for path in [path for path in self._held if int(path.split("/", 3)[2]) not in kept]:
            self._forget(path)

    def close(self) -> None:
        for path in list(self._held):
            self._forget(path)


def process_tree(root_pid: int) -> list[ProcessInfo]:
    """root_pid and every descendant of it (root first).

    Walked down from the root through each process's `children` file: the cost follows the
    tree, not every process the host (or a shared PID namespace) runs. Without those files, a
    scan of all of /proc.
    """
    root = read_process(root_pid)
    if root is None:
        return []
    tree = _tree_by_children(root)
    return tree if tree is not None else _tree_by_scan(root_pid)


def socket_inodes(pids: Iterable[int]) -> set[int]:
    """Inodes of every socket the processes hold open (from /proc/<pid>/fd links `socket:[N]`)."""
    inodes: set[int] = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to read
        for name in names:
            try:
                target = os.readlink(f"{fd_dir}/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def fds_readable(pid: int) -> bool:
    """Whether we may read the process's fd links. Not so for Squid's kids after they switched
    from root to Squid's user, seen by a root without CAP_SYS_PTRACE (a container's root): the
    directory may list, but each readlink is refused. A process that is gone counts as readable."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
        if names:
            os.readlink(f"/proc/{pid}/fd/{names[0]}")
    except PermissionError:
        return False
    except OSError:
        pass
    return True


def _decode_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # The kernel prints each 32-bit word in host (little-endian) byte order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    import ipaddress  # only for IPv6 rows; keeps the common path import-free

    return str(ipaddress.IPv6Address(words))


def tcp_sockets() -> list[TcpSocket]:
    """Every TCP socket of this network namespace, IPv4 and IPv6."""
    sockets = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue  # no IPv6 in this namespace
        for row in rows:
            fields = row.split()
            local, remote = fields[1].split(":"), fields[2].split(":")
            send_queue = int(fields[4].split(":")[0], 16)  # tx_queue:rx_queue
            sockets.append(
                TcpSocket(
                    local_address=_decode_address(local[0]),
                    local_port=int(local[1], 16),
                    remote_address=_decode_address(remote[0]),
                    remote_port=int(remote[1], 16),
                    state=int(fields[3], 16),
                    inode=int(fields[9]),
                    send_queue=send_queue,
                )
            )
    return sockets


def _from_diag(found: sock_diag.DiagSocket) -> TcpSocket:
    return TcpSocket(
        local_address=socket.inet_ntop(found.family, found.local_address),
        local_port=found.local_port,
        remote_address=socket.inet_ntop(found.family, found.remote_address),
        remote_port=found.remote_port,
        state=found.state,
        inode=found.inode,
        send_queue=found.send_queue,
    )


def sockets_on(ports: Iterable[int], state: int | Iterable[int]) -> list[TcpSocket]:
    """TCP sockets (IPv4 and IPv6) in `state` (one or several) on one of the local `ports`.

    Asked of the kernel over netlink, filtered there by state and port (sock_diag): the cost
    follows the matching sockets, not the tens of thousands of other rows a busy host has.
    Where netlink is refused, the whole /proc/net/tcp table is read and filtered instead.
    """
    wanted = set(ports)
    states = {state} if isinstance(state, int) else set(state)
    found = sock_diag.tcp_sockets(states, wanted)
    if found is not None:
        return [_from_diag(sock) for sock in found]
    return [sock for sock in tcp_sockets() if sock.state in states and sock.local_port in wanted]


def owned_sockets(pids: Iterable[int], ports: Iterable[int], state: int) -> list[TcpSocket]:
    """Sockets in `state` on one of the local `ports` that one of `pids` holds open."""
    matching = sockets_on(ports, state)
    if not matching:
        return []  # no fd of theirs needs reading
    inodes = socket_inodes(pids)
    return [sock for sock in matching if sock.inode in inodes]
