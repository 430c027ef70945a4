"""Case 8: bad input exits 1 quickly with a clear message in the logs."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support import certs, harness, logs
from tests.support.runtime import ContainerLogs, Mount

EXIT_WITHIN_S = 60.0  # a correctness bound, not a speed goal: startup checks fail in seconds


def _exits_with_error(proxy: harness.ProxyContainer) -> ContainerLogs:
    state = proxy.wait_for_exit(EXIT_WITHIN_S)
    output = proxy.logs()
    assert state.exit_code == 1, f"exit code {state.exit_code}, logs:\n{output.combined}"
    return output


def test_invalid_squid_conf_shows_the_line(
    containers: harness.ContainerFactory, default_squid_conf: str, tmp_path: Path
) -> None:
    text = default_squid_conf.rstrip("\n") + "\n"
    bad_line_number = len(text.splitlines()) + 1
    config = harness.write_readable(
        tmp_path / "conf" / "squid.conf", text + "acl broken no_such_acl_type value\n"
    )
    proxy = containers.start("badconf", mounts=[Mount(config, harness.CONFIG_PATH)])
    output = _exits_with_error(proxy)
    assert "no_such_acl_type" in output.combined, output.combined
    assert f"line {bad_line_number}" in output.combined, output.combined
    assert "Container ready" not in output.combined


def test_ssl_bump_without_tls_key(
    containers: harness.ContainerFactory,
    default_squid_conf: str,
    test_ca: certs.KeyPair,
    tmp_path: Path,
) -> None:
    secret = certs.write_tls_secret(tmp_path / "secret", test_ca.cert, None)
    config = harness.write_readable(
        tmp_path / "conf" / "squid.conf", harness.ssl_bump_config(default_squid_conf)
    )
    proxy = containers.start(
        "nokey", mounts=[Mount(config, harness.CONFIG_PATH), Mount(secret, harness.TLS_SECRET_PATH)]
    )
    output = _exits_with_error(proxy)
    errors = "\n".join(logs.messages_at(output.combined, ["ERROR"]))
    assert f"{harness.TLS_SECRET_PATH}/tls.key" in errors and "missing" in errors, output.combined


def test_mismatched_certificate_and_key(
    containers: harness.ContainerFactory,
    default_squid_conf: str,
    test_ca: certs.KeyPair,
    tmp_path: Path,
) -> None:
    other_ca = certs.generate_ca(tmp_path / "other-ca", "Another Test CA")
    secret = certs.write_tls_secret(tmp_path / "secret", test_ca.cert, other_ca.key)
    config = harness.write_readable(
        tmp_path / "conf" / "squid.conf", harness.ssl_bump_config(default_squid_conf)
    )
    proxy = containers.start(
        "mismatch",
        mounts=[Mount(config, harness.CONFIG_PATH), Mount(secret, harness.TLS_SECRET_PATH)],
    )
    output = _exits_with_error(proxy)
    errors = "\n".join(logs.messages_at(output.combined, ["ERROR"]))
    assert f"{harness.TLS_SECRET_PATH}/tls.key" in errors and "match" in errors, output.combined
    # The key must never be echoed.
    key_body = other_ca.key.read_text().splitlines()[1]
    assert key_body not in output.combined


def test_unwritable_runtime_dir(containers: harness.ContainerFactory, tmp_path: Path) -> None:
    # A root-owned 0755 volume: the classic hostPath/volume without fsGroup mistake.
    unwritable = tmp_path / "log-volume"
    unwritable.mkdir()
    if os.geteuid() == 0:
        os.chown(unwritable, 0, 0)
    unwritable.chmod(0o755)
    proxy = containers.start(
        "unwritable", mounts=[Mount(unwritable, "/var/log/squid", read_only=False)]
    )
    output = _exits_with_error(proxy)
    errors = "\n".join(logs.messages_at(output.combined, ["ERROR"]))
    assert "/var/log/squid" in errors, output.combined
