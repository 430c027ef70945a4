"""Watch mode end to end (real entrypoint, real Squid): a kubelet-style `..data` swap, edits,
replaced and appearing files reach Squid with no signal; broken and restart-only changes are
refused once; a burst of swaps is one reload; CONFIG_RELOAD=signal waits for SIGHUP; a
single-file bind mount is told once at startup."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.entrypoint.harness import proxies_through
from tests.entrypoint.kubelet_volume import KubeletVolume
from tests.entrypoint.testing import (
    EntrypointRun,
    Launcher,
    Workspace,
    free_port,
    install_ca,
    make_ca,
    running_as_root,
    squid_path_directives,
    ssl_bump_config,
    wait_for_status,
    wait_until,
)

INTERVAL = 0.5  # CONFIG_WATCH_INTERVAL of these tests: a reaction is two polls plus the reload
REACTION_BOUND = 45.0  # contract bound on a loaded machine: swap -> new config serving
RELOAD_LINE = r"Watch: .* changed; reloading the config"


def port_config(workspace: Workspace, port: int, extra: str = "") -> bytes:
    return (
        f"http_port 127.0.0.1:{port}\n"
        f"pid_filename {workspace.runtime_dir('run')}/squid.pid\n"
        "http_access allow localhost\nhttp_access deny all\n"
        "cache_log /dev/stderr\naccess_log stdio:/dev/stdout\nlogfile_rotate 0\n"
        "visible_hostname watch-test\nshutdown_lifetime 1 seconds\npinger_enable off\n"
        f"netdb_filename none\n{extra}{squid_path_directives()}"
    ).encode()


def watching(workspace: Workspace, config: Path, **extra: str) -> dict[str, str]:
    return workspace.env(
        **{
            "CONFIG_RELOAD": "watch",
            "CONFIG_WATCH_INTERVAL": str(INTERVAL),
            "CEPHALOPROXY_CONFIG": str(config),
            **extra,
        }
    )


def started_on_volume(
    workspace: Workspace, launch: Launcher, **env: str
) -> tuple[KubeletVolume, EntrypointRun]:
    volume = KubeletVolume(workspace.etc / "custom")
    volume.publish({"squid.conf": port_config(workspace, workspace.squid_port)})
    run = launch(watching(workspace, volume.path("squid.conf"), **env))
    run.wait_ready()
    assert proxies_through(workspace.squid_port)
    return volume, run


def reloads(run: EntrypointRun) -> int:
    return run.stdout.count("changed; reloading the config")


def test_a_kubelet_data_swap_moves_squid_to_the_new_port_without_a_signal(
    workspace: Workspace, launch: Launcher
) -> None:
    volume, run = started_on_volume(workspace, launch)
    assert "CONFIG_RELOAD=watch: reloading when" in run.stdout
    new_port = free_port()
    swapped = time.monotonic()
    volume.publish({"squid.conf": port_config(workspace, new_port)})
    assert wait_until(lambda: proxies_through(new_port), REACTION_BOUND), run.output[-3000:]
    print(f"swap -> new port serving: {time.monotonic() - swapped:.2f} s (interval {INTERVAL} s)")
    run.wait_for_output(r"Watch: \S+squid\.conf changed; reloading the config\.\.\.")
    assert wait_for_status(f"http://127.0.0.1:{workspace.health_port}/ready", 200, 30)[0] == 200
    assert not proxies_through(workspace.squid_port)
    time.sleep(6 * INTERVAL)  # settled: nothing more to reload
    assert reloads(run) == 1, run.stdout
    run.process.terminate()
    assert run.wait_exit(60) == 0


def test_an_include_glob_sees_files_appear_disappear_be_edited_and_replaced(
    workspace: Workspace, launch: Launcher
) -> None:
    ports = workspace.make_dir(workspace.etc / "ports", 0o775)
    first, second, third = workspace.squid_port, free_port(), free_port()
    (ports / "a.conf").write_text(f"http_port 127.0.0.1:{first}\n")
    base = (
        port_config(workspace, first)
        .decode()
        .replace(f"http_port 127.0.0.1:{first}\n", f"include {ports}/*.conf\n")
    )
    workspace.custom_config.write_text(base)
    workspace.share_tree(workspace.etc)
    run = launch(watching(workspace, workspace.custom_config))
    run.wait_ready()

    def serves_exactly(*expected: int) -> bool:
        return all(proxies_through(port) for port in expected) and not any(
            proxies_through(port) for port in {first, second, third} - set(expected)
        )

    (ports / "b.conf").write_text(f"http_port 127.0.0.1:{second}\n")  # appears
    os.chmod(ports / "b.conf", 0o664)
    assert wait_until(lambda: serves_exactly(first, second), REACTION_BOUND), run.output[-3000:]
    (ports / "a.conf").unlink()  # disappears
    assert wait_until(lambda: serves_exactly(second), REACTION_BOUND), run.output[-3000:]
    with open(ports / "b.conf", "r+") as handle:  # edited in place: same inode
        handle.write(f"http_port 127.0.0.1:{third}\n")
    assert wait_until(lambda: serves_exactly(third), REACTION_BOUND), run.output[-3000:]
    replacement = ports / ".b.conf.new"
    replacement.write_text(f"http_port 127.0.0.1:{first}\n")
    os.chmod(replacement, 0o664)
    replacement.replace(ports / "b.conf")  # replaced: a new inode, as editors do
    assert wait_until(lambda: serves_exactly(first), REACTION_BOUND), run.output[-3000:]
    run.process.terminate()
    assert run.wait_exit(60) == 0


def test_a_broken_config_arriving_by_watch_is_skipped_once_and_the_old_one_keeps_serving(
    workspace: Workspace, launch: Launcher
) -> None:
    volume, run = started_on_volume(workspace, launch)
    volume.publish(
        {
            "squid.conf": port_config(
                workspace, workspace.squid_port, "http_access allow no_such_acl\n"
            )
        }
    )
    run.wait_for_output(
        r"(?s)Reload skipped, Squid keeps its current config: .*no_such_acl",
        REACTION_BOUND,
        stream="stderr",
    )
    time.sleep(8 * INTERVAL)  # the same broken state is not retried poll after poll
    assert run.stderr.count("Reload skipped") == 1, run.stderr[-3000:]
    assert "Squid reconfigured" not in run.stdout
    assert proxies_through(workspace.squid_port)
    assert wait_for_status(f"http://127.0.0.1:{workspace.health_port}/ready", 200, 30)[0] == 200
    new_port = free_port()  # and the next good state goes through
    volume.publish({"squid.conf": port_config(workspace, new_port)})
    assert wait_until(lambda: proxies_through(new_port), REACTION_BOUND), run.output[-3000:]


def test_a_change_that_needs_a_restart_is_logged_once_and_ready_stays_true(
    workspace: Workspace, launch: Launcher
) -> None:
    volume, run = started_on_volume(workspace, launch)
    other_pid = f"pid_filename {workspace.runtime_dir('run')}/other.pid\n"
    volume.publish({"squid.conf": port_config(workspace, workspace.squid_port, other_pid)})
    run.wait_for_output(
        r"pid_filename changed from .* this needs a restart", REACTION_BOUND, stream="stderr"
    )
    time.sleep(8 * INTERVAL)
    assert run.stderr.count("needs a restart") == 1, run.stderr[-3000:]
    # The old config keeps serving, so the pod stays ready (README: "What a reload cannot change").
    assert wait_for_status(f"http://127.0.0.1:{workspace.health_port}/ready", 200, 30)[0] == 200
    assert proxies_through(workspace.squid_port)


def test_a_rapid_series_of_swaps_is_one_reload_of_the_last_state(
    workspace: Workspace, launch: Launcher
) -> None:
    volume, run = started_on_volume(workspace, launch, CONFIG_WATCH_INTERVAL="1.5")
    ports = [free_port() for _ in range(6)]
    for port in ports:  # far faster than the interval: only the last state settles
        volume.publish({"squid.conf": port_config(workspace, port)})
        time.sleep(0.05)
    assert wait_until(lambda: proxies_through(ports[-1]), REACTION_BOUND), run.output[-3000:]
    time.sleep(6)  # four more polls: no further reload
    assert reloads(run) == 1, run.stdout
    assert run.stdout.count("Squid reconfigured") == 1
    assert not any(proxies_through(port) for port in ports[:-1])


def test_with_config_reload_signal_nothing_happens_until_sighup(
    workspace: Workspace, launch: Launcher
) -> None:
    volume, run = started_on_volume(workspace, launch, CONFIG_RELOAD="signal")
    assert (
        "CONFIG_RELOAD=signal: the config and TLS secret are reloaded on SIGHUP only" in run.stdout
    )
    new_port = free_port()
    volume.publish({"squid.conf": port_config(workspace, new_port)})
    time.sleep(10 * INTERVAL)
    assert "Squid reconfigured" not in run.stdout and not proxies_through(new_port)
    assert proxies_through(workspace.squid_port)
    run.process.send_signal(signal.SIGHUP)
    assert wait_until(lambda: proxies_through(new_port), REACTION_BOUND), run.output[-3000:]
    assert reloads(run) == 0


def test_a_change_during_startup_is_reloaded_once_ready(
    workspace: Workspace, launch: Launcher
) -> None:
    volume = KubeletVolume(workspace.etc / "custom")
    volume.publish({"squid.conf": port_config(workspace, workspace.squid_port)})
    new_port = free_port()
    run = launch(watching(workspace, volume.path("squid.conf")))
    run.wait_for_output(r"Starting Squid proxy", 90)
    volume.publish({"squid.conf": port_config(workspace, new_port)})  # while Squid starts
    run.wait_ready()
    assert wait_until(lambda: proxies_through(new_port), REACTION_BOUND), run.output[-3000:]


# -- a file mounted on its own (Docker's -v file:file) ------------------------------------------
def bind(source: Path, target: Path) -> None:
    subprocess.run(
        ["mount", "--bind", str(source), str(target)], check=True, capture_output=True, timeout=30
    )


def unmount(target: Path) -> None:
    subprocess.run(["umount", str(target)], check=False, capture_output=True, timeout=30)


needs_mount = pytest.mark.skipif(
    not running_as_root() or shutil.which("mount") is None,
    reason="bind mounts need root and mount(8) (ctest runs as root in a private mount namespace)",
)


@needs_mount
def test_a_config_bind_mounted_as_a_single_file_is_told_once_at_startup(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    host_file = workspace.etc / "host-squid.conf"
    host_file.write_bytes(port_config(workspace, workspace.squid_port))
    os.chmod(host_file, 0o664)
    target = workspace.custom_config
    target.write_text("")
    os.chmod(target, 0o664)
    bind(host_file, target)
    run: EntrypointRun | None = None
    try:
        run = launch(watching(workspace, target))
        run.wait_ready()
        warning = f"{target} is mounted as a single file: a change made by replacing the file"
        assert run.stdout.count(f"[WARNING] {warning}") == 1, run.stdout[-3000:]
        assert "mount the directory holding it instead" in run.stdout
    finally:
        if run is not None:
            run.cleanup()  # before the unmount: nothing may still read the mount
        unmount(target)


@needs_mount
def test_a_config_in_a_bind_mounted_directory_is_not_warned_about(
    workspace: Workspace, launch: Launcher
) -> None:
    host_dir = workspace.make_dir(workspace.root / "host-conf", 0o775)
    (host_dir / "squid.conf").write_bytes(port_config(workspace, workspace.squid_port))
    os.chmod(host_dir / "squid.conf", 0o664)
    mounted = workspace.make_dir(workspace.etc / "mounted", 0o775)
    bind(host_dir, mounted)
    run: EntrypointRun | None = None
    try:
        run = launch(watching(workspace, mounted / "squid.conf"))
        run.wait_ready()
        assert "is mounted as a single file" not in run.output
        new_port = free_port()  # and a host-side replace is seen through the directory mount
        replacement = host_dir / ".squid.conf.new"
        replacement.write_bytes(port_config(workspace, new_port))
        os.chmod(replacement, 0o664)
        replacement.replace(host_dir / "squid.conf")
        assert wait_until(lambda: proxies_through(new_port), REACTION_BOUND), run.output[-3000:]
    finally:
        if run is not None:
            run.cleanup()
        unmount(mounted)


# -- what the watched files cannot do to PID 1 --------------------------------------------------
def started_with_include_glob(
    workspace: Workspace, launch: Launcher, pattern: str
) -> EntrypointRun:
    text = port_config(workspace, workspace.squid_port, f"include {pattern}\n")
    workspace.custom_config.write_bytes(text)
    workspace.share_tree(workspace.etc)
    run = launch(watching(workspace, workspace.custom_config))
    run.wait_ready()
    return run


def assert_pid1_responsive(run: EntrypointRun) -> None:
    """SIGHUP is taken at once (its log line), SIGTERM ends everything within the stop bound."""
    run.process.send_signal(signal.SIGHUP)
    run.wait_for_output(r"Received signal SIGHUP, reloading the config", 5)
    run.process.terminate()
    assert run.wait_exit(60) == 0


def test_a_fifo_appearing_in_an_include_glob_is_skipped_once_and_blocks_nothing(
    workspace: Workspace, launch: Launcher
) -> None:
    conf_d = workspace.make_dir(workspace.etc / "conf.d", 0o775)
    (conf_d / "a.conf").write_text("acl a src 10.0.0.1\n")
    run = started_with_include_glob(workspace, launch, f"{conf_d}/*.conf")
    os.mkfifo(conf_d / "b.conf")  # a writer that never comes: a read would block forever
    run.wait_for_output(
        r"Reload skipped, Squid keeps its current config: .*b\.conf is a FIFO",
        REACTION_BOUND,
        stream="stderr",
    )
    time.sleep(8 * INTERVAL)
    assert run.stderr.count("Reload skipped") == 1, run.stderr[-3000:]
    assert proxies_through(workspace.squid_port)
    (conf_d / "b.conf").unlink()  # gone again: the next settled state is good
    run.wait_for_output(r"Squid reconfigured", REACTION_BOUND)
    assert_pid1_responsive(run)


@pytest.mark.skipif(not os.path.isdir("/sys/devices"), reason="needs /sys (a huge tree)")
def test_an_include_glob_whose_tree_explodes_is_skipped_once_and_pid1_stays_responsive(
    workspace: Workspace, launch: Launcher
) -> None:
    tree = workspace.make_dir(workspace.etc / "tree", 0o775)
    deep = tree / "a" / "a" / "a" / "a" / "a" / "a" / "a" / "a"
    deep.mkdir(parents=True)
    (deep / "x.conf").write_text("acl a src 10.0.0.1\n")
    workspace.share_tree(tree)
    run = started_with_include_glob(workspace, launch, f"{tree}/*/*/*/*/*/*/*/*/x.conf")
    (tree / "sys").symlink_to("/sys")  # the glob now walks /sys: past the walker's 100 000 entries
    run.wait_for_output(
        r"Reload skipped, Squid keeps its current config: .*(visited more than 100000 directory entries|took longer than)",
        REACTION_BOUND,
        stream="stderr",
    )
    time.sleep(8 * INTERVAL)  # the watcher keeps walking within its bounds: no second reload
    assert run.stderr.count("Reload skipped") == 1, run.stderr[-3000:]
    assert proxies_through(workspace.squid_port)
    assert_pid1_responsive(run)


def assert_skipped_once_then_applied_when_fixed(
    run: EntrypointRun, skipped: str, fix: Callable[[], None]
) -> None:
    """The refused config's own file, fixed, is the next change (not only the running config's)."""
    run.wait_for_output(
        rf"(?s)Reload skipped, Squid keeps its current config: .*{skipped}",
        REACTION_BOUND,
        stream="stderr",
    )
    time.sleep(4 * INTERVAL)  # the same broken state is not retried poll after poll
    assert run.stderr.count("Reload skipped") == 1, run.stderr[-3000:]
    fix()
    run.wait_for_output(r"Squid reconfigured", REACTION_BOUND)
    assert run.stderr.count("Reload skipped") == 1, run.stderr[-3000:]


def test_creating_the_include_a_skipped_config_missed_reloads_it(
    workspace: Workspace, launch: Launcher
) -> None:
    workspace.custom_config.write_bytes(port_config(workspace, workspace.squid_port))
    run = launch(watching(workspace, workspace.custom_config))
    run.wait_ready()
    extra = workspace.etc / "extra.conf"  # named only by the new config, not there yet
    new_port = free_port()
    workspace.custom_config.write_bytes(port_config(workspace, new_port, f"include {extra}\n"))

    def create() -> None:
        extra.write_text("acl created src 10.0.0.1\n")
        os.chmod(extra, 0o664)

    assert_skipped_once_then_applied_when_fixed(run, r"extra\.conf matches no file", create)
    assert wait_until(lambda: proxies_through(new_port), REACTION_BOUND), run.output[-3000:]


def test_fixing_a_file_only_the_skipped_config_includes_reloads_it(
    workspace: Workspace, launch: Launcher
) -> None:
    workspace.custom_config.write_bytes(port_config(workspace, workspace.squid_port))
    run = launch(watching(workspace, workspace.custom_config))
    run.wait_ready()
    new_dir = workspace.make_dir(workspace.etc / "new.d", 0o775)
    broken = new_dir / "a.conf"
    broken.write_text("http_access allow no_such_acl\n")
    os.chmod(broken, 0o664)
    new_port = free_port()
    workspace.custom_config.write_bytes(
        port_config(workspace, new_port, f"include {new_dir}/*.conf\n")
    )

    def fix() -> None:
        broken.write_text("acl fixed src 10.0.0.1\n")

    assert_skipped_once_then_applied_when_fixed(run, "no_such_acl", fix)
    assert wait_until(lambda: proxies_through(new_port), REACTION_BOUND), run.output[-3000:]


def test_the_tls_secret_a_config_turning_on_ssl_bump_lacked_reloads_it_when_it_arrives(
    workspace: Workspace, launch: Launcher, tmp_path: Path
) -> None:
    workspace.custom_config.write_bytes(port_config(workspace, workspace.squid_port))
    run = launch(watching(workspace, workspace.custom_config))
    run.wait_ready()
    workspace.make_dir(workspace.tls_dir, 0o775)
    text = ssl_bump_config(workspace)  # the same port: only the secret is missing
    workspace.custom_config.write_text(text)
    os.chmod(workspace.custom_config, 0o664)
    cert, key = make_ca(tmp_path, "watch-attempted")
    assert_skipped_once_then_applied_when_fixed(
        run, r"tls\.crt", lambda: install_ca(workspace, cert, key)
    )
    assert "Merged CA certificate and key" in run.stdout  # the first bump by reload works
