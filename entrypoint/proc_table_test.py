"""proc_table against real processes and real sockets of this test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from entrypoint import proc_table


def test_own_listening_and_established_sockets_are_found() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    try:
        me = [os.getpid()]
        listening = proc_table.owned_sockets(me, [port], proc_table.TCP_LISTEN)
        assert [(s.local_address, s.local_port) for s in listening] == [("127.0.0.1", port)]
        established = proc_table.owned_sockets(me, [port], proc_table.TCP_ESTABLISHED)
        # Only the accepted side has the server port as its local port.
        assert len(established) == 1
        assert established[0].remote_port == client.getsockname()[1]
        # Another process owns none of them.
        assert proc_table.owned_sockets([1], [port], proc_table.TCP_LISTEN) == []
    finally:
        for sock in (accepted, client, server):
            sock.close()
    assert proc_table.owned_sockets([os.getpid()], [port], proc_table.TCP_LISTEN) == []


def test_ipv6_addresses_decode() -> None:
    try:
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        import pytest

        pytest.skip("no IPv6 loopback in this namespace")
    with server:
        port = server.getsockname()[1]
        found = proc_table.owned_sockets([os.getpid()], [port], proc_table.TCP_LISTEN)
        assert [s.local_address for s in found] == ["::1"]


def test_process_tree_and_states_follow_real_children() -> None:
    # A child that starts a grandchild, both sleeping.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess,sys,time; subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']); time.sleep(60)",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(proc_table.process_tree(child.pid)) < 2:
            time.sleep(0.05)
        tree = proc_table.process_tree(child.pid)
        assert tree[0].pid == child.pid and tree[0].ppid == os.getpid()
        assert len(tree) == 2 and tree[1].ppid == child.pid
        assert all(p.runnable for p in tree)
        os.kill(tree[1].pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc_table.read_process(tree[1].pid).state != "T":
            time.sleep(0.02)
        assert not proc_table.read_process(tree[1].pid).runnable
        os.kill(tree[1].pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert proc_table.process_tree(child.pid) == []
    assert proc_table.read_process(child.pid) is None


def test_comm_with_spaces_and_parentheses_is_read_whole() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import ctypes,time; ctypes.CDLL(None).prctl(15, b'a (b) c', 0, 0, 0); time.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc_table.read_process(child.pid).comm != "a (b) c":
            time.sleep(0.02)
        info = proc_table.read_process(child.pid)
        assert info.comm == "a (b) c" and info.ppid == os.getpid()
    finally:
        child.kill()
        child.wait()


def test_fd_links_of_a_process_we_may_not_trace_count_as_unreadable() -> None:
    # Our own fds are readable; a process that is gone counts as readable (nothing to refuse).
    assert proc_table.fds_readable(os.getpid())
    assert proc_table.fds_readable(2**22 + 1)
    if os.geteuid() != 0:
        import pytest

        pytest.skip("needs root to run the two processes as two other UIDs")
    # The real refusal: a process of one UID looking at another UID's process (the same
    # ptrace check that stops a container's root without CAP_SYS_PTRACE).
    # An interpreter those UIDs may run (a pyenv one under /root is not).
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    target = subprocess.Popen(
        [python, "-c", "import time; time.sleep(30)"], user=65534, group=65534
    )
    try:
        probe = subprocess.run(
            [
                python,
                "-c",
                f"from entrypoint import proc_table; print(proc_table.fds_readable({target.pid}))",
            ],
            user=65533,
            group=65533,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=os.path.dirname(os.path.dirname(proc_table.__file__)),
        )
        assert probe.stdout.strip() == "False", probe.stderr
    finally:
        target.kill()
        target.wait()
