"""stale.py against a fake Debian mirror written here (Packages.xz per channel and arch), and
its Debian version ordering against known orderings and dpkg. No network: an unreachable
mirror is a closed port on 127.0.0.1."""

from __future__ import annotations

import io
import itertools
import json
import lzma
import os
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tools.debian_lock import stale

NOW = datetime(2026, 12, 7, 1, 0, 0, tzinfo=timezone.utc)
SNAPSHOT = "20261128T000000Z"
HINT = (
    f"to refresh: in image/trixie.yaml replace {SNAPSHOT} with 20261207T010000Z, run `bazel run @trixie//:lock`, "
    "review the diff, run `bazel test //image/...` and commit image/trixie.yaml and image/trixie.lock.json "
    'together (README "Refreshing the Debian package lock")'
)

MANIFEST = f"""\
# The shape of image/trixie.yaml.
version: 1

sources:
  # snapshot first
  - channel: trixie main
    urls:
      - https://snapshot.debian.org/archive/debian/{SNAPSHOT}
      - https://deb.debian.org/debian
  - channel: trixie-updates main
    urls:
      - https://snapshot.debian.org/archive/debian/{SNAPSHOT}
      - https://deb.debian.org/debian
  - channel: trixie-security main
    urls:
      - https://snapshot.debian.org/archive/debian-security/{SNAPSHOT}
      - https://deb.debian.org/debian-security

archs:
  - amd64
  - arm64

packages:
  - base-files
  - tzdata
  - libssl3t64
"""

ARCHS = ("amd64", "arm64")
# name -> (version, architecture field) as locked; the sha256 is derived from both.
LOCKED = {
    "base-files": ("13.8+deb13u8", None),
    "tzdata": ("2026f-0+deb13u1", "all"),
    "libssl3t64": ("3.5.9-1~deb13u1", None),
}


def sha(name: str, version: str, arch: str) -> str:
    return (f"{name}{version}{arch}".encode().hex() * 64)[:64]


def stanza(name: str, version: str, arch: str, sha256: str | None = None) -> str:
    architecture = LOCKED.get(name, (None, None))[1] or arch
    return (
        f"Package: {name}\nSource: {name}\nVersion: {version}\nArchitecture: {architecture}\n"
        f"Description: {name}\n something folded\n"
        f"Filename: pool/main/{name[0]}/{name}/{name}_{version}_{architecture}.deb\n"
        f"SHA256: {sha256 or sha(name, version, arch)}\n"
    )


def write_index(mirror: Path, suite: str, arch: str, stanzas: list[str]) -> None:
    directory = mirror / "dists" / suite / "main" / f"binary-{arch}"
    directory.mkdir(parents=True, exist_ok=True)
    # Other packages around the locked ones, as in a real index.
    text = "\n".join(
        [stanza("zzz-other", "1.0-1", arch), *stanzas, stanza("aaa-other", "2:0.1", arch)]
    )
    (directory / "Packages.xz").write_bytes(lzma.compress(text.encode()))


class Fixture:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.mirror = root / "debian"
        self.security = root / "debian-security"
        self.lock = root / "trixie.lock.json"
        self.manifest = root / "trixie.yaml"
        self.manifest.write_text(MANIFEST)
        packages = [
            {
                "arch": arch,
                "dependencies": [],
                "key": f"{name}_{version}_{arch}",
                "name": name,
                "sha256": sha(name, version, arch),
                "urls": [
                    f"https://deb.debian.org/debian/pool/main/{name[0]}/{name}/{name}_{version}_{arch}.deb"
                ],
                "version": version,
            }
            for arch in ARCHS
            for name, (version, _) in LOCKED.items()
        ]
        self.lock.write_text(json.dumps({"packages": packages, "version": 1}, indent=1))
        # The lock is current: every locked version in trixie, empty updates, security has
        # an older libssl.
        for arch in ARCHS:
            self.index(
                "trixie",
                arch,
                [stanza(name, version, arch) for name, (version, _) in LOCKED.items()],
            )
            self.index("trixie-updates", arch, [])
            self.index("trixie-security", arch, [stanza("libssl3t64", "3.5.4-1~deb13u1", arch)])

    def index(self, suite: str, arch: str, stanzas: list[str]) -> None:
        write_index(
            self.security if suite.endswith("-security") else self.mirror, suite, arch, stanzas
        )

    def args(self) -> list[str]:
        return [
            "--lock",
            str(self.lock),
            "--manifest",
            str(self.manifest),
            "--mirror",
            str(self.mirror),
            "--security-mirror",
            str(self.security),
            "--timeout",
            "5",
        ]

    def run(self, *extra: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = stale.run([*self.args(), *extra], out, err, now=NOW)
        return code, out.getvalue(), err.getvalue()


def stale_report(*lines: str) -> tuple[int, str, str]:
    """What run() returns for these stale lines: exit 1, the lines and the refresh hint."""
    return 1, "".join(f"{line}\n" for line in (*lines, HINT)), ""


@pytest.fixture
def fake(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path)


# --- The report ------------------------------------------------------------------------------


def test_current_lock(fake: Fixture) -> None:
    assert fake.run() == (0, "lock is current (3 packages, 2 archs)\n", "")


def test_security_update_supersedes_the_locked_version(fake: Fixture) -> None:
    for arch in ARCHS:
        fake.index("trixie-security", arch, [stanza("libssl3t64", "3.5.10-1~deb13u1", arch)])
    assert fake.run() == stale_report(
        "stale: libssl3t64 (amd64) locked 3.5.9-1~deb13u1, current 3.5.10-1~deb13u1 from trixie-security",
        "stale: libssl3t64 (arm64) locked 3.5.9-1~deb13u1, current 3.5.10-1~deb13u1 from trixie-security",
    )


def test_point_release_removed_the_locked_version_from_the_pool(fake: Fixture) -> None:
    fake.index(
        "trixie",
        "arm64",
        [
            stanza("base-files", "13.8+deb13u9", "arm64"),
            stanza("tzdata", "2026f-0+deb13u1", "arm64"),
            stanza("libssl3t64", "3.5.9-1~deb13u1", "arm64"),
        ],
    )
    assert fake.run() == stale_report(
        "stale: base-files (arm64) locked 13.8+deb13u8, no longer in the pool, current 13.8+deb13u9 from trixie",
    )


def test_update_in_trixie_updates_and_a_package_gone_from_every_channel(fake: Fixture) -> None:
    fake.index("trixie-updates", "amd64", [stanza("tzdata", "2026g-0+deb13u1", "amd64")])
    fake.index(
        "trixie",
        "arm64",
        [
            stanza("base-files", "13.8+deb13u8", "arm64"),
            stanza("tzdata", "2026f-0+deb13u1", "arm64"),
        ],
    )
    fake.index("trixie-security", "arm64", [])
    assert fake.run() == stale_report(
        "stale: tzdata (amd64) locked 2026f-0+deb13u1, current 2026g-0+deb13u1 from trixie-updates",
        "stale: libssl3t64 (arm64) locked 3.5.9-1~deb13u1, no longer in the pool, and no channel has libssl3t64 any more",
    )


def test_version_in_two_channels_names_both(fake: Fixture) -> None:
    fake.index("trixie-security", "amd64", [stanza("libssl3t64", "3.5.10-1~deb13u1", "amd64")])
    fake.index("trixie-updates", "amd64", [stanza("libssl3t64", "3.5.10-1~deb13u1", "amd64")])
    code, out, _ = fake.run()
    assert code == 1
    assert out.splitlines()[0] == (
        "stale: libssl3t64 (amd64) locked 3.5.9-1~deb13u1, current 3.5.10-1~deb13u1 from trixie-updates, trixie-security"
    )


def test_sha256_mismatch_is_an_error(fake: Fixture) -> None:
    fake.index(
        "trixie",
        "amd64",
        [
            stanza("base-files", "13.8+deb13u8", "amd64"),
            stanza("tzdata", "2026f-0+deb13u1", "amd64", sha256="0" * 64),
            stanza("libssl3t64", "3.5.9-1~deb13u1", "amd64"),
        ],
    )
    locked = sha("tzdata", "2026f-0+deb13u1", "amd64")
    assert fake.run() == (
        2,
        "",
        (
            f"error: tzdata (amd64) 2026f-0+deb13u1: the lock's sha256 {locked} differs from trixie's index, which has {'0' * 64}\n"
        ),
    )


def test_unreachable_mirror(fake: Fixture) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = fake.run("--mirror", f"http://127.0.0.1:{port}/debian")
    assert (code, out) == (2, "")
    assert err.startswith(
        f"error: cannot download http://127.0.0.1:{port}/debian/dists/trixie/main/binary-amd64/Packages.xz: "
    ), err
    assert err.count("\n") == 1


def test_missing_index_in_a_local_mirror(fake: Fixture) -> None:
    shutil.rmtree(fake.security / "dists" / "trixie-security" / "main" / "binary-arm64")
    code, out, err = fake.run()
    url = (fake.security / "dists/trixie-security/main/binary-arm64/Packages.xz").resolve().as_uri()
    assert (code, out) == (2, "")
    assert err.startswith(f"error: cannot download {url}: "), err


def test_index_that_is_not_xz(fake: Fixture) -> None:
    index = fake.mirror / "dists/trixie-updates/main/binary-amd64/Packages.xz"
    index.write_bytes(b"Package: plain text\n")
    code, out, err = fake.run()
    assert (code, out) == (2, "")
    assert err.startswith(
        f"error: cannot read {index.resolve().as_uri()}: not an xz-compressed Packages index ("
    ), err


def test_bad_lock_and_manifest(fake: Fixture) -> None:
    fake.lock.write_text("{")
    code, out, err = fake.run()
    assert (code, out) == (2, "")
    assert err.startswith(f"error: cannot read the lock {fake.lock}: "), err
    fake.lock.write_text(
        '{"packages": [{"name": "x", "arch": "amd64", "version": "1:", "sha256": ""}]}'
    )
    assert fake.run() == (2, "", f"error: {fake.lock}: x (amd64): not a Debian version: '1:'\n")
    Fixture(fake.root)  # a good lock again
    fake.manifest.write_text("sources:\n  - channel: trixie\n")
    assert fake.run() == (
        2,
        "",
        f"error: {fake.manifest}:2: expected 'channel: <suite> <component>...', got '- channel: trixie'\n",
    )


def test_mirrors_from_the_environment(fake: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBIAN_MIRROR", str(fake.mirror))
    monkeypatch.setenv("DEBIAN_SECURITY_MIRROR", str(fake.security))
    out, err = io.StringIO(), io.StringIO()
    assert stale.run(["--lock", str(fake.lock), "--manifest", str(fake.manifest)], out, err) == 0
    assert (out.getvalue(), err.getvalue()) == ("lock is current (3 packages, 2 archs)\n", "")


def test_command_line(fake: Fixture) -> None:
    fake.index("trixie-security", "amd64", [stanza("libssl3t64", "3.5.10-1~deb13u1", "amd64")])
    script = Path(stale.__file__)
    env = {
        k: v for k, v in os.environ.items() if k not in ("DEBIAN_MIRROR", "DEBIAN_SECURITY_MIRROR")
    }
    result = subprocess.run(
        [sys.executable, str(script), *fake.args()],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert (result.returncode, result.stderr) == (1, "")
    assert (
        lines[0]
        == "stale: libssl3t64 (amd64) locked 3.5.9-1~deb13u1, current 3.5.10-1~deb13u1 from trixie-security"
    )
    assert lines[1].startswith(f"to refresh: in image/trixie.yaml replace {SNAPSHOT} with 20"), (
        lines
    )
    assert len(lines) == 2


# --- Debian version ordering -----------------------------------------------------------------

# (lower, higher) pairs, each checked both ways; from deb-version(7), dpkg's own tests and
# versions Debian really ships.
ORDERED = [
    ("1.0", "1.1"),
    ("1.9", "1.10"),
    ("1.0~rc1", "1.0"),
    ("1.0~~", "1.0~"),
    ("1.0~~a", "1.0~"),
    ("1.0~", "1.0"),
    ("1.0", "1.0a"),
    ("1.0a", "1.0+"),
    ("1.0+", "1.0.1"),
    ("1.0-1", "1.0-2"),
    ("1.0-1", "1.0-1.1"),
    ("1.0-1~bpo1", "1.0-1"),
    ("3.5.9-1~deb13u1", "3.5.10-1~deb13u1"),
    ("3.5.4-1~deb13u1", "3.5.4-1"),
    ("13.8+deb13u8", "13.8+deb13u9"),
    ("2026f-0+deb13u1", "2026g-0+deb13u1"),
    ("2025a-4", "2025b-0+deb12u1"),
    ("9.9", "1:0.1"),
    ("1:1.0", "2:0.0"),
    ("1.0-9", "1.0.1-1"),
    ("0.1", "0.1a"),
    ("a", "b"),
    ("Z", "a"),
    ("1.2.3-a", "1.2.3-b"),
    ("1.0-1", "1.0-a"),
    ("1.0-0ubuntu1", "1.0-1"),
    ("1.2-3-4", "1.2-3-5"),
]
EQUAL = [
    ("1.0", "1.0"),
    ("1.0", "0:1.0"),
    ("1.0", "1.0-0"),
    ("1.01", "1.1"),
    ("1.0-001", "1.0-1"),
    ("00:1.0", "1.0"),
]


@pytest.mark.parametrize(("lower", "higher"), ORDERED)
def test_known_orderings(lower: str, higher: str) -> None:
    assert stale.compare_versions(lower, higher) == -1
    assert stale.compare_versions(higher, lower) == 1


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_known_equal_versions(a: str, b: str) -> None:
    assert stale.compare_versions(a, b) == stale.compare_versions(b, a) == 0


@pytest.mark.parametrize("text", ["", ":1.0", "a:1.0", "1:", "1.0-", "1.0 2", "1.0-1_2", "-1"])
def test_not_versions(text: str) -> None:
    with pytest.raises(ValueError):
        stale.Version.parse(text)


DPKG = shutil.which("dpkg")


def dpkg_compare(a: str, b: str) -> int:
    for result, relation in ((-1, "lt"), (0, "eq")):
        if (
            subprocess.run(
                [DPKG or "dpkg", "--compare-versions", a, relation, b], check=False
            ).returncode
            == 0
        ):
            return result
    return 1


@pytest.mark.skipif(DPKG is None, reason="dpkg is not installed")
@pytest.mark.parametrize(("a", "b"), ORDERED + EQUAL)
def test_table_agrees_with_dpkg(a: str, b: str) -> None:
    assert stale.compare_versions(a, b) == dpkg_compare(a, b)


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # plain pytest without Hypothesis: the table above still runs
    pass
else:
    # Valid Debian versions, biased towards what makes ordering interesting: ~, +, letters,
    # leading zeros, epochs and revisions.
    _upstream = st.builds(
        lambda first, rest: first + rest,
        st.sampled_from("0123456789"),
        st.text(alphabet="0019a.+~Z", max_size=6),
    )
    versions = st.builds(
        lambda epoch, upstream, revision: f"{epoch}{upstream}{revision}",
        st.sampled_from(["", "", "0:", "1:", "2:"]),
        _upstream,
        st.just("") | st.text(alphabet="019a.+~", min_size=1, max_size=4).map(lambda r: f"-{r}"),
    )

    @given(versions, versions)
    def test_antisymmetric(a: str, b: str) -> None:
        assert stale.compare_versions(a, b) == -stale.compare_versions(b, a)

    @given(versions, versions, versions)
    def test_transitive(a: str, b: str, c: str) -> None:
        for x, y, z in itertools.permutations((a, b, c)):
            if stale.compare_versions(x, y) <= 0 and stale.compare_versions(y, z) <= 0:
                assert stale.compare_versions(x, z) <= 0

    @pytest.mark.skipif(DPKG is None, reason="dpkg is not installed")
    @settings(max_examples=60)
    @given(versions, versions)
    def test_agrees_with_dpkg(a: str, b: str) -> None:
        assert stale.compare_versions(a, b) == dpkg_compare(a, b)
