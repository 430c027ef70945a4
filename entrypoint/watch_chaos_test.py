"""Watch mode under random sequences of file operations (Hypothesis; real entrypoint, real Squid).

One entrypoint runs with CONFIG_RELOAD=watch, an SSL-bump config in a kubelet-style volume and
the TLS pair in a plain directory written file by file (Docker's bind-mounted directory: the
writer is not atomic, so half-rotated pairs happen). Each example applies a random sequence
(config swaps to other ports, a broken config, the config removed, certificate and key written
separately, the key removed) with random pauses around the poll interval, then settles on a
valid state. Asserted: what Squid was given (squid-ca.pem) is never a half pair; the settled
state is served within REACTION_BOUND; PID 1 keeps relaying Squid's output at once; at most
one reload per operation plus one.
"""

from __future__ import annotations

import os
import re
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.entrypoint.harness import proxies_through
from tests.entrypoint.kubelet_volume import KubeletVolume
from tests.entrypoint.testing import (
    EntrypointRun,
    Launcher,
    Workspace,
    free_port,
    http_get,
    make_ca,
    openssl,
    ssl_bump_config,
    start_local_http_server,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    openssl() is None, reason="the openssl CLI is needed to make test CAs"
)

INTERVAL = 0.5
REACTION_BOUND = 60.0  # settled state -> served, on a loaded machine (two polls plus a reload)
RELAY_BOUND = 5.0  # a line Squid writes -> relayed by PID 1


class Rig:
    """The running entrypoint and the files it watches."""

    def __init__(
        self,
        workspace: Workspace,
        volume: KubeletVolume,
        cas: list[tuple[Path, Path]],
        ports: list[int],
    ) -> None:
        self.workspace, self.volume, self.cas, self.ports = workspace, volume, cas, ports
        self.template = ssl_bump_config(workspace)
        # None until the entrypoint runs: it starts on the files this rig writes first.
        self.started: EntrypointRun | None = None

    @property
    def run(self) -> EntrypointRun:
        assert self.started is not None, "the rig's entrypoint has not started yet"
        return self.started

    def config(self, port: int, broken: bool = False) -> bytes:
        text = self.template.replace(f"127.0.0.1:{self.workspace.squid_port}", f"127.0.0.1:{port}")
        return (text + ("http_access allow no_such_acl\n" if broken else "")).encode()

    def write_tls(self, name: str, data: bytes) -> None:
        """One file replaced (write beside, rename): each file complete, the pair maybe not."""
        temporary = self.workspace.tls_dir / f".{name}.new"
        temporary.write_bytes(data)
        os.chmod(temporary, 0o664)
        temporary.replace(self.workspace.tls_dir / name)


@pytest.fixture
def rig(workspace: Workspace, launch: Launcher, tmp_path: Path) -> Iterator[Rig]:
    cas = [make_ca(tmp_path, f"Chaos CA {index}") for index in range(3)]
    ports = [workspace.squid_port, free_port(), free_port()]
    volume = KubeletVolume(workspace.etc / "custom")
    workspace.make_dir(workspace.tls_dir, 0o775)
    run = None
    rig_ = Rig(workspace, volume, cas, ports)
    volume.publish({"squid.conf": rig_.config(ports[0])})
    rig_.write_tls("tls.crt", cas[0][0].read_bytes())
    rig_.write_tls("tls.key", cas[0][1].read_bytes())
    run = launch(
        workspace.env(
            CONFIG_RELOAD="watch",
            CONFIG_WATCH_INTERVAL=str(INTERVAL),
            CEPHALOPROXY_CONFIG=str(volume.path("squid.conf")),
        )
    )
    run.wait_ready()
    rig_.started = run
    yield rig_
    run.process.terminate()
    assert run.wait_exit(60) == 0, "PID 1 did not stop within 60 s after the chaos"


OPERATIONS = st.one_of(
    st.tuples(st.just("config"), st.integers(0, 2)),
    st.tuples(st.just("broken_config"), st.integers(0, 2)),
    st.tuples(st.just("remove_config"), st.just(0)),
    st.tuples(st.just("cert"), st.integers(0, 2)),
    st.tuples(st.just("key"), st.integers(0, 2)),
    st.tuples(st.just("remove_key"), st.just(0)),
)
PAUSES = st.sampled_from([0.0, 0.05, INTERVAL / 2, INTERVAL, 1.5 * INTERVAL, 3 * INTERVAL])


def apply(rig: Rig, operation: tuple[str, int]) -> None:
    what, index = operation
    if what == "config":
        rig.volume.publish({"squid.conf": rig.config(rig.ports[index])})
    elif what == "broken_config":
        rig.volume.publish({"squid.conf": rig.config(rig.ports[index], broken=True)})
    elif what == "remove_config":
        rig.volume.publish({})  # the key removed from the ConfigMap: the file disappears
    elif what == "cert":
        rig.write_tls("tls.crt", rig.cas[index][0].read_bytes())
    elif what == "key":
        rig.write_tls("tls.key", rig.cas[index][1].read_bytes())
    elif what == "remove_key":
        (rig.workspace.tls_dir / "tls.key").unlink(missing_ok=True)


def given_to_squid(rig: Rig) -> bytes:
    """The certificate in squid-ca.pem, after checking that its key matches it (never a half pair)."""
    merged = rig.workspace.runtime_dir("lib") / "squid-ca.pem"
    data = merged.read_bytes()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(merged))  # ssl.SSLError "KEY_VALUES_MISMATCH" for a half pair
    match = re.search(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", data, re.DOTALL
    )
    assert match is not None
    return match.group(0)


# No shrinking: each failing example re-runs real processes up to REACTION_BOUND; the report
# names the example as generated.
@settings(
    max_examples=8,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(st.tuples(OPERATIONS, PAUSES), min_size=1, max_size=6),
    final_port=st.integers(0, 2),
    final_ca=st.integers(0, 2),
)
def test_random_file_operations_never_apply_a_half_state_and_the_settled_state_is_served(
    rig: Rig,
    steps: list[tuple[tuple[str, int], float]],
    final_port: int,
    final_ca: int,
) -> None:
    known = {cert.read_bytes().strip() for cert, _ in rig.cas}
    reloads_before = rig.run.stdout.count("changed; reloading the config")
    for operation, pause in steps:
        apply(rig, operation)
        time.sleep(pause)
        assert given_to_squid(rig).strip() in known
    # Settle on a valid state: config on the final port, the final CA's complete pair.
    apply(rig, ("config", final_port))
    apply(rig, ("cert", final_ca))
    apply(rig, ("key", final_ca))
    settled = time.monotonic()
    port = rig.ports[final_port]
    expected_cert = rig.cas[final_ca][0].read_bytes().strip()
    assert wait_until(
        lambda: given_to_squid(rig).strip() == expected_cert and proxies_through(port),
        REACTION_BOUND,
    ), (
        f"the settled state (port {port}, CA {final_ca}) was not applied within {REACTION_BOUND} s after {steps}"
        f"\n{rig.run.output[-4000:]}"
    )
    assert time.monotonic() - settled < REACTION_BOUND
    # PID 1 is responsive: Squid's access log line for a request is relayed at once.
    marker = f"/relay-{time.monotonic_ns()}"
    origin = start_local_http_server("relay")
    try:
        http_get(
            f"http://127.0.0.1:{origin.port}{marker}", timeout=10, proxy=f"http://127.0.0.1:{port}"
        )
    finally:
        origin.close()
    rig.run.wait_for_output(re.escape(marker), RELAY_BOUND)
    reloads = rig.run.stdout.count("changed; reloading the config") - reloads_before
    assert reloads <= len(steps) + 3, (
        f"{reloads} reloads for {len(steps)} operations and the settling"
    )
