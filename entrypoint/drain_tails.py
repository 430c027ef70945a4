"""Closed client connections whose last bytes the kernel still sends: what a drain waits for too.

Squid closes a client's fd as soon as it has written the last bytes of the response into the
socket's send buffer. The socket is then an orphan (FIN_WAIT1, CLOSING or LAST_ACK, inode 0),
no longer Squid's, still holding up to tcp_wmem's maximum (4 MB by default) for a slow client.
A container's network namespace goes once PID 1 exits: the tail would be cut. After SIGTERM
nothing else serves the proxy ports, so every socket on them in those states with bytes not yet
acknowledged is such a tail (FIN_WAIT2 is not: the peer has acknowledged everything, our FIN
included).

Cost: asking the kernel for sockets in these states walks its whole connection hash (every
namespace's: 5-15 ms at 20k rows), so a walk is made only when no tail is known; known ones are
asked for one by one (a hash lookup each, sock_diag.lookup) until each is done, and one last walk
confirms none is left; past MAX_LOOKUPS known tails a walk replaces the lookups, and a count that
took long rests nine times its duration (a client leaving thousands of responses unread cannot
make PID 1 spend more than about a tenth of a core until SHUTDOWN_TIMEOUT). Without netlink, /proc/net/tcp{,6} is read at every count instead.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable

from entrypoint import proc_table, sock_diag

# More known tails than this: one walk costs less than a lookup each (~10 us per lookup; a walk
# 5-30 ms whatever the number of tails).
MAX_LOOKUPS = 64
TAIL_STATES = frozenset({proc_table.TCP_FIN_WAIT1, proc_table.TCP_CLOSING, proc_table.TCP_LAST_ACK})


def _sending(state: int, send_queue: int) -> bool:
    return state in TAIL_STATES and send_queue > 0


class SendingTails:
    """Closed connections on `ports` still sending, counted poll after poll during one drain."""

    def __init__(self, ports: Iterable[int]) -> None:
        self.ports = frozenset(ports)
        self._known: list[sock_diag.DiagSocket] = []  # tails found, not yet seen done
        self.walks = 0  # kernel walks (dumps) made: what the cost note above promises
        self._last = 0
        self._rest_until = 0.0  # monotonic time before which count() answers _last

    def count(self) -> int:
        """How many tails are still sending now (or at the last count, while a slow one rests)."""
        now = time.monotonic()
        if now < self._rest_until:
            return self._last
        self._last = self._count()
        # A count that took long (thousands of tails, or /proc without netlink) is repeated only
        # after nine times its duration: at most a tenth of a core, the deadline still checked.
        self._rest_until = now + (time.monotonic() - now) * 9
        return self._last

    def _count(self) -> int:
        if 0 < len(self._known) <= MAX_LOOKUPS:
            self._known = self._still_sending(self._known)
            if self._known:
                return len(self._known)
        return self._walk()  # none known (first look), too many, or every known one done

    def forget(self) -> None:
        """Look afresh at the next count (connections may have closed meanwhile)."""
        self._known = []
        self._rest_until = 0.0

    def _walk(self) -> int:
        if not self.ports:
            return 0
        self.walks += 1
        found = sock_diag.tcp_sockets(TAIL_STATES, self.ports)
        if found is None:  # no netlink here: the whole table, each time
            return sum(
                _sending(sock.state, sock.send_queue)
                for sock in proc_table.tcp_sockets()
                if sock.local_port in self.ports
            )
        self._known = [sock for sock in found if _sending(sock.state, sock.send_queue)]
        return len(self._known)

    @staticmethod
    def _still_sending(known: list[sock_diag.DiagSocket]) -> list[sock_diag.DiagSocket]:
        again: list[sock_diag.DiagSocket] = []
        for tail in known:
            try:
                now = sock_diag.lookup(tail)  # None: gone (reset, or closed for good)
            except (OSError, struct.error):
                return []  # cannot tell: the next count walks
            if now is not None and _sending(now.state, now.send_queue):
                again.append(now)
        return again
