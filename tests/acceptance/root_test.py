"""Case 14: `--user 0:0` (also with a read-only root): Squid switches to its own user and still logs to stdio."""

from __future__ import annotations

import pytest

from tests.support import harness, logs, netutil


@pytest.mark.parametrize("read_only", [False, True], ids=["writable-root", "read-only-root"])
def test_runs_as_root(
    containers: harness.ContainerFactory,
    host_server: netutil.LocalServer,
    host_address: str,
    read_only: bool,
) -> None:
    tmpfs = harness.tmpfs_runtime_dirs() if read_only else ()
    proxy = containers.start(
        f"root-{'ro' if read_only else 'rw'}", user="0:0", read_only=read_only, tmpfs=tmpfs
    )
    proxy.wait_ready()
    proxy.wait_for_log("Container ready, entering monitoring loop")
    output = proxy.logs()
    logs.assert_in_order(
        output.stdout,
        [
            "CephaloProxy entrypoint starting (UID: 0, GID: 0)",
            "Running as root: Squid switches to user squid",
            "Container ready, entering monitoring loop",
        ],
    )
    assert "Cannot open '/dev/stdout'" not in output.combined
    path = f"/as-root-{'ro' if read_only else 'rw'}"
    result = proxy.get_via_proxy(host_server.url(path, host=host_address))
    assert (result.status, result.body) == (200, host_server.expected_body(path))
    # Squid's access log (stdout) saw the request: its stdio works for the user it switched to.
    assert path in proxy.logs().stdout
    elapsed = proxy.stop(30)
    assert proxy.state().exit_code == 0, f"exit {proxy.state().exit_code} after {elapsed:.1f} s"
