"""Case 14: a ConfigMap update reaches the running pod without a signal or a restart (watch mode, issue 24).

`podman kube play` (4.3) copies a ConfigMap into a volume once and has no way to update
it in place (`kube play --replace` recreates the pod, which is a restart). So the update is
made as the kubelet makes it, on the volume podman mounted: the new content in a new
`..<timestamp>/` directory, `..data` renamed onto it, `squid.conf` a symlink through
`..data` (the kubelet's AtomicWriter; the first update turns podman's plain file into
that link, also by one rename).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.acceptance.kube_play_test import KUBERNETES_DIR, KubePlay, kube, kube_gateway, podman  # noqa: F401 - fixtures
from tests.support import netutil

# `podman kube play` only: the docker run of the suite leaves it out (like kube_play_test).
pytestmark = pytest.mark.podman_only

CONFIG_DIR = "/etc/squid/custom"
WATCH_INTERVAL_S = 1
REACTION_TIMEOUT_S = 60.0  # a contract bound on a loaded machine: update -> new port serving


def kubelet_update(directory: Path, files: dict[str, bytes], generation: int) -> None:
    """The kubelet's AtomicWriter on `directory`: each reader sees the old or the new content, never a mix."""
    version = directory / f"..2026_12_07_00_00_{generation:02d}.000000001"
    version.mkdir()
    for name, data in files.items():
        (version / name).write_bytes(data)
        (version / name).chmod(0o644)
    version.chmod(0o755)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    os.symlink(version.name, directory / "..data_tmp")
    os.rename(directory / "..data_tmp", directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            os.symlink(f"..data/{name}", directory / f"..{name}_tmp")
            os.rename(directory / f"..{name}_tmp", directory / name)
    if old is not None:
        for entry in (directory / old).iterdir():
            entry.unlink()
        (directory / old).rmdir()


def config_volume_source(play: KubePlay, container: str) -> Path:
    mounts = play.podman.inspect(container)["Mounts"]
    sources = [m["Source"] for m in mounts if m.get("Destination") == CONFIG_DIR]
    assert len(sources) == 1, f"no single mount at {CONFIG_DIR}: {mounts}"
    return Path(sources[0])


def proxies(address: str, port: int, server: netutil.LocalServer, path: str) -> bool:
    try:
        result = netutil.proxy_get(address, port, server.url(path))
    except OSError:
        return False
    return (result.status, result.body) == (200, server.expected_body(path))


def test_a_configmap_update_reaches_the_running_pod_without_a_restart(
    kube: KubePlay,  # noqa: F811 - the pytest fixture imported above, by name
    kube_gateway: str,  # noqa: F811 - the pytest fixture imported above, by name
) -> None:
    kube.render(
        KUBERNETES_DIR / "base",
        "      - op: add\n        path: /spec/template/spec/containers/0/env/-\n"
        f'        value: {{name: CONFIG_WATCH_INTERVAL, value: "{WATCH_INTERVAL_S}"}}\n',
    )
    container = kube.play()
    address = kube.pod_ip(container)
    kube.wait_ready(container, address)
    started = kube.podman.inspect(container)["State"]["StartedAt"]
    source = config_volume_source(kube, container)
    config = (source / "squid.conf").read_text()
    assert "http_port 3128" in config
    with netutil.LocalServer(kube_gateway, freebind=True) as server:
        assert proxies(address, 3128, server, "/before")
        updated_at = time.monotonic()
        kubelet_update(
            source, {"squid.conf": config.replace("http_port 3128", "http_port 3129").encode()}, 1
        )
        deadline = updated_at + REACTION_TIMEOUT_S
        while not proxies(address, 3129, server, "/after"):
            assert time.monotonic() < deadline, (
                f"3129 not served {REACTION_TIMEOUT_S} s after the update:\n{kube.podman.logs(container).combined[-4000:]}"
            )
            time.sleep(0.5)
        print(
            f"ConfigMap update -> new port serving: {time.monotonic() - updated_at:.1f} s (CONFIG_WATCH_INTERVAL={WATCH_INTERVAL_S})"
        )
        assert not proxies(address, 3128, server, "/old-port")
    logs = kube.podman.logs(container).stdout
    assert f"Watch: {CONFIG_DIR}/squid.conf changed; reloading the config" in logs, logs[-3000:]
    assert "Squid reconfigured (PID" in logs
    assert kube.podman.inspect(container)["State"]["StartedAt"] == started, (
        "the container was restarted"
    )
    netutil.wait_for_status(address, 8080, "/ready", 200, 30)  # readiness followed the new port
    logs, exit_code = kube.stop_and_down()
    assert "Shutdown complete" in logs and exit_code == 0, logs[-3000:]
