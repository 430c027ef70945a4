"""Case 13: the rendered Kubernetes manifests (deploy/kubernetes) run under `podman kube play`.

Each case renders a kustomization with `kubectl kustomize` (a scratch overlay on top of
the repository's: the image under test, one replica, a unique name suffix), plays it,
and checks the pod as Kubernetes would run it: ready, proxying, read-only root, the
ConfigMap mounted as a directory, UID/GID, and a graceful stop within the grace period.

Where podman differs from the kubelet the scratch overlay says so: podman 4.3 crashes on
secret volumes, and no podman lays a secret out the kubelet way (`..data` symlinks), so
the ssl-bump case mounts a host directory built exactly like a kubelet secret volume.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import skip_unless_required
from tests.support import certs, netutil
from tests.support.runtime import ContainerRuntime

pytestmark = pytest.mark.podman_only

# The real source tree (not Bazel's runfiles symlinks): kustomize refuses files that
# resolve outside a kustomization's root.
REPO = Path(__file__).resolve().parent.parent.parent
KUBERNETES_DIR = REPO / "deploy" / "kubernetes"
KUBE_NETWORK = "podman-default-kube-network"
READY_TIMEOUT_S = 90.0


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl is required to render deploy/kubernetes for `podman kube play`", pytrace=False
        )
    return found


@pytest.fixture(scope="module")
def podman(container_runtime: ContainerRuntime) -> ContainerRuntime:
    if container_runtime.name != "podman":
        skip_unless_required(f"`kube play` needs podman; the suite runs {container_runtime.name}")
    return container_runtime


@pytest.fixture(scope="module")
def kube_gateway(podman: ContainerRuntime) -> str:
    """The host's address on podman's kube network (created as `kube play` would)."""
    if podman.command(["network", "exists", KUBE_NETWORK], check=False).returncode != 0:
        podman.command(["network", "create", KUBE_NETWORK])
    done = podman.command(
        ["network", "inspect", KUBE_NETWORK, "--format", "{{range .Subnets}}{{.Gateway}} {{end}}"]
    )
    return done.stdout.split()[0]


class KubePlay:
    """One rendered kustomization played in podman, always taken down again."""

    def __init__(self, podman: ContainerRuntime, scratch: Path, image: str) -> None:
        self.podman = podman
        self.scratch = scratch
        self.image = image
        self.suffix = "-" + secrets.token_hex(3)
        self.manifest = scratch / "manifest.yaml"
        self.played = False

    def render(self, base: Path, extra: str = "") -> str:
        """A scratch overlay of `base`: the image under test, one replica, a unique suffix, plus `extra`."""
        name, _, tag = (
            self.image.rpartition(":")
            if ":" in self.image.rsplit("/", 1)[-1]
            else (self.image, "", "latest")
        )
        (self.scratch / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f'nameSuffix: "{self.suffix}"\n'
            f"resources:\n  - {os.path.relpath(base, self.scratch)}\n"
            f"images:\n  - name: cephaloproxy\n    newName: {name}\n    newTag: {tag}\n"
            "patches:\n"
            "  - target: {kind: Deployment}\n"
            "    patch: |-\n"
            "      - op: add\n        path: /spec/replicas\n        value: 1\n" + extra
        )
        done = subprocess.run(
            [kubectl(), "kustomize", str(self.scratch)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        self.manifest.write_text(done.stdout)
        return done.stdout

    def play(self) -> str:
        self.podman.command(["kube", "play", str(self.manifest)], timeout=180)
        self.played = True
        return self.container()

    def container(self) -> str:
        done = self.podman.command(
            ["ps", "--all", "--format", "json", "--filter", f"name=cephaloproxy{self.suffix}"]
        )
        names = [c["Names"][0] for c in json.loads(done.stdout or "[]") if not c.get("IsInfra")]
        assert len(names) == 1, f"expected one proxy container, got {names}"
        return names[0]

    def pod_ip(self, container: str) -> str:
        pod = self.podman.inspect(container)["Pod"]
        infra = json.loads(self.podman.command(["pod", "inspect", str(pod)]).stdout)
        infra_id = (infra[0] if isinstance(infra, list) else infra)["InfraContainerID"]
        networks = self.podman.inspect(infra_id)["NetworkSettings"]["Networks"]
        return next(iter(networks.values()))["IPAddress"]

    def wait_ready(self, container: str, address: str) -> None:
        try:
            netutil.wait_for_status(
                address,
                8080,
                "/ready",
                200,
                READY_TIMEOUT_S,
                still_alive=lambda: self.podman.state(container).running,
            )
        except TimeoutError as error:
            logs = self.podman.logs(container)
            raise AssertionError(
                f"{container} never became ready: {error}\n{logs.combined}"
            ) from error

    def python(self, container: str, code: str) -> subprocess.CompletedProcess[str]:
        return self.podman.exec(container, ["/usr/bin/python3", "-c", code])

    def grace_seconds(self) -> int:
        match = re.search(
            r"^\s*terminationGracePeriodSeconds: (\d+)$", self.manifest.read_text(), re.MULTILINE
        )
        assert match, "the rendered Deployment sets no terminationGracePeriodSeconds"
        return int(match.group(1))

    def stop_and_down(self) -> tuple[str, int]:
        """Stop the pod as the kubelet does (SIGTERM, then the grace period), then `kube down`.

        Not `kube down` alone: podman 4.3 removes the pod with SIGKILL at once (nothing
        is logged after "Container ready"), which says nothing about the image.
        """
        container = self.container()
        pod = str(self.podman.inspect(container)["Pod"])
        grace = self.grace_seconds()
        self.podman.command(["pod", "stop", "--time", str(grace), pod], timeout=grace + 60)
        logs = self.podman.logs(container).combined
        exit_code = self.podman.state(container).exit_code
        self.podman.command(["kube", "down", str(self.manifest)], timeout=120)
        self.played = False
        return logs, exit_code

    def cleanup(self) -> None:
        if self.played:
            self.podman.command(["kube", "down", str(self.manifest)], check=False, timeout=120)


@pytest.fixture
def kube(podman: ContainerRuntime, image_ref: str, tmp_path: Path) -> Iterator[KubePlay]:
    scratch = tmp_path / "kustomize"
    scratch.mkdir()
    play = KubePlay(podman, scratch, image_ref)
    try:
        yield play
    finally:
        play.cleanup()


def proxied_get(address: str, server: netutil.LocalServer, path: str) -> netutil.HttpResult:
    return netutil.proxy_get(address, 3128, server.url(path))


def test_the_base_deployment_runs_and_stops_gracefully(kube: KubePlay, kube_gateway: str) -> None:
    manifest = kube.render(KUBERNETES_DIR / "base")
    assert "subPath:" not in manifest
    container = kube.play()
    address = kube.pod_ip(container)
    kube.wait_ready(container, address)
    with netutil.LocalServer(kube_gateway, freebind=True) as server:
        result = proxied_get(address, server, "/kube-play")
        assert (result.status, result.body) == (200, server.expected_body("/kube-play"))

    assert kube.podman.inspect(container)["HostConfig"]["ReadonlyRootfs"] is True
    probe = kube.python(
        container,
        "import os\n"
        "try:\n open('/cephaloproxy-probe', 'w')\nexcept OSError as e:\n print('errno', e.errno)\n"
        "print(os.getuid(), os.getgid())\n"
        "print(sorted(os.listdir('/etc/squid/custom')), os.path.isfile('/etc/squid/squid.conf.default'))\n",
    )
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    assert lines[0] == "errno 30", "the root filesystem must be read-only (EROFS)"
    assert lines[1] == "1000 0"
    assert lines[2] == "['squid.conf'] True", (
        "the ConfigMap is a directory mount beside the packaged default"
    )

    logs, exit_code = kube.stop_and_down()
    assert "Received signal SIGTERM, initiating graceful shutdown" in logs, logs[-3000:]
    assert "Shutdown complete" in logs, logs[-3000:]
    assert exit_code == 0


def test_the_openshift_overlay_runs_as_an_arbitrary_uid_with_gid_0(
    kube: KubePlay, kube_gateway: str
) -> None:
    # What the restricted-v2 SCC injects into the pod; the overlay itself sets no UID.
    manifest = kube.render(
        KUBERNETES_DIR / "overlays" / "openshift",
        "      - op: add\n        path: /spec/template/spec/securityContext/runAsUser\n        value: 1000660000\n",
    )
    assert "runAsGroup" not in manifest and "fsGroup" not in manifest
    container = kube.play()
    address = kube.pod_ip(container)
    kube.wait_ready(container, address)
    assert (
        kube.python(container, "import os; print(os.getuid(), os.getgid())").stdout.strip()
        == "1000660000 0"
    )
    assert (
        "CephaloProxy entrypoint starting (UID: 1000660000, GID: 0)"
        in kube.podman.logs(container).stdout
    )
    with netutil.LocalServer(kube_gateway, freebind=True) as server:
        result = proxied_get(address, server, "/openshift")
        assert (result.status, result.body) == (200, server.expected_body("/openshift"))
    logs, exit_code = kube.stop_and_down()
    assert "Shutdown complete" in logs and exit_code == 0, logs[-3000:]


def kubelet_secret_dir(directory: Path, files: dict[str, Path]) -> Path:
    """A directory laid out as the kubelet mounts a secret: `..<timestamp>/` files, `..data` -> it, key -> `..data/key`."""
    stamp = directory / "..2026_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    for key, source in files.items():
        shutil.copyfile(source, stamp / key)
        (stamp / key).chmod(0o440)  # defaultMode 0440 of the overlay; group 0 reads it
        os.symlink(f"..data/{key}", directory / key)
    os.symlink(stamp.name, directory / "..data")
    for path in (directory, stamp):
        path.chmod(0o755)
    return directory


def test_the_ssl_bump_overlay_uses_a_secret_mounted_the_kubelet_way(
    kube: KubePlay, kube_gateway: str, tmp_path: Path
) -> None:
    bumped, spliced = (
        "bumped.test",
        "www.bank.example",
    )  # the latter is in examples/ssl-bump's no-bump list
    bump_ca = certs.generate_ca(tmp_path / "bump-ca", "CephaloProxy Kube Bump CA")
    upstream_ca = certs.generate_ca(tmp_path / "upstream-ca", "CephaloProxy Kube Upstream CA")
    server_pair = certs.generate_server_cert(upstream_ca, tmp_path / "server", [bumped, spliced])
    secret = kubelet_secret_dir(
        tmp_path / "secret",
        {"tls.crt": bump_ca.cert, "tls.key": bump_ca.key, "upstream-ca.crt": upstream_ca.cert},
    )
    tls = netutil.server_tls_context(str(server_pair.cert), str(server_pair.key))
    with netutil.LocalServer(kube_gateway, tls=tls, freebind=True) as server:
        # The example's config with the test origin's port and CA, as a replaced ConfigMap.
        config = (REPO / "examples" / "ssl-bump" / "squid.conf").read_text()
        (kube.scratch / "squid.conf").write_text(
            config
            + f"acl SSL_ports port {server.port}\ntls_outgoing_options cafile=/etc/squid/ssl_cert/upstream-ca.crt\n"
        )
        kube.render(
            KUBERNETES_DIR / "overlays" / "ssl-bump",
            # podman cannot mount secret volumes (4.3 crashes); a hostPath with the kubelet's layout instead.
            "  - target: {kind: Deployment}\n    patch: |-\n"
            "      - op: replace\n        path: /spec/template/spec/volumes/0\n"
            f"        value: {{name: tls, hostPath: {{path: {secret}, type: Directory}}}}\n"
            "      - op: add\n        path: /spec/template/spec/hostAliases\n"
            f"        value: [{{ip: {kube_gateway}, hostnames: [{bumped}, {spliced}]}}]\n"
            "configMapGenerator:\n  - name: cephaloproxy-config\n    behavior: replace\n    files: [squid.conf]\n",
        )
        rendered = kube.manifest.read_text()
        assert f"path: {secret}" in rendered and "secretName:" not in rendered, (
            "the patch missed the tls volume"
        )
        container = kube.play()
        address = kube.pod_ip(container)
        kube.wait_ready(container, address)
        assert "SSL-bump configured" in kube.podman.logs(container).stdout
        listing = kube.python(
            container, "import os; print(os.readlink('/etc/squid/ssl_cert/..data'))"
        )
        assert listing.stdout.strip().startswith("..2026"), listing

        result = netutil.tls_get_via_connect(
            address,
            3128,
            bumped,
            server.port,
            "/bumped",
            netutil.client_tls_context(str(bump_ca.cert)),
        )
        assert (result.status, result.body) == (200, server.expected_body("/bumped"))
        assert (
            netutil.name_field(result.peer_certificate.get("issuer")) == "CephaloProxy Kube Bump CA"
        )
        passthrough = netutil.tls_get_via_connect(
            address,
            3128,
            spliced,
            server.port,
            "/spliced",
            netutil.client_tls_context(str(upstream_ca.cert)),
        )
        assert (
            netutil.name_field(passthrough.peer_certificate.get("issuer"))
            == "CephaloProxy Kube Upstream CA"
        )
    logs, exit_code = kube.stop_and_down()
    assert "Shutdown complete" in logs and exit_code == 0, logs[-3000:]
