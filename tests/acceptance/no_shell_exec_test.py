"""Case 2: there is no shell to exec into; the runtime says the executable does not exist."""

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
    assert done.returncode in (126, 127), (done.returncode, done.stdout, done.stderr)
    assert NOT_FOUND.search(done.stderr), done.stderr
    assert proxy.is_running(), "a failed exec must not disturb the running proxy"
