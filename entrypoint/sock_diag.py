"""TCP sockets in given states on given local ports, asked of the kernel over netlink (what `ss` does).

/proc/net/tcp lists every socket of the namespace and costs O(host's connections) to read and
decode; NETLINK_SOCK_DIAG filters by state (idiag_states) and local port (an inet_diag bytecode
filter) in the kernel, so a query costs O(matching sockets). Standard library only
(socket.AF_NETLINK); None when netlink is refused (a seccomp profile, an old kernel): callers
fall back to /proc then.
"""

from __future__ import annotations

import errno
import functools
import socket
import struct
import threading
from collections.abc import Iterable
from typing import NamedTuple

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP, INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE = (
    1,
    2,
    3,
)  # in every kernel with inet_diag (S_EQ is newer)

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid (48 bytes, zero).
_REQUEST = struct.Struct("=BBBxI48x")
_REQUEST_ONE = struct.Struct("=BBBxI")  # the same, its sockid following as a dump gave it
_SOCKID_AT, _SOCKID_SIZE = 4, 48  # where inet_diag_msg holds the sockid (ports, addresses, cookie)
# inet_diag_msg: family, state, timer, retrans, sockid (sport, dport big-endian; src, dst 16
# bytes each; interface; cookie), expires, rqueue, wqueue, uid, inode.
_MESSAGE = struct.Struct("=BBBBHH16s16sIQIIIII")
_PORTS = struct.Struct("!HH")
_OP = struct.Struct("=BBH")  # inet_diag_bc_op: code, yes, no
_RECEIVE_BYTES = 1 << 16


class DiagSocket(NamedTuple):
    family: int
    state: int
    local_port: int
    remote_port: int
    local_address: bytes  # 4 (IPv4) or 16 (IPv6) bytes
    remote_address: bytes
    queue: int  # rqueue: for a LISTEN socket, the connections waiting to be accepted
    inode: int
    sockid: bytes = b""  # as the kernel gave it, cookie included: what `lookup` asks for
    # wqueue: bytes not yet acknowledged by the peer, sent or not (a FIN counts one); for a
    # LISTEN socket the accept queue's limit instead
    send_queue: int = 0


def port_filter(ports: Iterable[int]) -> bytes:
    """inet_diag bytecode accepting a socket whose local port is one of `ports`.

    The kernel's audit follows every op's "yes" jump and wants each "no" jump to land on that
    chain, so "yes" always steps to the next op and the branching is done with "no" (as `ss`
    does): per port `sport >= p`, `sport <= p`, each "no" going to the next port's ops, then a
    JMP (always "no") to the end: accept. The last port's "no" jumps 4 bytes past the end: reject.
    """
    wanted = sorted(set(ports))
    comparison = 2 * _OP.size  # an op and the operand op holding the port
    blocks = [
        2 * comparison + (_OP.size if index + 1 < len(wanted) else 0)
        for index in range(len(wanted))
    ]
    total = sum(blocks)
    code = bytearray()
    for index, port in enumerate(wanted):
        last = index + 1 == len(wanted)
        next_block = len(code) + blocks[index]  # where a "no" goes: the next port, or reject
        for operator in (INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE):
            miss = (total + 4 if last else next_block) - len(code)
            code += _OP.pack(operator, comparison, miss) + _OP.pack(0, 0, port)
        if not last:
            code += _OP.pack(INET_DIAG_BC_JMP, _OP.size, total - len(code))
    return bytes(code)


def state_mask(states: int | Iterable[int]) -> int:
    """idiag_states for one state or several: bit N stands for state N."""
    wanted = {states} if isinstance(states, int) else set(states)
    return sum(1 << state for state in wanted)


def _request(family: int, states: int, ports: Iterable[int], sequence: int) -> bytes:
    bytecode = port_filter(ports)
    attribute = struct.pack("=HH", 4 + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, states) + attribute
    return (
        _HEADER.pack(
            _HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0
        )
        + body
    )


def _parse(data: bytes, found: list[DiagSocket]) -> bool:
    """Append the messages' sockets to `found`; True when the dump is complete."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            raise OSError("netlink: malformed message")
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, offset + _HEADER.size)
            raise OSError(-error, "netlink sock_diag refused the request")
        if kind == SOCK_DIAG_BY_FAMILY:
            (family, state, _, _, sport, dport, src, dst, _, _, _, rqueue, wqueue, _, inode) = (
                _MESSAGE.unpack_from(data, offset + _HEADER.size)
            )
            size = 4 if family == socket.AF_INET else 16
            sockid_at = offset + _HEADER.size + _SOCKID_AT
            found.append(
                DiagSocket(
                    family,
                    state,
                    socket.ntohs(sport),
                    socket.ntohs(dport),
                    src[:size],
                    dst[:size],
                    rqueue,
                    inode,
                    data[sockid_at : sockid_at + _SOCKID_SIZE],
                    wqueue,
                )
            )
        offset += (length + 3) & ~3
    return False


@functools.lru_cache(maxsize=16)
def _requests(states: int, ports: tuple[int, ...]) -> tuple[bytes, bytes]:
    return _request(socket.AF_INET, states, ports, 1), _request(socket.AF_INET6, states, ports, 2)


class _Link:
    """One netlink socket, reused by every query (two fewer syscalls per query than a new one
    each time); one query at a time: callers may sit on different threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None

    def dump(self, request: bytes, single: bool = False) -> list[DiagSocket]:
        """The sockets the kernel answers `request` with (`single`: a lookup of one socket,
        answered by one message and no NLMSG_DONE)."""
        with self.lock:
            if self.sock is None:
                self.sock = socket.socket(
                    socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG
                )
                self.sock.settimeout(5.0)  # the kernel answers at once; never hang PID 1 on it
            found: list[DiagSocket] = []
            try:
                self.sock.sendto(request, (0, 0))
                while not _parse(self.sock.recv(_RECEIVE_BYTES), found) and not single:
                    pass
            except BaseException:
                self.sock.close()  # a half-read dump would answer the next query: start afresh
                self.sock = None
                raise
            return found


_link = _Link()


def tcp_sockets(states: int | Iterable[int], ports: Iterable[int]) -> list[DiagSocket] | None:
    """The TCP sockets (IPv4 and IPv6) in `states` (one or several) whose local port is one of
    `ports`; None when netlink sock_diag is not available here (then read /proc/net/tcp)."""
    wanted = tuple(sorted(set(ports)))
    if not wanted:
        return []
    found: list[DiagSocket] = []
    for family, request in zip(
        (socket.AF_INET, socket.AF_INET6), _requests(state_mask(states), wanted), strict=True
    ):
        try:
            found += _link.dump(request)
        except OSError as error:
            if family == socket.AF_INET6 and error.errno in (errno.ENOENT, errno.EAFNOSUPPORT):
                continue  # no IPv6 in this namespace
            return None
        except struct.error:
            return None
    return found


def lookup(known: DiagSocket) -> DiagSocket | None:
    """`known` (from a dump) as it is now, its queue included: the kernel finds it by its
    addresses, ports and cookie, a hash lookup instead of a walk of every listening socket's
    hash bucket (what a dump costs, whatever the filter). None when that socket is gone (closed,
    or another one took its place: the cookie differs)."""
    body = _REQUEST_ONE.pack(known.family, socket.IPPROTO_TCP, 0, 1 << known.state) + known.sockid
    request = (
        _HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 3, 0) + body
    )
    try:
        found = _link.dump(request, single=True)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ESTALE):
            return None
        raise
    return found[0] if len(found) == 1 and found[0].sockid == known.sockid else None
