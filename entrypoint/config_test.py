"""End-to-end config handling: custom config, Squid's own errors, read-only /etc, runtime dirs."""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
import uuid
from pathlib import Path

import pytest

from tests.entrypoint.harness import search_group
from tests.entrypoint.testing import (
    UNPRIVILEGED_GID,
    UNPRIVILEGED_UID,
    EntrypointRun,
    Launcher,
    Workspace,
    free_port,
    http_get,
    python_for_child,
    running_as_root,
    start_local_http_server,
    wait_for_status,
    with_private_shm,
)
from tools.squid.squid_under_test import squid_under_test


def minimal_config(workspace: Workspace, port: int) -> str:
    return (
        f"http_port 127.0.0.1:{port}\n"
        f"pid_filename {workspace.runtime_dir('run')}/custom.pid\n"
        "http_access allow localhost\nhttp_access deny all\n"
        "cache_log /dev/stderr\naccess_log stdio:/dev/stdout\nlogfile_rotate 0\n"
        "visible_hostname custom-test\nshutdown_lifetime 1 seconds\npinger_enable off\n"
        "netdb_filename none\n"
    )


def assert_proxies(workspace: Workspace) -> int:
    """One GET through the proxy to a fresh local origin returns its body; returns the origin's port."""
    origin = start_local_http_server(f"origin {uuid.uuid4()}")
    try:
        status, body, _ = http_get(
            f"http://127.0.0.1:{origin.port}/", proxy=f"http://127.0.0.1:{workspace.squid_port}"
        )
    finally:
        origin.close()
    assert (status, body) == (200, origin.body)
    return origin.port


def test_custom_config_wins_and_port_mismatch_is_a_warning(
    workspace: Workspace, launch: Launcher
) -> None:
    workspace.write_custom_config(minimal_config(workspace, workspace.squid_port))
    env = workspace.env(
        SQUID_PORT=str(workspace.squid_port + 1 if workspace.squid_port < 65535 else 1024)
    )
    run = launch(env)
    run.wait_ready()
    assert f"Using custom Squid config {workspace.custom_config}" in run.stdout
    assert re.search(
        r"\[WARNING\] SQUID_PORT=\d+ does not match the custom config's http_port", run.stdout
    )
    # The health server follows the config's port, not SQUID_PORT.
    assert wait_for_status(f"http://127.0.0.1:{workspace.health_port}/ready", 200)[0] == 200
    assert_proxies(workspace)
    # Squid reads the snapshot of what was checked: the mounted bytes, unrendered.
    assert (
        workspace.runtime_dir("run") / "squid.conf"
    ).read_bytes() == workspace.custom_config.read_bytes()


def test_invalid_config_exits_1_with_squids_error_line(
    workspace: Workspace, launch: Launcher
) -> None:
    config = minimal_config(workspace, workspace.squid_port) + "http_access allow no_such_acl\n"
    workspace.write_custom_config(config)
    bad_line = config.splitlines().index("http_access allow no_such_acl") + 1
    run = launch()
    assert run.wait_exit(60) == 1
    assert "Squid rejected the config" in run.stderr
    assert re.search(rf"line {bad_line}: http_access allow no_such_acl", run.stderr), run.stderr
    assert "Container ready" not in run.stdout
    assert run.descendants_left() == []


def test_missing_pid_filename_is_explained(workspace: Workspace, launch: Launcher) -> None:
    config = "\n".join(
        line
        for line in minimal_config(workspace, workspace.squid_port).splitlines()
        if not line.startswith("pid_filename")
    )
    workspace.write_custom_config(config)
    run = launch()
    assert run.wait_exit(60) == 1
    assert "sets no pid_filename" in run.stderr


def test_read_only_config_dir_works(workspace: Workspace, launch: Launcher) -> None:
    # The packaged default in a read-only dir, SQUID_PORT forcing a rendered copy: it must go
    # to the run dir, never next to the config (readOnlyRootFilesystem).
    before = sorted(os.listdir(workspace.etc))
    os.chmod(workspace.default_config, 0o444)
    os.chmod(workspace.etc, 0o555)
    try:
        run = launch()
        run.wait_ready()
        assert wait_for_status(f"http://127.0.0.1:{workspace.health_port}/ready", 200)[0] == 200
        assert sorted(os.listdir(workspace.etc)) == before
        assert (workspace.runtime_dir("run") / "squid.conf").exists()
    finally:
        os.chmod(workspace.etc, 0o775)


def test_unwritable_runtime_dir_exits_1_naming_it(workspace: Workspace, launch: Launcher) -> None:
    spool = workspace.runtime_dir("spool")
    workspace.make_dir(spool, 0o555)
    run = launch()
    assert run.wait_exit(60) == 1
    message = run.stderr
    assert f"Runtime directory {spool} is not writable" in message
    assert f"Running as UID {run_uid(run)} GID" in message
    assert "mode dr-xr-xr-x" in message
    assert "emptyDir" in message and "fsGroup" in message and f"chmod g+rwX {spool}" in message
    assert run.descendants_left() == []


def run_uid(run: EntrypointRun) -> int:
    return int(search_group(r"UID: (\d+)", run.stdout))


# Secrets a config may carry: a cache_peer login and auth helper arguments.
PEER_SECRET, HELPER_PASSWORD, HELPER_SECRET = "HUNTER2SECRET", "LDAPPW1x", "AUTHSECRET7"


def secret_config(workspace: Workspace, broken_peer: bool) -> tuple[str, int]:
    """minimal_config plus an auth helper and a cache_peer; returns (text, cache_peer line)."""
    helper = squid_under_test().helpers_dir / "basic_ncsa_auth"
    peer_port = "notaport" if broken_peer else str(free_port())
    text = minimal_config(workspace, workspace.squid_port) + (
        f"auth_param basic program {helper} {workspace.etc}/htpasswd -w {HELPER_PASSWORD}"
        f" --client_secret={HELPER_SECRET}\n"
        "auth_param basic children 1 startup=0 idle=1\n"
        f"cache_peer 127.0.0.1 parent {peer_port} 0 no-query login=admin:{PEER_SECRET}\n"
    )
    line = (
        text.splitlines().index(next(ln for ln in text.splitlines() if ln.startswith("cache_peer")))
        + 1
    )
    return text, line


def assert_no_secret(output: str) -> None:
    for secret in (PEER_SECRET, HELPER_PASSWORD, HELPER_SECRET):
        assert secret not in output, f"{secret} leaked:\n{output}"


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_rejected_config_shows_directive_and_line_but_no_secret(
    workspace: Workspace, launch: Launcher, level: str
) -> None:
    text, peer_line = secret_config(workspace, broken_peer=True)
    workspace.write_custom_config(text)
    run = launch(workspace.env(LOG_LEVEL=level))
    assert run.wait_exit(60) == 1
    assert "Squid rejected the config" in run.stderr
    # Squid's own error line keeps the file, the line number and the directive name.
    assert re.search(
        rf"line {peer_line}: cache_peer 127\.0\.0\.1 parent notaport .*login=<redacted>", run.stderr
    ), run.stderr
    if level == "DEBUG":  # the whole `squid -k parse` output, which echoes every line
        assert re.search(
            r"Processing: auth_param basic program \S+ \S+ -w <redacted> --client_secret=<redacted>",
            run.stdout,
        ), run.stdout
    assert_no_secret(run.output)


def test_debug_start_echoes_config_without_secrets(workspace: Workspace, launch: Launcher) -> None:
    text, _ = secret_config(workspace, broken_peer=False)
    workspace.write_custom_config(text)
    run = launch(workspace.env(LOG_LEVEL="DEBUG"))
    run.wait_ready()
    assert re.search(
        r"Processing: cache_peer 127\.0\.0\.1 parent \d+ 0 no-query login=<redacted>", run.stdout
    ), run.stdout
    run.process.terminate()
    assert run.wait_exit(60) == 0
    assert_no_secret(run.output)


def _break_mount(path: Path, kind: str) -> str:
    """Put a broken mount of `kind` at `path`; returns what the message must call it."""
    if kind == "dangling symlink":
        path.symlink_to(path.parent / "..data" / "squid.conf")
    elif kind == "symlink loop":
        path.symlink_to(path.parent / "loop-b")
        (path.parent / "loop-b").symlink_to(path)
    elif kind == "directory":
        Workspace.make_dir(path, 0o775)
    elif kind == "FIFO":
        os.mkfifo(path, 0o664)
    elif kind == "character device":
        if running_as_root():
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
        else:
            path.symlink_to("/dev/zero")
    return kind


@pytest.mark.parametrize(
    "kind", ["dangling symlink", "symlink loop", "directory", "FIFO", "character device"]
)
def test_broken_config_mount_fails_closed_naming_path_and_kind(
    workspace: Workspace, launch: Launcher, kind: str
) -> None:
    what = _break_mount(workspace.custom_config, kind)
    run = launch()
    # A FIFO or /dev/zero read the ordinary way would hang or never end: 60 s is a contract bound.
    assert run.wait_exit(60) == 1
    assert (
        f"{workspace.custom_config} is a {what}" in run.stderr
        or f"{workspace.custom_config} is {what}" in run.stderr
    ), run.stderr
    assert "packaged default" not in run.stdout
    assert "Traceback" not in run.output
    assert run.descendants_left() == []


def test_kubernetes_configmap_layout_is_used(workspace: Workspace, launch: Launcher) -> None:
    # kubelet: squid.conf -> ..data/squid.conf, ..data -> ..2025_01_01_00_00_00.1/ (a real dir).
    version = workspace.make_dir(workspace.etc / "..2025_01_01_00_00_00.1", 0o775)
    (version / "squid.conf").write_text(minimal_config(workspace, workspace.squid_port))
    os.chmod(version / "squid.conf", 0o644)
    (workspace.etc / "..data").symlink_to(version.name)
    workspace.custom_config.symlink_to("..data/squid.conf")
    run = launch()
    run.wait_ready()
    assert f"Using custom Squid config {workspace.custom_config}" in run.stdout


def test_oversized_config_is_refused(workspace: Workspace, launch: Launcher) -> None:
    with open(workspace.custom_config, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse: 64 MiB of nothing
    os.chmod(workspace.custom_config, 0o664)
    run = launch()
    assert run.wait_exit(60) == 1
    assert f"{workspace.custom_config} is 67108864 bytes, more than the" in run.stderr


def test_bad_http_port_is_a_message_not_a_traceback(workspace: Workspace, launch: Launcher) -> None:
    config = minimal_config(workspace, workspace.squid_port).replace(
        f"127.0.0.1:{workspace.squid_port}", "3128abc"
    )
    workspace.write_custom_config(config)
    run = launch()
    assert run.wait_exit(60) == 1
    assert (
        f"{workspace.custom_config} line 1: cannot read the port of 'http_port 3128abc'"
        in run.stderr
    ), run.stderr
    assert "Traceback" not in run.output and "Unexpected error" not in run.output


def test_pid_filename_in_an_included_file_is_used(workspace: Workspace, launch: Launcher) -> None:
    conf_d = workspace.make_dir(workspace.etc / "conf.d", 0o775)
    lines = minimal_config(workspace, workspace.squid_port).splitlines()
    (conf_d / "10-pid.conf").write_text(
        "".join(f"{line}\n" for line in lines if line.startswith("pid_filename"))
    )
    os.chmod(conf_d / "10-pid.conf", 0o664)
    main = "\n".join(line for line in lines if not line.startswith("pid_filename"))
    workspace.write_custom_config(f"{main}\ninclude {conf_d}/*.conf\n")
    run = launch()
    run.wait_ready()
    assert (workspace.runtime_dir("run") / "custom.pid").exists()


def test_ssl_bump_in_an_included_file_requires_the_ca(
    workspace: Workspace, launch: Launcher
) -> None:
    conf_d = workspace.make_dir(workspace.etc / "conf.d", 0o775)
    (conf_d / "bump.conf").write_text("ssl_bump bump all\n")
    os.chmod(conf_d / "bump.conf", 0o664)
    workspace.write_custom_config(
        minimal_config(workspace, workspace.squid_port) + f"include {conf_d}/*.conf\n"
    )
    run = launch()
    assert run.wait_exit(60) == 1
    # The CA is demanded only because the included file turns SSL-bump on.
    assert (
        f"SSL-bump is configured but the CA certificate {workspace.tls_dir / 'tls.crt'} is missing"
        in run.stderr
    )


def test_relative_pid_filename_says_it_must_be_absolute(
    workspace: Workspace, launch: Launcher
) -> None:
    config = re.sub(
        r"(?m)^pid_filename .*$",
        "pid_filename squid.pid",
        minimal_config(workspace, workspace.squid_port),
    )
    workspace.write_custom_config(config)
    run = launch()
    assert run.wait_exit(60) == 1
    assert "pid_filename squid.pid must be an absolute path" in run.stderr
    assert "Runtime directory . is not writable" not in run.stderr


def test_untraversable_config_dir_is_explained(workspace: Workspace, launch: Launcher) -> None:
    hidden = workspace.make_dir(workspace.root / "hidden")
    (hidden / "squid.conf").write_text(minimal_config(workspace, workspace.squid_port))
    # As root the files are root:0 and the entrypoint runs as another UID: 0700 shuts it out.
    os.chmod(hidden, 0o700 if running_as_root() else 0o000)
    try:
        run = launch(workspace.env(CEPHALOPROXY_CONFIG=str(hidden / "squid.conf")))
        assert run.wait_exit(60) == 1
    finally:
        os.chmod(hidden, 0o770)
    assert f"directory {hidden} cannot be traversed by UID" in run.stderr, run.stderr
    assert "Traceback" not in run.output and "Unexpected error" not in run.output


def test_created_dirs_are_group_writable(workspace: Workspace, launch: Launcher) -> None:
    pid_dir = workspace.runtime_dir("run") / "nested" / "deeper"
    config = re.sub(
        r"(?m)^pid_filename .*$",
        f"pid_filename {pid_dir}/squid.pid",
        minimal_config(workspace, workspace.squid_port),
    )
    workspace.write_custom_config(config)
    run = launch()
    run.wait_ready()
    created = [workspace.runtime_dir(name) for name in ("run", "log", "lib", "spool", "cache")]
    created += [pid_dir.parent, pid_dir]
    assert {str(d): oct(stat.S_IMODE(d.stat().st_mode)) for d in created} == {
        str(d): "0o770" for d in created
    }


def test_stale_write_probe_of_pid_1_does_not_block_a_restart(
    workspace: Workspace, launch: Launcher
) -> None:
    # In a container the entrypoint is always PID 1: a probe named after the pid, left by a
    # crash on a persistent volume, used to make every later start fail. Run it as PID 1.
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    if not running_as_root() or unshare is None or setpriv is None:
        pytest.skip(
            "needs root, unshare and setpriv to run the entrypoint as PID 1 of a pid namespace"
        )
    run_dir = workspace.make_dir(workspace.runtime_dir("run"))
    stale = run_dir / ".cephaloproxy-write-probe-1"
    stale.write_text("left by a crash\n")
    argv = [
        # --propagation unchanged: with_private_shm has already made the mounts private.
        unshare,
        "--pid",
        "--fork",
        "--mount-proc",
        "--propagation",
        "unchanged",
        setpriv,
        f"--reuid={UNPRIVILEGED_UID}",
        f"--regid={UNPRIVILEGED_GID}",
        "--clear-groups",
        "--",
        python_for_child(),
        str(workspace.bin / "entrypoint.py"),
    ]
    run = launch(argv=with_private_shm(argv), user=(0, 0))
    run.wait_ready()
    assert "(UID: 1000660000" in run.stdout
    leftovers = sorted(
        p.name
        for d in workspace.var.iterdir()
        for p in d.iterdir()
        if p.name.startswith(".cephaloproxy-write-probe-")
    )
    assert leftovers == [stale.name]  # ours are removed; the stale one is not ours to judge


def test_unexecutable_auth_helper_is_refused_naming_directive_and_path(
    workspace: Workspace, launch: Launcher
) -> None:
    helper = workspace.etc / "my_auth"
    helper.write_text("#!/bin/sh\n")
    os.chmod(helper, 0o644)
    workspace.write_custom_config(
        minimal_config(workspace, workspace.squid_port) + f"auth_param basic program {helper}\n"
    )
    run = launch()
    assert run.wait_exit(60) == 1
    assert f"auth_param program {helper} is not executable by UID {run_uid(run)}" in run.stderr, (
        run.stderr
    )
    assert f"helpers are in {squid_under_test().helpers_dir}" in run.stderr


@pytest.mark.parametrize("mount_options", ["ro,size=1m", "mode=0755,size=1m"])
def test_unwritable_dev_shm_is_refused_with_the_fix(
    workspace: Workspace, launch: Launcher, mount_options: str
) -> None:
    # The real /dev/shm, replaced in a private mount namespace by a read-only or a root-owned
    # 0755 tmpfs; the entrypoint then runs as the unprivileged UID as usual.
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv")
    inner = [
        setpriv,
        f"--reuid={UNPRIVILEGED_UID}",
        f"--regid={UNPRIVILEGED_GID}",
        "--clear-groups",
        "--",
        python_for_child(),
        str(workspace.bin / "entrypoint.py"),
    ]
    run = launch(argv=with_private_shm(inner, mount_options), user=(0, 0))
    assert run.wait_exit(60) == 1
    assert "/dev/shm is not writable" in run.stderr, run.stderr
    assert "medium: Memory" in run.stderr
    assert "Starting Squid proxy" not in run.stdout
    assert "Ipc::Mem::Segment" not in run.output


def test_upstream_numeric_log_level_2_means_debug(workspace: Workspace, launch: Launcher) -> None:
    run = launch(workspace.env(LOG_LEVEL="2"))
    run.wait_ready()
    assert (
        "[WARNING] LOG_LEVEL='2' is the upstream image's numeric Squid debug level; using DEBUG"
        in run.stdout
    )
    assert "[DEBUG] Phase config_selection took" in run.stdout
    # The process's age at its first log line: more than nothing, less than the run so far.
    phase = re.search(r"\[DEBUG\] Phase interpreter_and_imports took ([\d.]+) s", run.stdout)
    assert phase, run.stdout
    imports = float(phase.group(1))
    assert 0 < imports < time.monotonic() - run.started_at, imports


def _launch_as_root(workspace: Workspace, launch: Launcher):
    """The entrypoint as 0:0 (docker run --user 0:0), with its own /dev/shm."""
    if not running_as_root():
        pytest.skip("needs root to start the entrypoint as 0:0")
    # Like the image (/var is 0755): the user Squid switches to must reach the runtime dirs.
    for directory in (workspace.root, workspace.var):
        os.chmod(directory, 0o755)
    return launch(
        argv=with_private_shm([python_for_child(), str(workspace.bin / "entrypoint.py")]),
        user=(0, 0),
    )


def test_default_config_works_as_root(workspace: Workspace, launch: Launcher) -> None:
    # docker run --user 0:0: Squid switches to its cache_effective_user, which used to loop on
    # "FATAL: Cannot open '/dev/stdout' for writing".
    run = _launch_as_root(workspace, launch)
    run.wait_ready()
    assert "(UID: 0, GID: 0)" in run.stdout
    origin_port = assert_proxies(workspace)
    # Squid's access log line reached our stdout through the handed-over pipe.
    run.wait_for_output(rf"GET http://127\.0\.0\.1:{origin_port}/", timeout=30)
    assert "Cannot open" not in run.output and "FATAL" not in run.output
    run.process.terminate()
    assert run.wait_exit(60) == 0


def test_custom_config_with_root_effective_user_is_refused_at_once(
    workspace: Workspace, launch: Launcher
) -> None:
    workspace.write_custom_config(
        minimal_config(workspace, workspace.squid_port) + "cache_effective_user root\n"
    )
    run = _launch_as_root(workspace, launch)
    assert run.wait_exit(60) == 1
    assert "cache_effective_user root" in run.stderr and "refuses to run as root" in run.stderr, (
        run.stderr
    )
    assert "Starting Squid proxy" not in run.stdout


def test_custom_config_with_unknown_effective_user_is_refused_at_once(
    workspace: Workspace, launch: Launcher
) -> None:
    workspace.write_custom_config(
        minimal_config(workspace, workspace.squid_port) + "cache_effective_user nosuchuser42\n"
    )
    run = _launch_as_root(workspace, launch)
    assert run.wait_exit(60) == 1
    assert "cache_effective_user nosuchuser42" in run.stderr and "no such user" in run.stderr, (
        run.stderr
    )


def test_squids_own_output_is_redacted_by_the_relay(workspace: Workspace, launch: Launcher) -> None:
    # A helper's stderr goes to Squid's cache.log (our stderr) through the output relay, not
    # through our logger: a helper announcing its arguments must not leak them either.
    helper = workspace.etc / "chatty_rewriter"
    helper.write_text(
        f"#!{python_for_child()}\n"
        "import sys\n"
        "print('rewriter started with ' + ' '.join(sys.argv[1:]), file=sys.stderr, flush=True)\n"
        "for line in sys.stdin:\n    print('ERR', flush=True)\n"
    )
    os.chmod(helper, 0o775)
    workspace.write_custom_config(
        minimal_config(workspace, workspace.squid_port)
        + f"url_rewrite_program {helper} --upstream=http://svc:{PEER_SECRET}@up.example/ --api_key={HELPER_SECRET}\n"
        "url_rewrite_children 1 startup=1 idle=1\n"
    )
    run = launch()
    run.wait_ready()
    run.wait_for_output(
        r"rewriter started with --upstream=http://svc:<redacted>@up\.example/ --api_key=<redacted>",
        stream="stderr",
    )
    run.process.terminate()
    assert run.wait_exit(60) == 0
    assert_no_secret(run.output)
