"""Case 10: Squid killed inside the container makes the container exit 1 and say so."""

from __future__ import annotations

from tests.support import harness, logs


def test_squid_killed_exits_1(containers: harness.ContainerFactory) -> None:
    proxy = containers.start("crash")
    proxy.wait_ready()
    pid = logs.squid_pid(proxy.logs().stdout)
    assert pid is not None, "no 'Squid started with PID' line"

    killer = containers.runtime.exec(
        proxy.name, ["python3", "-c", f"import os, signal; os.kill({pid}, signal.SIGKILL)"]
    )
    assert killer.returncode == 0, killer.stderr

    state = proxy.wait_for_exit(30)
    output = proxy.logs()
    assert state.exit_code == 1, output.combined
    died = [
        m
        for m in logs.messages_at(output.combined, ["ERROR"])
        if m.startswith("Squid process died unexpectedly")
    ]
    assert died, output.combined
