"""Config parsing (uncommented directives only), SSL-bump detection, default rendering, selection."""

from __future__ import annotations

import asyncio
import glob as pyglob
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entrypoint import squid_config
from entrypoint.config_steps import in_worker
from entrypoint.settings import load_settings
from entrypoint.squid_config import (
    ConfigError,
    Directive,
    ListenAddress,
    parse_directives,
    parse_listen_address,
    render_default,
    select_config,
    uses_ssl_bump,
)

PACKAGED_DEFAULT = Path(__file__).resolve().parent / "squid.conf.default"


def test_comments_blank_lines_and_continuations() -> None:
    directives = parse_directives(
        "# http_port 1 ssl-bump\n\n  http_port 3128 \\\n   name=x\nacl a src all\n"
    )
    assert [(d.line_number, d.name, d.args) for d in directives] == [
        (3, "http_port", ("3128", "name=x")),
        (5, "acl", ("a", "src", "all")),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http_port 3128 ssl-bump cert=/x.pem\n", True),
        ("https_port 3129 ssl-bump\n", True),
        ("ssl_bump bump all\n", True),
        ("sslcrtd_program /usr/lib/squid/security_file_certgen -s /d -M 4MB\n", True),
        ("# http_port 3128 ssl-bump\n#ssl_bump bump all\n   # sslcrtd_program x\n", False),
        ("http_port 3128\nacl ssl-bump-like src all\n", False),
    ],
)
def test_ssl_bump_detection_uses_uncommented_directives_only(text: str, expected: bool) -> None:
    assert uses_ssl_bump(parse_directives(text)) is expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("3128", ListenAddress(None, 3128)),
        ("0.0.0.0:3128", ListenAddress(None, 3128)),
        ("127.0.0.1:8000", ListenAddress("127.0.0.1", 8000)),
        ("[::1]:3130", ListenAddress("::1", 3130)),
        ("[::]:3131", ListenAddress(None, 3131)),
    ],
)
def test_listen_addresses(spec: str, expected: ListenAddress) -> None:
    (directive,) = parse_directives(f"http_port {spec} intercept\n")
    assert parse_listen_address(directive) == expected


def test_unreadable_port_is_a_config_error() -> None:
    (directive,) = parse_directives("\nhttp_port localhost:http\n")
    with pytest.raises(ConfigError, match="line 2"):
        parse_listen_address(directive)


def test_packaged_default_has_the_contracted_directives() -> None:
    settings, _ = load_settings(
        {
            "CEPHALOPROXY_DEFAULT_CONFIG": str(PACKAGED_DEFAULT),
            "CEPHALOPROXY_CONFIG": "/nonexistent/squid.conf",
        }
    )
    active = select_config(settings)
    assert not active.is_custom and active.source == PACKAGED_DEFAULT
    assert active.files[0].data == PACKAGED_DEFAULT.read_bytes()  # nothing to render
    assert active.http_ports == [ListenAddress(None, 3128)]
    assert active.pid_file == Path("/var/run/squid/squid.pid")
    assert [(d.store_type, d.path) for d in active.disk_cache_dirs] == [
        ("ufs", Path("/var/spool/squid"))
    ]
    assert not active.uses_ssl_bump
    names = {d.name: d.args for d in active.directives}
    # The metrics scrapes' manager requests stay out of the access log.
    assert names["access_log"] == ("stdio:/dev/stdout", "!manager")
    assert names["cache_log"] == ("/dev/stderr",)
    assert names["shutdown_lifetime"] == ("30", "seconds")  # follows SHUTDOWN_TIMEOUT when rendered
    assert "visible_hostname" in names and "cache_effective_user" not in names


def test_default_is_rendered_with_port_and_dirs_for_the_run_dir(tmp_path: Path) -> None:
    env = {
        "SQUID_PORT": "3999",
        "CEPHALOPROXY_DEFAULT_CONFIG": str(PACKAGED_DEFAULT),
        "CEPHALOPROXY_CONFIG": str(tmp_path / "absent.conf"),
        "CEPHALOPROXY_RUN_DIR": str(tmp_path / "run"),
        "CEPHALOPROXY_SPOOL_DIR": str(tmp_path / "spool"),
    }
    settings, _ = load_settings(env)
    active = select_config(settings)
    assert (
        active.path == tmp_path / "run" / "squid.conf"
    )  # where its snapshot goes (config_snapshot)
    assert active.http_ports == [ListenAddress(None, 3999)]
    assert active.pid_file == tmp_path / "run" / "squid.pid"
    assert active.disk_cache_dirs[0].path == tmp_path / "spool"
    assert not (tmp_path / "run").exists()  # nothing is written before the runtime dirs are checked
    assert active.files[0].data.decode() == render_default(settings)
    assert "/var/spool/squid" not in render_default(settings)


def test_custom_config_wins(tmp_path: Path) -> None:
    custom = tmp_path / "squid.conf"
    custom.write_text("http_port 4000\npid_filename /run/x.pid\n")
    settings, _ = load_settings(
        {"CEPHALOPROXY_CONFIG": str(custom), "CEPHALOPROXY_DEFAULT_CONFIG": str(PACKAGED_DEFAULT)}
    )
    active = select_config(settings)
    assert (
        active.is_custom and active.source == custom and active.files[0].data == custom.read_bytes()
    )
    assert active.pid_file == Path("/run/x.pid")


def test_cert_db_location_comes_from_sslcrtd_program() -> None:
    from entrypoint.squid_config import ActiveConfig

    directives = parse_directives(
        "sslcrtd_program /usr/lib/squid/security_file_certgen -s /data/db -M 16MB\n"
    )
    active = ActiveConfig(Path("/c"), Path("/c"), True, directives)
    (db,) = active.cert_dbs(Path("/var/lib/squid/ssl_db"))
    assert (db.path, db.size) == (Path("/data/db"), "16MB")


def _custom(tmp_path: Path, text: str) -> Path:
    custom = tmp_path / "squid.conf"
    custom.write_text(text)
    return custom


def _select(custom: Path):
    settings, _ = load_settings(
        {"CEPHALOPROXY_CONFIG": str(custom), "CEPHALOPROXY_DEFAULT_CONFIG": str(PACKAGED_DEFAULT)}
    )
    return select_config(settings)


def test_includes_are_followed_with_globs_in_order_from_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "20-pid.conf").write_text("pid_filename /run/included.pid\n")
    (conf_d / "10-bump.conf").write_text("\n\nssl_bump bump all\n")
    (conf_d / "ignored.txt").write_text("pid_filename /run/wrong.pid\n")
    (tmp_path / "nested.conf").write_text(f"include {conf_d}/*.conf\n")
    monkeypatch.chdir(tmp_path)  # Squid resolves relative includes from its working dir
    active = _select(_custom(tmp_path, "http_port 3128\ninclude nested.conf\n"))
    assert active.pid_file == Path("/run/included.pid")
    assert active.uses_ssl_bump
    (bump,) = active.named("ssl_bump")
    assert (bump.source, bump.line_number) == (conf_d / "10-bump.conf", 3)
    assert [d.name for d in active.directives] == ["http_port", "ssl_bump", "pid_filename"]


def test_relative_include_beside_the_config_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "etc"
    (config_dir / "conf.d").mkdir(parents=True)
    (config_dir / "conf.d" / "a.conf").write_text("pid_filename /run/a.pid\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"line 2: include conf.d/\*.conf matches no file; Squid resolves relative include paths from its working directory",
    ):
        _select(_custom(config_dir, "http_port 3128\ninclude conf.d/*.conf\n"))


def test_include_cycle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "b.conf").write_text(f"include {tmp_path}/squid.conf\n")
    with pytest.raises(ConfigError, match="include cycle"):
        _select(_custom(tmp_path, f"http_port 3128\ninclude {tmp_path}/b.conf\n"))


def test_include_depth_is_bounded(tmp_path: Path) -> None:
    for level in range(30):  # a chain, not a cycle: distinct files
        (tmp_path / f"{level}.conf").write_text(f"include {tmp_path}/{level + 1}.conf\n")
    (tmp_path / "30.conf").write_text("pid_filename /run/deep.pid\n")
    with pytest.raises(ConfigError, match="deeper than 16 levels"):
        _select(_custom(tmp_path, f"include {tmp_path}/0.conf\n"))


def test_included_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.conf")
    with pytest.raises(ConfigError, match=r"line 1: include .*fifo.conf: .* is a FIFO"):
        _select(_custom(tmp_path, f"include {tmp_path}/fifo.conf\n"))


@pytest.mark.parametrize(
    "spec",
    [
        "\u0668\u0660\u0668\u0661",
        "3128abc",
        "3_128",
        "0",
        "70000",
        "127.0.0.1:\uff18\uff10",
        "[::1]:",
    ],
)
def test_ports_need_ascii_digits_in_range(tmp_path: Path, spec: str) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"squid.conf line 2: cannot read the port of 'http_port {re.escape(spec)}'",
    ):
        _select(_custom(tmp_path, f"pid_filename /run/x.pid\nhttp_port {spec}\n"))


def test_relative_pid_filename_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"line 1: pid_filename squid.pid must be an absolute path"
    ):
        _select(_custom(tmp_path, "pid_filename squid.pid\nhttp_port 3128\n"))


def test_helper_programs_of_every_helper_directive() -> None:
    from entrypoint.squid_config import helper_programs

    directives = parse_directives(
        "sslcrtd_program /h/certgen -s /db -M 4MB\n"
        "auth_param basic program /h/basic_ncsa_auth /etc/pw\n"
        "auth_param basic children 5\n"
        "url_rewrite_program /h/rewrite\n"
        "store_id_program /h/storeid\n"
        "external_acl_type grp ttl=60 children-max=3 %LOGIN %SRC /h/ext_acl -x\n"
        "logfile_daemon /h/log_file_daemon\n"
    )
    assert [(d.name, program) for d, program in helper_programs(directives)] == [
        ("sslcrtd_program", "/h/certgen"),
        ("auth_param", "/h/basic_ncsa_auth"),
        ("url_rewrite_program", "/h/rewrite"),
        ("store_id_program", "/h/storeid"),
        ("external_acl_type", "/h/ext_acl"),
        ("logfile_daemon", "/h/log_file_daemon"),
    ]


def test_missing_or_unexecutable_helper_is_refused_with_the_real_location(tmp_path: Path) -> None:
    from entrypoint.squid_config import check_helpers

    helpers = tmp_path / "usr-lib-squid"
    helpers.mkdir()
    (helpers / "security_file_certgen").write_text("#!/bin/true\n")
    os.chmod(helpers / "security_file_certgen", 0o755)
    wrong = parse_directives(
        "\nsslcrtd_program /usr/libexec/squid/security_file_certgen -s /db\n",
        tmp_path / "squid.conf",
    )
    with pytest.raises(ConfigError) as failure:
        check_helpers(wrong, helpers)
    message = str(failure.value)
    assert (
        "squid.conf line 2: sslcrtd_program program /usr/libexec/squid/security_file_certgen does not exist"
        in message
    )
    assert (
        f"did you mean {helpers}/security_file_certgen?" in message
        and f"helpers are in {helpers}" in message
    )
    plain = tmp_path / "plain"
    plain.write_text("")
    os.chmod(plain, 0o644)
    with pytest.raises(ConfigError, match="is not executable by UID"):
        check_helpers(parse_directives(f"url_rewrite_program {plain}\n"), helpers)
    check_helpers(parse_directives(f"sslcrtd_program {helpers}/security_file_certgen\n"), helpers)


# -- property: any http_port argument is a ListenAddress or a ConfigError --------------------------


_digits = st.text("0123456789", min_size=1, max_size=6) | st.text(
    "0123456789", min_size=4290, max_size=5000
)
_specs = st.one_of(
    st.text(),
    _digits,
    st.tuples(
        st.sampled_from(["", "127.0.0.1:", "[::1]:", "[::]:", "host:", "a:b:", "[", "]:"]), _digits
    ).map("".join),
    st.text("0123456789:[].\u0660\uff11_ab", max_size=12),
)


@given(st.sampled_from(["http_port", "https_port"]), _specs)
def test_any_port_argument_is_an_address_or_a_config_error(name: str, spec: str) -> None:
    directive = Directive(7, name, (spec,), Path("/etc/squid/squid.conf"))
    try:
        address = parse_listen_address(directive)
    except ConfigError as error:
        assert str(error).startswith(
            f"Squid config /etc/squid/squid.conf line 7: cannot read the port of '{name} "
        )
        assert len(str(error)) < 300
        return
    assert isinstance(address, ListenAddress) and 1 <= address.port <= 65535
    assert spec.endswith(str(address.port))


def test_a_port_of_5000_digits_is_a_config_error_not_a_value_error() -> None:
    with pytest.raises(
        ConfigError,
        match=r"cannot read the port of 'http_port 127\.0\.0\.1:1{60}.*\.\.\.' \(5010 characters\)",
    ):
        parse_listen_address(Directive(1, "http_port", ("127.0.0.1:" + "1" * 5000,)))


# -- include globs: walked with the budget checked at every entry; lines Squid would split ------


SYS_GLOB = "/sys/*/*/*/*/*/*/*/*/*/*/*/nomatch"  # matches nothing, walks a huge tree


def _select_in_thread(
    custom: Path, cancel: threading.Event | None = None, bound: float = 25.0
) -> BaseException | None:
    """select_config in a daemon thread; the error it raised. AssertionError if still running after `bound`."""
    outcome: list[BaseException | None] = []

    def work() -> None:
        settings, _ = load_settings(
            {
                "CEPHALOPROXY_CONFIG": str(custom),
                "CEPHALOPROXY_DEFAULT_CONFIG": str(PACKAGED_DEFAULT),
            }
        )
        try:
            select_config(settings, cancel)
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(bound)
    assert outcome, f"reading the config was still walking after {bound} s"
    return outcome[0]


@pytest.mark.skipif(not os.path.isdir("/sys/devices"), reason="needs /sys")
def test_an_include_glob_walking_a_huge_tree_is_refused_at_the_entry_limit(tmp_path: Path) -> None:
    error = _select_in_thread(_custom(tmp_path, f"http_port 3128\ninclude {SYS_GLOB}\n"))
    assert isinstance(error, ConfigError)
    assert re.fullmatch(
        rf"Squid config {tmp_path}/squid.conf line 2: include {re.escape(SYS_GLOB)}: expanding the include globs"
        r" visited more than 100000 directory entries \(the limit\): name the files or a narrower pattern",
        str(error),
    ), error


@pytest.mark.skipif(not os.path.isdir("/sys/devices"), reason="needs /sys")
def test_the_time_limit_and_cancel_stop_an_include_glob_at_any_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(squid_config, "MAX_GLOB_ENTRIES", 10**9)
    monkeypatch.setattr(squid_config, "READ_TIME_LIMIT", 1.0)
    custom = _custom(tmp_path, f"http_port 3128\ninclude {SYS_GLOB}\n")
    error = _select_in_thread(custom, bound=15.0)
    assert isinstance(error, ConfigError)
    assert (
        f"squid.conf line 2: include {SYS_GLOB}: reading the config and its includes took longer than 1 s (the limit)"
        in str(error)
    )
    monkeypatch.setattr(squid_config, "READ_TIME_LIMIT", 60.0)
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    error = _select_in_thread(custom, cancel, bound=15.0)
    assert (
        isinstance(error, ConfigError)
        and "line 2: include" in str(error)
        and "abandoned" in str(error)
    )


_NAMES = st.sampled_from(["a", "b", "ab", "a.conf", "b.conf", ".h", ".h.conf", "x[1]", "d", ".d"])
_PARTS = st.sampled_from(
    ["*", "?", "a*", "*.conf", ".*", "[ab]", "[!a]*", "d", ".d", "a", "**", "*[1]"]
)


@given(
    tree=st.lists(st.lists(_NAMES, min_size=1, max_size=3), max_size=12),
    pattern=st.lists(_PARTS, min_size=1, max_size=3),
    trailing_slash=st.booleans(),
)
def test_include_globs_match_what_glob_matches(
    tree: list[list[str]], pattern: list[str], trailing_slash: bool
) -> None:
    with tempfile.TemporaryDirectory() as root:
        for parts in tree:
            path = Path(root, *parts)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    path.write_text("")
            except (FileExistsError, NotADirectoryError):
                pass  # a file is in the way: that tree is what it is
        os.symlink(
            root, Path(root, "d", "loop") if Path(root, "d").is_dir() else Path(root, "loop")
        )
        full = os.path.join(root, *pattern) + ("/" if trailing_slash else "")
        budget = squid_config._Budget(None)
        assert sorted(squid_config._glob(full, False, budget, "test")) == sorted(pyglob.glob(full))


def _line_config(tmp_path: Path, long_line: bytes, in_include: bool) -> tuple[Path, Path, int]:
    """(config, the file with `long_line`, its line number)."""
    custom = tmp_path / "squid.conf"
    if in_include:
        included = tmp_path / "inc.conf"
        included.write_bytes(b"acl a src 127.0.0.1\n" + long_line + b"\nacl b src 127.0.0.2\n")
        custom.write_bytes(f"http_port 3128\ninclude {included}\n".encode())
        return custom, included, 2
    custom.write_bytes(b"http_port 3128\n# pad\n" + long_line + b"\n")
    return custom, custom, 3


@given(
    length=st.integers(min_value=8191, max_value=40000),
    filler=st.sampled_from([b"x", b"\xc3\xa9", b" ", b"\t", b"\\", b"\r", b"\0", b"#"]),
    start=st.sampled_from([b"#", b"acl x src ", b"", b"  "]),
    in_include=st.booleans(),
)
def test_a_line_squid_would_split_is_refused_naming_the_file_line_and_limit(
    length: int,
    filler: bytes,
    start: bytes,
    in_include: bool,
) -> None:
    with tempfile.TemporaryDirectory() as root:
        line = (start + filler * length)[
            :length
        ]  # `length` bytes: Squid's fgets takes 8191 at most
        custom, where, number = _line_config(Path(root), line, in_include)
        with pytest.raises(ConfigError) as raised:
            _select(custom)
        assert str(raised.value) == (
            f"Squid config {where} line {number}: the line is {len(line)} bytes long, more than 8190 bytes"
            r" (the limit): Squid would read the rest of it as another line: shorten or split it"
            " (a line ending in \\ continues on the next)"
        )


@pytest.mark.parametrize("in_include", [False, True])
def test_a_line_of_8190_bytes_is_read_whole(tmp_path: Path, in_include: bool) -> None:
    custom, _, _ = _line_config(tmp_path, b"acl long src " + b"1" * (8190 - 13), in_include)
    assert _select(custom).named("acl")


def test_the_split_line_attack_cannot_hide_an_include(tmp_path: Path) -> None:
    hidden = tmp_path / "hidden.conf"
    hidden.write_text("http_port 3130\n")
    line = "#" + "x" * 8190 + f"include {hidden}"
    custom = _custom(tmp_path, f"http_port 3128\n{line}\n")
    with pytest.raises(
        ConfigError,
        match=rf"squid.conf line 2: the line is {len(line)} bytes long, more than 8190 bytes \(the limit\)",
    ):
        _select(custom)


# -- the worker thread --------------------------------------------------------------------------
def test_no_thread_to_be_had_is_a_config_error_and_the_job_never_runs_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[bool] = []

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(
        ConfigError,
        match=r"^cannot start a thread for reading the Squid config /x: the container's process limit \(RLIMIT_NPROC / pids.max\) is reached: raise it$",
    ):
        asyncio.run(in_worker(lambda cancel: ran.append(True), "reading the Squid config /x"))
    assert ran == []


@pytest.mark.skipif(os.geteuid() != 0, reason="RLIMIT_NPROC needs another UID (root ignores it)")
def test_a_real_process_limit_is_a_config_error_not_a_read_on_the_loop() -> None:
    script = (
        "import asyncio, os, resource\n"
        "from entrypoint.config_steps import in_worker\n"
        "from entrypoint.squid_config import ConfigError\n"
        "resource.setrlimit(resource.RLIMIT_NPROC, (1, 1)); os.setgroups([]); os.setgid(1000770001); os.setuid(1000770001)\n"
        "try:\n"
        "    asyncio.run(in_worker(lambda cancel: print('ran on the loop'), 'reading the Squid config /x'))\n"
        "except ConfigError as error:\n"
        "    print('ConfigError:', error)\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert done.stdout.startswith(
        "ConfigError: cannot start a thread for reading the Squid config /x: the container's process limit"
    ), (done.stdout, done.stderr)


def _peer_lines(prefix: str, count: int) -> str:
    return "".join(
        f"cache_peer p{number}.example parent 3128 0 login=u:{prefix}{number:05d}pw\n"
        for number in range(count)
    )


def test_a_config_with_more_secrets_than_redaction_remembers_is_refused_naming_the_line(
    tmp_path: Path,
) -> None:
    """Past redact.MAX_REMEMBERED_PER_SET strings (each login gives its value and pieces) the
    read stops at the line that crossed it; nothing is silently left unremembered."""
    from entrypoint import redact

    config = tmp_path / "squid.conf"
    config.write_text("http_port 3128\n" + _peer_lines("Sx", redact.MAX_REMEMBERED_PER_SET))
    with pytest.raises(ConfigError) as raised:
        squid_config.read_tree(config)
    message = str(raised.value)
    assert re.search(rf"{re.escape(str(config))}(:| line )\d+", message), message
    assert f"more than {redact.MAX_REMEMBERED_PER_SET} distinct secret values" in message
    assert "Sx0" not in message
    # Nothing of it is handed over to be remembered: Squid never reads a config refused here
    # and the message holds no value, while a set that large would take the event loop
    # seconds to compile (attack: 300k values behind one continued line, 6.6 s).
    assert raised.value.secrets == ()
    # One directive continued over many lines counts its values too.
    config.write_text(
        "http_port 3128\nauth_param basic program /bin/h \\\n"
        + "".join(f" --password=P{n:05d}zq \\\n" for n in range(redact.MAX_REMEMBERED_PER_SET + 1))
        + " -x\n"
    )
    with pytest.raises(squid_config.TooManySecrets) as raised:
        squid_config.read_tree(config)
    assert raised.value.secrets == () and "P0000" not in str(raised.value)
    # A config well inside the bound reads.
    config.write_text("http_port 3128\n" + _peer_lines("Ok", 300))
    squid_config.read_tree(config)


def test_rotated_credentials_are_forgotten_once_squid_cannot_print_them() -> None:
    """What is remembered is the active, the previous and the last attempted config's: after
    500 rotations it holds three configs' strings, not 500, and each of those is redacted."""
    from entrypoint import redact
    from entrypoint.config_steps import ATTEMPTED_SECRETS, remember_activated

    def secrets(number: int) -> frozenset[str]:
        return frozenset(redact.secrets_in(f"cache_peer p parent 3128 0 login=u:Rot{number:05d}x"))

    redact.forget_secrets()
    try:
        for number in range(500):
            redact.remember_for(ATTEMPTED_SECRETS, secrets(number))
            remember_activated(secrets(number))
        redact.remember_for(ATTEMPTED_SECRETS, secrets(1000))  # a refused reload's config
        for number in (498, 499, 1000):
            assert redact.redact(f"peer said Rot{number:05d}x") == f"peer said {redact.REDACTED}"
        for number in (0, 250, 497):  # neither active, nor previous, nor attempted
            assert redact.redact(f"peer said Rot{number:05d}x") == f"peer said Rot{number:05d}x"
        assert redact.remembered_count() <= 3 * len(secrets(0))
    finally:
        redact.forget_secrets()
