"""The image's root filesystem, read from the built layers (no container runtime)."""

from __future__ import annotations

import re
import stat

import pytest

from image.built_image import built_image_or_skip
from image.layers.oci_layout import Image, iter_entries

SHELL_NAMES = {"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "busybox"}
PACKAGE_MANAGER_NAMES = {
    "apt",
    "apt-get",
    "apt-cache",
    "apt-config",
    "apt-key",
    "apt-mark",
    "dpkg",
    "aptitude",
}
# pip included: the bundled interpreter must not be able to install software either.
PIP = re.compile(r"pip(\d+(\.\d+)?)?$")
RUNTIME_DIRS = [
    "/var/spool/squid",
    "/var/log/squid",
    "/var/lib/squid",
    "/var/run/squid",
    "/var/cache/squid",
]


@pytest.fixture(scope="module")
def image() -> Image:
    return built_image_or_skip()


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def test_has_no_shell(image: Image) -> None:
    shells = sorted(e.path for e in iter_entries(image) if basename(e.path) in SHELL_NAMES)
    assert shells == [], f"shells in the image: {shells}"


def test_has_no_package_manager(image: Image) -> None:
    found = sorted(
        e.path
        for e in iter_entries(image)
        if e.kind != "dir"
        and (
            basename(e.path) in PACKAGE_MANAGER_NAMES
            or basename(e.path).startswith("dpkg-")
            or PIP.match(basename(e.path))
        )
    )
    assert found == [], f"package-manager binaries in the image: {found}"


def test_os_release_is_debian_13_trixie(image: Image) -> None:
    text = image.read_file("/etc/os-release").decode()
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert fields["PRETTY_NAME"] == '"Debian GNU/Linux 13 (trixie)"'
    assert fields["VERSION_CODENAME"] == "trixie"
    assert fields["VERSION_ID"] == '"13"'


def test_no_setuid_or_setgid_files(image: Image) -> None:
    flagged = sorted(
        f"{e.path} {oct(e.mode)}"
        for e in iter_entries(image)
        if e.kind != "dir" and e.mode & (stat.S_ISUID | stat.S_ISGID)
    )
    assert flagged == []


@pytest.mark.parametrize("path", RUNTIME_DIRS)
def test_runtime_dir_is_group_zero_writable(image: Image, path: str) -> None:
    entry = image.lookup(path)
    assert entry is not None and entry.kind == "dir", f"{path} missing"
    assert (entry.uid, entry.gid, stat.S_IMODE(entry.mode)) == (1000, 0, 0o770)


def test_tmp_is_sticky_and_world_writable(image: Image) -> None:
    entry = image.lookup("/tmp")
    assert entry is not None and entry.kind == "dir"
    assert stat.S_IMODE(entry.mode) == 0o1777


def test_merged_usr_layout(image: Image) -> None:
    for alias in ("/bin", "/lib", "/sbin"):
        entry = image.lookup(alias)
        assert entry is not None and entry.kind == "symlink", (
            f"{alias} should be a symlink into /usr"
        )
        assert image.resolve(alias) == "/usr" + alias
    loader = {"amd64": "/lib64/ld-linux-x86-64.so.2", "arm64": "/lib/ld-linux-aarch64.so.1"}[
        str(image.config["architecture"])
    ]
    real = image.resolve(loader)
    assert real is not None and real.startswith("/usr/"), (
        f"{loader} should resolve below /usr, got {real}"
    )


def test_users_and_groups(image: Image) -> None:
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in image.read_file("/etc/passwd").decode().splitlines()
    }
    assert passwd["root"][2:4] == ["0", "0"]
    assert passwd["squid"][2:4] == ["1000", "0"]
    assert passwd["nonroot"][2:4] == ["65532", "65532"]
    assert passwd["nobody"][2] == "65534"
    for name, fields in passwd.items():
        assert image.resolve(fields[6]) is None, f"{name} has a login shell {fields[6]} that exists"
    groups = {
        line.split(":")[0]: line.split(":")[2]
        for line in image.read_file("/etc/group").decode().splitlines()
    }
    assert groups["root"] == "0" and groups["nonroot"] == "65532" and groups["nogroup"] == "65534"
    home = image.lookup("/home/squid")
    assert home is not None and (home.uid, home.gid, stat.S_IMODE(home.mode)) == (1000, 0, 0o770)


def test_python3_resolves_to_the_bundled_interpreter(image: Image) -> None:
    real = image.resolve("/usr/bin/python3")
    assert real is not None, "/usr/bin/python3 does not resolve"
    entry = image.lookup(real)
    assert entry is not None and entry.kind == "file" and entry.mode & 0o111
    assert image.read_file(real)[:4] == b"\x7fELF"
    assert image.lookup("/usr/lib/python3.13/os.py") or any(
        e.path.endswith("/os.py") and "/lib/python3." in e.path for e in iter_entries(image, "file")
    )


def test_entrypoint_and_config_are_packaged(image: Image) -> None:
    for path in (
        "/usr/local/bin/entrypoint.py",
        "/usr/local/bin/healthcheck.py",
        "/usr/lib/cephaloproxy/entrypoint/__init__.py",
        "/usr/lib/cephaloproxy/entrypoint/main.py",
        "/etc/squid/squid.conf.default",
    ):
        entry = image.lookup(path)
        assert entry is not None and entry.kind == "file", f"{path} missing"
    assert b"http_port" in image.read_file("/etc/squid/squid.conf.default")
    for path in ("/etc/squid/conf.d", "/etc/squid/ssl_cert"):
        entry = image.lookup(path)
        assert entry is not None and entry.kind == "dir", f"{path} missing"


def test_squid_is_packaged(image: Image) -> None:
    for path in ("/usr/sbin/squid", "/usr/lib/squid/security_file_certgen"):
        entry = image.lookup(path)
        assert entry is not None and entry.kind == "file" and entry.mode & 0o111, (
            f"{path} missing or not executable"
        )
    for path in ("/usr/share/squid/errors", "/usr/share/squid/icons"):
        entry = image.lookup(path)
        assert entry is not None and entry.kind == "dir", f"{path} missing"
    assert image.lookup("/usr/share/squid/mime.conf") is not None


def test_ca_bundle_is_present(image: Image) -> None:
    bundle = image.read_file("/etc/ssl/certs/ca-certificates.crt")
    assert bundle.count(b"BEGIN CERTIFICATE") > 100


def test_the_python_the_entrypoint_imports_is_precompiled(image: Image) -> None:
    # A read-only root with PYTHONDONTWRITEBYTECODE cannot cache bytecode, so a module
    # without its .pyc is compiled at every start (image/layers/layer_builder.py add_bytecode).
    files = {e.path for e in iter_entries(image) if e.kind == "file"}
    tags = {
        m.group(1)
        for p in files
        if (m := re.search(r"/__pycache__/[^/]+\.(cpython-3\d+)\.pyc$", p))
    }
    assert len(tags) == 1, f"bytecode for exactly one Python expected, found {sorted(tags)}"
    tag = tags.pop()

    def compiled(source: str) -> bool:
        directory, _, name = source.rpartition("/")
        return f"{directory}/__pycache__/{name[:-3]}.{tag}.pyc" in files

    package = sorted(
        p for p in files if p.startswith("/usr/lib/cephaloproxy/entrypoint/") and p.endswith(".py")
    )
    assert package and not [p for p in package if not compiled(p)]
    stdlib = sorted(
        p for p in files if re.match(r"/usr/lib/python3\.\d+/", p) and p.endswith(".py")
    )
    for module in (
        "asyncio/__init__.py",
        "asyncio/base_events.py",
        "logging/__init__.py",
        "subprocess.py",
        "http/server.py",
        "json/decoder.py",
        "re/_compiler.py",
        "pathlib/_local.py",
    ):
        assert [p for p in stdlib if p.endswith("/" + module) and compiled(p)], (
            f"no bytecode for {module}"
        )
    missing = [p for p in stdlib if not compiled(p)]
    assert len(missing) <= len(stdlib) // 100, (
        f"{len(missing)} stdlib modules without bytecode: {missing[:10]}"
    )
