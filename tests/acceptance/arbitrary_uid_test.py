"""Case 4: OpenShift-style arbitrary UIDs with GID 0 start and log their UID."""

from __future__ import annotations

import pytest

from tests.support import harness


@pytest.mark.parametrize("uid", [1234567, 99999, 1000660000])
def test_arbitrary_uid_with_gid_0_is_healthy(
    containers: harness.ContainerFactory, uid: int
) -> None:
    proxy = containers.start(f"uid-{uid}", user=f"{uid}:0")
    proxy.wait_ready()
    assert proxy.health("/health").status == 200
    assert f"CephaloProxy entrypoint starting (UID: {uid}, GID: 0)" in proxy.logs().stdout
