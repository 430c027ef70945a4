"""Every example config passes `squid -k parse` with the Squid under test, in the image's layout."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples import testing
from tests.support import certs
from tools.squid.squid_under_test import SquidLayout, squid_under_test


@pytest.fixture(scope="module")
def layout() -> SquidLayout:
    return squid_under_test()


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[testing.ImageTree]:
    with testing.image_tree() as tree:
        # What the entrypoint and the mounts provide in the container.
        ca = certs.generate_ca(tmp_path / "ca")
        tree.write("/var/lib/squid/squid-ca.pem", ca.cert.read_text() + ca.key.read_text(), 0o644)
        tree.write("/etc/squid/auth/htpasswd", testing.htpasswd_line("alice", "secret"))
        yield tree


def prepared(
    example: str, tree: testing.ImageTree, layout: SquidLayout, source: Path | None = None
) -> Path:
    tree.install_conf_d(example)
    text = testing.relocate((source or testing.example_config(example)).read_text(), tree, layout)
    return tree.write("/etc/squid/squid.conf", text + testing.test_directives(layout))


def assert_parses(layout: SquidLayout, config: Path) -> str:
    result = testing.parse(layout, config)
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"squid -k parse {config} failed ({result.returncode}):\n{output}"
    )
    assert "FATAL" not in output and "ERROR" not in output, output
    return output


@pytest.mark.parametrize("example", testing.EXAMPLES)
def test_example_parses(example: str, tree: testing.ImageTree, layout: SquidLayout) -> None:
    assert_parses(layout, prepared(example, tree, layout))


def test_the_kubernetes_base_config_parses(tree: testing.ImageTree, layout: SquidLayout) -> None:
    assert_parses(layout, prepared("base", tree, layout, source=testing.BASE_CONFIG))


@pytest.mark.parametrize("example", ["domain-filtering", "ssl-bump"])
def test_the_conf_d_list_is_really_read(
    example: str, tree: testing.ImageTree, layout: SquidLayout
) -> None:
    """Without its conf.d list the example must not parse: the path in squid.conf is the one the list is mounted at."""
    config = prepared(example, tree, layout)
    shutil.rmtree(tree.path("/etc/squid/conf.d"))
    result = testing.parse(layout, config)
    output = result.stdout + result.stderr
    assert result.returncode != 0 or "ERROR" in output or "FATAL" in output, output
    assert "conf.d" in output, output


def test_a_broken_example_fails_the_same_check(
    tree: testing.ImageTree, layout: SquidLayout
) -> None:
    """The check above can fail: a typo in a directive is caught."""
    config = prepared("domain-filtering", tree, layout)
    config.write_text(
        config.read_text().replace(
            "http_access deny blocked_domains", "http_acces deny blocked_domains"
        )
    )
    result = testing.parse(layout, config)
    output = result.stdout + result.stderr
    assert result.returncode != 0 or "ERROR" in output or "FATAL" in output, output


def test_relocation_leaves_no_image_path_behind(
    tree: testing.ImageTree, layout: SquidLayout
) -> None:
    """Otherwise a passing parse could be reading the host's own /etc/squid."""
    for source in [*map(testing.example_config, testing.EXAMPLES), testing.BASE_CONFIG]:
        text = testing.relocate(source.read_text(), tree, layout)
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            for prefix in ("/etc/squid", "/var/lib/squid", "/var/run/squid", "/var/spool/squid"):
                assert (
                    f" {prefix}" not in line
                    and f"={prefix}" not in line
                    and f'"{prefix}' not in line
                ), line
