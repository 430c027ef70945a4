"""Which user Squid becomes when started as root, and when that is refused (real /etc/passwd)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from entrypoint.squid_config import ConfigError, parse_directives
from entrypoint.squid_user import compiled_default_user, effective_user, hand_over

DEBIAN_V = (
    "configure options:  '--build=x86_64-linux-gnu' '--with-default-user=proxy' '--enable-ssl-crtd'"
)


def test_compiled_default_user_comes_from_squid_v() -> None:
    assert compiled_default_user(DEBIAN_V) == "proxy"
    assert compiled_default_user("configure options:  '--with-default-user=squid'") == "squid"
    assert compiled_default_user("Squid Cache: Version 7.7") == "nobody"  # Squid's own default


def test_configured_user_wins_over_the_compiled_default() -> None:
    someone = next(p for p in pwd.getpwall() if p.pw_uid != 0)
    user = effective_user(
        parse_directives(f"cache_effective_user {someone.pw_name}\n"),
        "'--with-default-user=nosuch'",
    )
    assert user.pw_uid == someone.pw_uid


def test_root_effective_user_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"line 2: cache_effective_user root: Squid refuses to run as root"
    ):
        effective_user(
            parse_directives("\ncache_effective_user root\n", Path("/c/squid.conf")), DEBIAN_V
        )


@pytest.mark.parametrize("config", ["cache_effective_user nosuchuser42\n", ""])
def test_unknown_user_is_refused(config: str) -> None:
    version = "'--with-default-user=nosuchuser42'"
    with pytest.raises(ConfigError, match="nosuchuser42: no such user"):
        effective_user(parse_directives(config), version)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another UID needs root")
def test_hand_over_changes_the_owner_only(tmp_path: Path) -> None:
    (tmp_path / "db" / "certs").mkdir(parents=True)
    (tmp_path / "db" / "certs" / "index.txt").write_text("")
    os.chown(tmp_path / "db", 0, 0)
    hand_over([tmp_path / "db"], 4242, recursive=True)
    owners = {
        (p.stat().st_uid, p.stat().st_gid) for p in [tmp_path / "db", *(tmp_path / "db").rglob("*")]
    }
    assert owners == {(4242, 0)}
