"""Watch mode's polling on real files: what a stamp sees, the debounce, the bounds, mountinfo parsing."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from entrypoint import watch
from entrypoint.settings import Settings, load_settings
from entrypoint.squid_config import ActiveConfig, read_tree
from tests.entrypoint.kubelet_volume import KubeletVolume


def settings_for(tmp: Path, **env: str) -> Settings:
    loaded, warnings = load_settings(
        {
            "CEPHALOPROXY_CONFIG": str(tmp / "conf" / "squid.conf"),
            "CEPHALOPROXY_TLS_DIR": str(tmp / "tls"),
            **env,
        }
    )
    assert not warnings
    return loaded


# -- the stamp sees every kind of change --------------------------------------------------------
OPERATIONS = ("swap", "edit_same_size", "replace", "delete", "recreate", "chmod", "truncate")


def apply(operation: str, directory: Path, generation: int) -> None:
    target = directory / "squid.conf"
    if operation == "swap":
        KubeletVolume(directory).publish(
            {"squid.conf": f"http_port {3128 + generation}\n".encode()}
        )
    elif operation == "edit_same_size":
        data = target.read_bytes() if target.exists() else b"x"
        with open(target, "r+b") as handle:  # same inode, same size, new bytes
            handle.write(bytes([data[0] ^ 1]) + data[1:])
    elif operation == "replace":
        (directory / "new").write_bytes(b"http_port 3129\n")
        os.replace(directory / "new", target)
    elif operation == "delete":
        target.unlink()
    elif operation == "recreate":
        target.write_bytes(b"http_port 3130\n")
    elif operation == "chmod":
        os.chmod(target, 0o600 if (os.stat(target).st_mode & 0o777) != 0o600 else 0o644)
    elif operation == "truncate":
        target.write_bytes(b"")


def applicable(operation: str, directory: Path) -> bool:
    target = directory / "squid.conf"
    exists = os.path.lexists(target)
    if operation == "swap":
        return not exists or (directory / "..data").is_symlink()
    if operation in ("edit_same_size", "replace", "chmod", "truncate"):
        return (
            exists
            and not target.is_symlink()
            and (operation != "edit_same_size" or target.stat().st_size > 0)
        )
    if operation == "delete":
        return exists and not target.is_symlink()
    return not exists


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=8))
def test_every_file_operation_changes_the_stamp(tmp_path: Path, operations: list[str]) -> None:
    directory = tmp_path / f"case-{time.monotonic_ns()}"
    directory.mkdir()
    (directory / "squid.conf").write_bytes(b"http_port 3128\n")
    for generation, operation in enumerate(operations):
        if not applicable(operation, directory):
            continue
        before = watch.stamp(str(directory / "squid.conf"))
        apply(operation, directory, generation)
        assert watch.stamp(str(directory / "squid.conf")) != before, operation


def test_a_fifo_or_a_symlink_loop_is_stamped_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    os.symlink("loop", tmp_path / "loop")
    done = threading.Event()

    def stamp_them() -> None:
        watch.stamp(str(tmp_path / "fifo"))
        assert watch.stamp(str(tmp_path / "loop"))[0] == "unusable"
        assert watch.stamp(str(tmp_path / "absent")) == ("absent",)
        done.set()

    threading.Thread(target=stamp_them, daemon=True).start()
    assert done.wait(10), "stamping a FIFO or a symlink loop blocked"


# -- what is watched ------------------------------------------------------------------------------
def config_of(settings: Settings, text: str) -> ActiveConfig:
    settings.config.parent.mkdir(parents=True, exist_ok=True)
    settings.config.write_text(text)
    directives, files = read_tree(settings.config)
    return ActiveConfig(settings.run_dir / "squid.conf", settings.config, True, directives, files)


def test_the_spec_holds_the_config_its_includes_their_globs_and_the_tls_pair_only_when_bumping(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.conf").write_text("acl a src 10.0.0.1\n")
    (tmp_path / "one.conf").write_text("acl b src 10.0.0.2\n")
    plain = config_of(
        settings, f"include {tmp_path}/d/*.conf {tmp_path}/one.conf\nhttp_port 3128\n"
    )
    spec = watch.spec_for(settings, plain)
    assert spec.files == (
        str(settings.config),
        str(tmp_path / "d" / "a.conf"),
        str(tmp_path / "one.conf"),
    )
    assert spec.globs == (f"{tmp_path}/d/*.conf", f"{tmp_path}/one.conf")
    bumping = config_of(settings, "http_port 3128 ssl-bump\n")
    assert str(settings.tls_cert) in watch.spec_for(settings, bumping).files
    assert (
        str(settings.tls_key) in watch.spec_for(settings, None).files
    )  # before the config is known


def test_a_file_appearing_in_an_include_glob_is_a_change(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.conf").write_text("acl a src 10.0.0.1\n")
    spec = watch.spec_for(settings, config_of(settings, f"include {tmp_path}/d/*.conf\n"))
    before, _ = watch.fingerprint(spec)
    (tmp_path / "d" / "b.conf").write_text("acl b src 10.0.0.2\n")
    after, _ = watch.fingerprint(spec)
    assert watch.changed_paths(before, after) == [f"{tmp_path}/d/*.conf"]


def test_a_glob_over_a_huge_tree_is_bounded_and_reported_not_walked_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from entrypoint import squid_config

    monkeypatch.setattr(squid_config, "MAX_GLOB_ENTRIES", 50)
    for index in range(200):
        (tmp_path / f"e{index}").mkdir()
    spec = watch.WatchSpec((), (f"{tmp_path}/*/nothing.conf",))
    started = time.monotonic()
    prints, _ = watch.fingerprint(spec)
    assert time.monotonic() - started < 5
    assert prints["globs"][0] == "unusable" and "more than 50 directory entries" in str(
        prints["globs"][1]
    )
    # Turning unusable is a change between two looks (the per-pattern keys are gone then).
    monkeypatch.setattr(squid_config, "MAX_GLOB_ENTRIES", 100_000)
    assert watch.changed_paths(watch.fingerprint(spec)[0], prints) == ["globs"]


def test_the_number_of_stamped_files_is_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch, "MAX_WATCHED_FILES", 10)
    for index in range(30):
        (tmp_path / f"f{index:02d}.conf").write_text("")
    prints, capped = watch.fingerprint(watch.WatchSpec((), (f"{tmp_path}/*.conf",)))
    assert capped and sum(key.startswith("file:") for key in prints) == 10


def test_a_file_a_new_config_brings_in_that_changed_after_the_read_is_a_change(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.conf").write_text("acl a src 10.0.0.1\n")
    before_read = time.time_ns()
    config = config_of(settings, f"include {tmp_path}/d/*.conf\n")
    applied, _ = watch.fingerprint(watch.spec_for(settings, None))
    current, _ = watch.fingerprint(watch.spec_for(settings, config))
    time.sleep(0.3)  # well past the clock slack
    assert watch.changed_since_read(applied, current, config, time.time_ns()) == []
    (tmp_path / "d" / "b.conf").write_text("acl b src 10.0.0.2\n")  # appeared after the read
    current, _ = watch.fingerprint(watch.spec_for(settings, config))
    assert watch.changed_since_read(applied, current, config, before_read) == [
        f"glob:{tmp_path}/d/*.conf",
        f"file:{tmp_path}/d/a.conf",
    ]


# -- the polling thread: debounce, one call per settled state -------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.changes: list[list[str]] = []
        self.warnings: list[str] = []


def run_watcher(
    settings: Settings,
    config: ActiveConfig | None,
    body: Callable[[watch.Watcher], None],
    config_now: Callable[[], ActiveConfig | None] | None = None,
    read_at: Callable[[], int] = lambda: 0,
) -> Recorder:
    """`config_now`: the running config as the supervisor's state gives it (default: `config`)."""
    recorder = Recorder()

    async def main() -> None:
        watcher = watch.Watcher(
            settings,
            config_now or (lambda: config),
            read_at,
            recorder.changes.append,
            recorder.warnings.append,
        )
        watcher.start(asyncio.get_running_loop())
        try:
            await asyncio.get_running_loop().run_in_executor(None, body, watcher)
        finally:
            watcher.stop()

    asyncio.run(main())
    return recorder


def wait_polls(watcher: watch.Watcher, count: int) -> None:
    target = watcher.polls + count
    deadline = time.monotonic() + 30
    while watcher.polls < target:
        assert time.monotonic() < deadline, "the watcher stopped polling"
        time.sleep(0.01)


def test_a_burst_of_changes_is_one_call_after_it_settles_and_a_settled_state_is_not_repeated(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, CONFIG_WATCH_INTERVAL="0.2")
    volume = KubeletVolume(settings.config.parent)
    volume.publish({"squid.conf": b"0\n"})

    def body(watcher: watch.Watcher) -> None:
        wait_polls(watcher, 1)
        for generation in range(1, 6):  # each poll sees another state: none settled
            volume.publish({"squid.conf": f"{generation}\n".encode()})
            wait_polls(watcher, 1)
        wait_polls(watcher, 6)

    recorder = run_watcher(settings, None, body)
    assert recorder.changes == [[str(settings.config)]]


def test_a_half_rotated_secret_is_reported_only_once_it_stays_still(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CONFIG_WATCH_INTERVAL="0.2")
    settings.tls_dir.mkdir()
    settings.tls_cert.write_bytes(b"cert 1")
    settings.tls_key.write_bytes(b"key 1")

    def body(watcher: watch.Watcher) -> None:
        wait_polls(watcher, 1)
        settings.tls_cert.write_bytes(b"cert 2")  # the certificate first ...
        wait_polls(watcher, 1)
        settings.tls_key.write_bytes(b"key 2")  # ... its key one poll later: still moving
        wait_polls(watcher, 4)

    recorder = run_watcher(settings, None, body)
    assert recorder.changes == [[str(settings.tls_cert), str(settings.tls_key)]]


def test_a_file_that_never_settles_holds_back_a_reload_only_for_a_bounded_number_of_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch, "MIN_UNSETTLED_SECONDS", 0.0)  # the looks bound alone, for speed
    settings = settings_for(tmp_path, CONFIG_WATCH_INTERVAL="0.1")
    settings.config.parent.mkdir()
    settings.config.write_bytes(b"0\n")
    flapping = watch.MAX_UNSETTLED_LOOKS + 4

    def body(watcher: watch.Watcher) -> None:
        wait_polls(watcher, 1)
        for generation in range(1, flapping + 1):  # a new state at every look: never settled
            settings.config.write_bytes(f"{generation}\n".encode() * generation)
            wait_polls(watcher, 1)
        # stopped at once: a call seen now was made while the file was still moving

    recorder = run_watcher(settings, None, body)
    assert recorder.changes, "a file rewritten at every look held back every reload"
    assert len(recorder.warnings) == 1, recorder.warnings
    assert str(settings.config) in recorder.warnings[0]
    assert "kept changing" in recorder.warnings[0]


def test_a_secret_rotated_just_after_a_reload_turned_ssl_bump_on_is_a_change(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, CONFIG_WATCH_INTERVAL="0.1")
    plain = config_of(settings, "http_port 3128\n")
    bumping = config_of(settings, "http_port 3128 ssl-bump\n")
    settings.tls_dir.mkdir()
    settings.tls_cert.write_bytes(b"cert 1")
    settings.tls_key.write_bytes(b"key 1")
    config_now: list[ActiveConfig] = [plain]
    read_at = [0]

    def body(watcher: watch.Watcher) -> None:
        wait_polls(watcher, 2)  # the plain config's spec: the TLS pair is not watched
        time.sleep(0.3)  # the pair's ctime well before the reload's read
        read_at[0] = time.time_ns()  # the reload that turns SSL-bump on reads the pair ...
        settings.tls_cert.write_bytes(b"cert 2")  # ... and the secret rotates right after
        settings.tls_key.write_bytes(b"key 2")
        config_now[0] = bumping  # the reload is applied; the next look watches the pair
        wait_polls(watcher, 5)

    recorder = run_watcher(
        settings, None, body, config_now=lambda: config_now[0], read_at=lambda: read_at[0]
    )
    assert recorder.changes == [[str(settings.tls_cert), str(settings.tls_key)]], recorder.changes


# -- single-file mounts (mountinfo parsing; the real bind mount is in watch_e2e_test) --------------
def test_single_file_mounts_are_read_from_mountinfo_with_escaped_spaces(tmp_path: Path) -> None:
    config = tmp_path / "my conf" / "squid.conf"
    config.parent.mkdir()
    config.write_text("")
    directory = tmp_path / "dir"
    directory.mkdir()
    mountinfo = tmp_path / "mountinfo"
    escaped = str(config).replace(" ", "\\040")
    mountinfo.write_text(
        f"36 35 98:0 /host/squid.conf {escaped} rw,noatime master:1 - ext3 /dev/root rw\n"
        f"37 35 98:0 /host/dir {directory} rw - ext3 /dev/root rw\n"
    )
    assert watch.single_file_mounts([config, directory, tmp_path / "other"], mountinfo) == [config]
    assert watch.single_file_mounts([config], tmp_path / "no-mountinfo") == []
