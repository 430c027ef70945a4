"""Case 5: a read-only root filesystem with tmpfs runtime dirs and /tmp (readOnlyRootFilesystem)."""

from __future__ import annotations

import pytest

from tests.support import harness, netutil

# docs/building.md ("Platforms"): CI runs these against the arm64 image under qemu too.
pytestmark = pytest.mark.arm64


def test_read_only_root_with_tmpfs_runtime_dirs(
    containers: harness.ContainerFactory, host_server: netutil.LocalServer, host_address: str
) -> None:
    proxy = containers.start("readonly", read_only=True, tmpfs=harness.tmpfs_runtime_dirs())
    proxy.wait_ready()
    assert containers.runtime.inspect(proxy.name)["HostConfig"]["ReadonlyRootfs"] is True
    assert proxy.health("/health").status == 200
    result = proxy.get_via_proxy(host_server.url("/read-only", host=host_address))
    assert (result.status, result.body) == (200, host_server.expected_body("/read-only"))
