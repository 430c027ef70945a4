"""Case 2: there is no shell to exec into; the runtime says the executable does not exist.

The exit code is the runtime's own for "not found": 126 under docker, 127 under podman
(runtime.EXEC_NOT_FOUND_EXIT_CODES), so a shell that exists but fails (e.g. 1 or 2)
cannot pass. The docker CLI prints the OCI error on stdout (docker/cli#2025), podman on
stderr, so both streams are searched.
"""

from __future__ import annotations

import re

import pytest

from tests.support import harness

NOT_FOUND = re.compile(r"executable file not found|no such file or directory", re.IGNORECASE)


@pytest.mark.parametrize("shell", ["/bin/sh", "sh"])
def test_exec_shell_fails_with_not_found(containers: harness.ContainerFactory, shell: str) -> None:
    proxy = containers.start("noshell")
    proxy.wait_ready()
    done = containers.runtime.exec(proxy.name, [shell, "-c", "true"])
    expected = containers.runtime.exec_not_found_exit_code
    assert done.returncode == expected, (
        containers.runtime.name,
        done.returncode,
        done.stdout,
        done.stderr,
    )
    assert NOT_FOUND.search(done.stdout + done.stderr), (done.stdout, done.stderr)
    assert proxy.is_running(), "a failed exec must not disturb the running proxy"
