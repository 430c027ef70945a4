"""Socket checks through netlink sock_diag: the same sockets /proc/net/tcp shows, at a cost that
follows our sockets, not the host's (real sockets of this test; /proc is the reference)."""

from __future__ import annotations

import builtins
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrypoint import drain_tails, proc_table, sock_diag, squid_serving


def _listener(family: int = socket.AF_INET) -> socket.socket:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    return socket.create_server((host, 0), family=family, backlog=16)


def _proc_view(ports: set[int], state: int) -> set[tuple[int, int]]:
    """(port, inode) of /proc/net/tcp{,6} rows in `state` on `ports`: the reference."""
    return {
        (s.local_port, s.inode)
        for s in proc_table.tcp_sockets()
        if s.state == state and s.local_port in ports
    }


@contextlib.contextmanager
def _listeners(count: int) -> Iterator[list[socket.socket]]:
    opened = [_listener() for _ in range(count)]
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.data())
def test_the_kernel_filter_returns_exactly_the_wanted_ports(
    count: int, data: st.DataObject
) -> None:
    """Any subset of our listeners' ports (and ports nobody uses): exactly what /proc shows."""
    with _listeners(count) as opened:
        ports = [sock.getsockname()[1] for sock in opened]
        wanted = set(data.draw(st.lists(st.sampled_from(ports), unique=True)))
        wanted |= set(data.draw(st.lists(st.integers(1, 65535), max_size=3)))
        found = sock_diag.tcp_sockets(proc_table.TCP_LISTEN, wanted)
        assert found is not None, "netlink sock_diag refused in this namespace"
        assert {(s.local_port, s.inode) for s in found} == _proc_view(wanted, proc_table.TCP_LISTEN)


def test_accept_queue_and_established_connections_match_proc() -> None:
    with _listeners(1) as (server,):
        port = server.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            ((_, inode),) = _proc_view({port}, proc_table.TCP_LISTEN)
            assert squid_serving.listen_backlogs([port]) == {inode: 3}
            accepted, _ = server.accept()
            with accepted:
                established = sock_diag.tcp_sockets(proc_table.TCP_ESTABLISHED, [port])
                assert established is not None
                # Server side only (the clients' local ports differ); unaccepted ones have inode 0.
                assert {(s.local_port, s.inode) for s in established} == _proc_view(
                    {port}, proc_table.TCP_ESTABLISHED
                )
                assert sorted(s.remote_port for s in established) == sorted(
                    c.getsockname()[1] for c in clients
                )
                assert [
                    s.local_port
                    for s in proc_table.owned_sockets(
                        [os.getpid()], [port], proc_table.TCP_ESTABLISHED
                    )
                ] == [port]
        finally:
            for client in clients:
                client.close()


def test_ipv6_listeners_are_found() -> None:
    try:
        server = _listener(socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback in this namespace")
    with server:
        port = server.getsockname()[1]
        assert [
            (s.local_address, s.local_port)
            for s in proc_table.sockets_on([port], proc_table.TCP_LISTEN)
        ] == [("::1", port)]


def test_unrelated_connections_are_filtered_in_the_kernel() -> None:
    """2 000 idle connections on another port: none of them comes back (nor is decoded)."""
    with _listeners(2) as (ours, ballast):
        ballast_port = ballast.getsockname()[1]
        clients: list[socket.socket] = []
        accepted: list[socket.socket] = []
        try:
            for _ in range(1000):  # accepted one by one: a full accept queue drops SYNs
                clients.append(socket.create_connection(("127.0.0.1", ballast_port), timeout=10))
                accepted.append(ballast.accept()[0])
            port = ours.getsockname()[1]
            found = sock_diag.tcp_sockets(proc_table.TCP_ESTABLISHED, [port])
            assert found == []
            listening = sock_diag.tcp_sockets(proc_table.TCP_LISTEN, [port])
            assert listening is not None and [s.local_port for s in listening] == [port]
        finally:
            for sock in clients + accepted:
                sock.close()


@contextlib.contextmanager
def _file_reads() -> Iterator[list[str]]:
    """Every path opened or listed meanwhile (the cost of a check is the files it reads)."""
    seen: list[str] = []
    real_open, real_listdir = builtins.open, os.listdir

    def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_listdir(path: Any = ".") -> list[str]:
        seen.append(f"listdir {path}")
        return real_listdir(path)

    builtins.open, os.listdir = spy_open, spy_listdir  # type: ignore[assignment]
    try:
        yield seen
    finally:
        builtins.open, os.listdir = real_open, real_listdir


def test_socket_and_process_checks_never_read_the_whole_host(tmp_path: Path) -> None:
    """No /proc/net/tcp (every connection of the host) and no listing of all of /proc: the
    health checks and the drain look at Squid's processes and its ports only."""
    with _listeners(1) as (server,):
        port = server.getsockname()[1]
        pid_file = tmp_path / "squid.pid"
        pid_file.write_text(f"{os.getpid()}\n")
        comm = Path("/proc/self/comm").read_text().strip()
        with _file_reads() as seen:
            squid_serving.observe(pid_file, comm, [port])
            proc_table.owned_sockets([os.getpid()], [port], proc_table.TCP_ESTABLISHED)
            proc_table.sockets_on([port], proc_table.TCP_LISTEN)
            tree = proc_table.process_tree(os.getpid())
        assert tree and tree[0].pid == os.getpid()
        assert not [path for path in seen if path.startswith("/proc/net/")], seen
        assert "listdir /proc" not in seen, seen


def _refuse_netlink(monkeypatch: pytest.MonkeyPatch) -> None:
    real_socket = socket.socket

    def refuse(family: int = -1, *args: Any, **kwargs: Any) -> socket.socket:
        if family == socket.AF_NETLINK:
            raise PermissionError(1, "Operation not permitted")
        return real_socket(family, *args, **kwargs)

    monkeypatch.setattr(sock_diag, "_link", sock_diag._Link())
    monkeypatch.setattr(socket, "socket", refuse)


def test_without_netlink_the_proc_table_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seccomp profile may refuse AF_NETLINK (simulated: the real refusal needs another
    runtime): the checks fall back to /proc and stay right."""
    _refuse_netlink(monkeypatch)
    with _listeners(1) as (server,):
        port = server.getsockname()[1]
        assert sock_diag.tcp_sockets(proc_table.TCP_LISTEN, [port]) is None
        assert [s.local_port for s in proc_table.sockets_on([port], proc_table.TCP_LISTEN)] == [
            port
        ]
        assert list(squid_serving.listen_backlogs([port]).values()) == [0]


def test_process_tree_without_children_files_scans_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without CONFIG_PROC_CHILDREN (simulated): the same tree from a scan of /proc."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(['sleep', '30'])"]
    )
    try:
        deadline = time.monotonic() + 30
        while len(proc_table.process_tree(child.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        walked = [p.pid for p in proc_table.process_tree(child.pid)]
        monkeypatch.setattr(proc_table, "_children", lambda pid: None)
        scanned = [p.pid for p in proc_table.process_tree(child.pid)]
        assert len(walked) == 2 and walked == scanned
    finally:
        for process in proc_table.process_tree(child.pid)[::-1]:
            os.kill(process.pid, signal.SIGKILL)
        child.wait(10)


HOLDER = (
    "import socket, sys\n"
    "server = socket.create_server(('127.0.0.1', 0))\n"
    "print(server.getsockname()[1], flush=True)\n"
    "held = [server.accept()[0] for _ in range(3)]\n"
    "print('accepted', flush=True)\n"
    "spare = []\n"
    "for line in sys.stdin:\n"
    "    if line.startswith('accept'):\n"
    "        held.append(server.accept()[0])\n"
    "        print('accepted', flush=True)\n"
    "        continue\n"
    "    held.pop().close()\n"
    "    if line.startswith('swap'):\n"
    "        spare.append(socket.socket())  # takes the closed one's fd number\n"
    "    print('closed', flush=True)\n"
)


def test_the_drain_counts_again_only_when_squids_sockets_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stand-in Squid with 3 client connections: polling without change asks the kernel once
    (its ESTABLISHED walk covers every connection of the host); a closed one is seen at once
    without asking again (a drain only ever closes); a new socket is asked about (a client?)."""
    from entrypoint.squid_process import FD_LINKS_EVERY, SquidProcess

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None and holder.stdout is not None
    clients: list[socket.socket] = []
    try:
        port = int(holder.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        assert holder.stdout.readline().strip() == "accepted"
        squid = SquidProcess(holder, [], None)  # type: ignore[arg-type]  # only its process is looked at
        dumps: list[int] = []
        real = proc_table.sockets_on
        monkeypatch.setattr(
            proc_table, "sockets_on", lambda ports, state: dumps.append(state) or real(ports, state)
        )
        assert [squid.client_connections([port]) for _ in range(5)] == [3] * 5
        assert dumps == [proc_table.TCP_ESTABLISHED]
        holder.stdin.write("close one\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "closed"
        assert squid.client_connections([port]) == 2
        assert len(dumps) == 1, "only closed since the last count: no walk of the kernel's table"
        # Closed, and its fd number at once another socket's: the same fd listing; the links
        # are read again within FD_LINKS_EVERY polls.
        holder.stdin.write("swap\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "closed"
        counts = [squid.client_connections([port]) for _ in range(FD_LINKS_EVERY + 1)]
        assert counts[-1] == 1, counts
        assert len(dumps) == 2, "a socket Squid did not hold before may be a client: asked"
        clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        holder.stdin.write("accept\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "accepted"
        counts = [squid.client_connections([port]) for _ in range(FD_LINKS_EVERY + 1)]
        assert counts[-1] == 2, counts
    finally:
        for client in clients:
            client.close()
        holder.kill()
        holder.wait(10)


@contextlib.contextmanager
def _orphaned_tails(count: int) -> Iterator[tuple[int, list[socket.socket]]]:
    """Server sockets closed with bytes their clients have not taken yet: orphans in FIN_WAIT1
    with a send queue (what Squid leaves behind for slow clients). Yields (server port, clients)."""
    with _listeners(1) as (server,):
        port = server.getsockname()[1]
        clients: list[socket.socket] = []
        try:
            for _ in range(count):
                client = socket.socket()
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
                clients.append(client)
                client.connect(("127.0.0.1", port))
                accepted, _ = server.accept()
                accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
                accepted.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    while True:
                        accepted.send(b"x" * 65536)
                accepted.close()  # nothing unread from the client: a FIN after the data, no reset
            yield port, clients
        finally:
            for client in clients:
                client.close()


@contextlib.contextmanager
def _orphaned_tail() -> Iterator[tuple[int, socket.socket]]:
    with _orphaned_tails(1) as (port, (client,)):
        yield port, client


def _read_to_end(client: socket.socket) -> int:
    client.settimeout(10)
    total = 0
    while chunk := client.recv(65536):
        total += len(chunk)
    return total


def _count_until(tails: drain_tails.SendingTails, wanted: int) -> int:
    """tails.count() until it is `wanted` (the client's last ACK is on its way), at most 5 s."""
    deadline = time.monotonic() + 5
    while (counted := tails.count()) != wanted and time.monotonic() < deadline:
        time.sleep(0.01)
    return counted


def test_a_closed_socket_still_sending_is_found_with_its_send_queue() -> None:
    """An orphan on the port: found by state and port, inode 0, the send queue /proc shows; it
    is no ESTABLISHED socket; once the client has read everything (FIN_WAIT2) it no longer counts."""
    with _orphaned_tail() as (port, client):
        found = sock_diag.tcp_sockets(drain_tails.TAIL_STATES, [port])
        assert found is not None
        [tail] = found
        assert (tail.state, tail.local_port, tail.remote_port, tail.inode) == (
            proc_table.TCP_FIN_WAIT1,
            port,
            client.getsockname()[1],
            0,
        )
        [row] = [s for s in proc_table.tcp_sockets() if s.local_port == port and s.inode == 0]
        assert tail.send_queue > 0 and row.send_queue == tail.send_queue
        assert sock_diag.tcp_sockets(proc_table.TCP_ESTABLISHED, [port]) == []
        assert (
            sock_diag.tcp_sockets(drain_tails.TAIL_STATES, [port + 1 if port < 65535 else 1]) == []
        )
        tails = drain_tails.SendingTails([port])
        assert [tails.count() for _ in range(5)] == [1] * 5
        assert tails.walks == 1, "a known tail is looked up, not walked for"
        assert _read_to_end(client) > tail.send_queue
        assert _count_until(tails, 0) == 0
        assert tails.walks == 2, "one walk confirms no other tail is left"
        states = {s.state for s in proc_table.tcp_sockets() if s.local_port == port}
        assert proc_table.TCP_FIN_WAIT2 in states  # still there, nothing left to send: not counted


def test_without_netlink_tails_are_counted_from_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Netlink refused (simulated, as above): /proc/net/tcp's tx_queue column gives the same count."""
    with _orphaned_tail() as (port, client):
        _refuse_netlink(monkeypatch)
        tails = drain_tails.SendingTails([port])
        assert tails.count() == 1
        assert [
            s.send_queue > 0 for s in proc_table.sockets_on([port], drain_tails.TAIL_STATES)
        ] == [True]
        _read_to_end(client)
        assert _count_until(tails, 0) == 0


def test_many_tails_are_counted_by_walks_not_one_lookup_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_LOOKUPS known tails (a client leaving many responses unread), a count is one
    walk of the kernel's table, not a lookup per tail at every poll (attack: ~10 us each)."""
    lookups: list[object] = []
    real_lookup = sock_diag.lookup
    monkeypatch.setattr(sock_diag, "lookup", lambda tail: lookups.append(tail) or real_lookup(tail))
    with _orphaned_tails(drain_tails.MAX_LOOKUPS + 6) as (port, _):
        tails = drain_tails.SendingTails([port])
        counts = []
        for _ in range(4):
            counts.append(tails.count())
            time.sleep(0.3)  # past any rest (nine times a walk): each count looks again
        assert counts == [drain_tails.MAX_LOOKUPS + 6] * 4
        assert (tails.walks, lookups) == (4, [])


def test_a_slow_count_rests_nine_times_its_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    """A count that took long (a huge table, /proc without netlink) is not repeated at every
    50 ms poll: for nine times its duration the last count stands, then the kernel is asked again."""
    real_walk = sock_diag.tcp_sockets
    asked: list[float] = []

    def slow_walk(states: object, ports: object) -> object:
        asked.append(time.monotonic())
        time.sleep(0.04)
        return real_walk(states, ports)  # type: ignore[arg-type]

    monkeypatch.setattr(sock_diag, "tcp_sockets", slow_walk)
    monkeypatch.setattr(sock_diag, "lookup", lambda tail: None)  # each tail then looks done
    with _orphaned_tail() as (port, _):
        tails = drain_tails.SendingTails([port])
        assert tails.count() == 1
        first = asked[-1]
        while time.monotonic() < first + 0.3:  # 0.04 s x 9 = 0.36 s of rest
            assert tails.count() == 1
            time.sleep(0.005)
        assert len(asked) == 1, "a slow count was repeated during its rest"
        time.sleep(0.2)
        tails.count()
        assert len(asked) == 2, "after the rest the kernel is asked again"


_SOCKID = st.binary(min_size=16, max_size=16)


@settings(max_examples=200)
@given(
    family=st.sampled_from([socket.AF_INET, socket.AF_INET6]),
    state=st.integers(1, 12),
    ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
    addresses=st.tuples(_SOCKID, _SOCKID),
    queues=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    inode=st.integers(0, 2**32 - 1),
)
def test_a_kernel_message_decodes_to_its_fields(
    family: int,
    state: int,
    ports: tuple[int, int],
    addresses: tuple[bytes, bytes],
    queues: tuple[int, int],
    inode: int,
) -> None:
    """Any inet_diag_msg: ports in network order, addresses cut to the family's size, the
    receive and send queues each in its own field (a swap would count accept queues as tails)."""
    message = sock_diag._MESSAGE.pack(
        family,
        state,
        0,
        0,
        socket.htons(ports[0]),
        socket.htons(ports[1]),
        *addresses,
        7,
        0xC00C1E,
        0,
        *queues,
        0,
        inode,
    )
    data = sock_diag._HEADER.pack(
        sock_diag._HEADER.size + len(message), sock_diag.SOCK_DIAG_BY_FAMILY, 0, 1, 0
    )
    found: list[sock_diag.DiagSocket] = []
    assert not sock_diag._parse(data + message, found)
    size = 4 if family == socket.AF_INET else 16
    assert found == [
        sock_diag.DiagSocket(
            family,
            state,
            *ports,
            addresses[0][:size],
            addresses[1][:size],
            queues[0],
            inode,
            message[sock_diag._SOCKID_AT : sock_diag._SOCKID_AT + sock_diag._SOCKID_SIZE],
            queues[1],
        )
    ]


@given(st.lists(st.integers(0, 31)))
def test_a_state_mask_has_one_bit_per_state(states: list[int]) -> None:
    mask = sock_diag.state_mask(states)
    assert [n for n in range(32) if mask >> n & 1] == sorted(set(states))
    if states:
        assert sock_diag.state_mask(states[0]) == 1 << states[0]
