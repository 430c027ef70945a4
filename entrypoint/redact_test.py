"""Redaction rules, and that each place printing Squid or config lines applies them."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from entrypoint.logs import configure_logging
from entrypoint.redact import redact, redact_text
from entrypoint.squid_process import problem_lines


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "Processing: cache_peer p parent 3128 0 login=admin:S3CR",
            "Processing: cache_peer p parent 3128 0 login=<redacted>",
        ),
        (
            "FATAL: Bungled squid.conf line 7: cache_peer p parent x 0 login=u:S3CR no-query",
            "FATAL: Bungled squid.conf line 7: cache_peer p parent x 0 login=<redacted> no-query",
        ),
        ("cache_peer p parent 3128 0 login=PASSTHRU", "cache_peer p parent 3128 0 login=PASSTHRU"),
        (
            "auth_param basic program /h --password=S3CR x",
            "auth_param basic program /h --password=<redacted> x",
        ),
        (
            "external_acl_type g %LOGIN /h --bind_password=S3CR",
            "external_acl_type g %LOGIN /h --bind_password=<redacted>",
        ),
        ("helper -D cn=a -w S3CR -h ldap", "helper -D cn=a -w <redacted> -h ldap"),
        (
            "x api_key=S3CR client-secret='S3 CR' token=S3CR",
            "x api_key=<redacted> client-secret=<redacted> token=<redacted>",
        ),
        ('x password="S3 CR" y', "x password=<redacted> y"),
        (
            "url_rewrite_program /h http://bob:S3@CR@host.example/p",
            "url_rewrite_program /h http://bob:<redacted>@host.example/p",
        ),
        ("line 4: cachemgr_passwd S3CR all", "line 4: cachemgr_passwd <redacted>"),
        # Key *files* are paths, not secrets; prose and ordinary options are left alone.
        (
            "http_port 3128 tls-cert=/a.pem tls-key=/b.key",
            "http_port 3128 tls-cert=/a.pem tls-key=/b.key",
        ),
        ("No password file /etc/squid/passwd given", "No password file /etc/squid/passwd given"),
        (
            "http_port 3128 ssl-bump generate-host-certificates=on",
            "http_port 3128 ssl-bump generate-host-certificates=on",
        ),
    ],
)
def test_redact_replaces_values_and_keeps_directive_and_line(line: str, expected: str) -> None:
    assert redact(line) == expected
    assert redact(expected) == expected  # idempotent: redacting twice changes nothing


def test_redact_text_keeps_the_lines() -> None:
    assert redact_text("a login=x:y\nb\n") == "a login=<redacted>\nb\n"


def test_problem_lines_are_redacted() -> None:
    output = "Processing: cache_peer p parent x 0 login=u:S3CR\nFATAL: Bungled s.conf line 2: cache_peer p parent x 0 login=u:S3CR\n"
    assert problem_lines(output) == [
        "FATAL: Bungled s.conf line 2: cache_peer p parent x 0 login=<redacted>"
    ]
    # Without a recognised error line the last lines are shown: redacted as well.
    assert problem_lines("Processing: cache_peer p parent 1 0 login=u:S3CR\n") == [
        "Processing: cache_peer p parent 1 0 login=<redacted>"
    ]


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.ERROR])
def test_every_log_record_is_redacted(monkeypatch: pytest.MonkeyPatch, level: int) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    log = configure_logging("DEBUG")
    try:
        log.log(level, "output:\n%s", "Processing: cache_peer p parent 1 0 login=u:S3CR")
        text = out.getvalue() + err.getvalue()
        assert "login=<redacted>" in text and "S3CR" not in text
    finally:
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)


# -- property-based: every form Squid 7.7 and its bundled helpers take a secret in ----------------
import string  # noqa: E402

from hypothesis import assume, example, given, settings, strategies as st  # noqa: E402

from entrypoint import redact as redact_module  # noqa: E402
from entrypoint.redact import REDACTED, forget_secrets, remember_secrets  # noqa: E402

# Characters a secret may hold wherever Squid takes it as one word (no whitespace, no quote).
_WORD_CHARS = string.ascii_letters + string.digits + "!#$%&()*+,-./:;<=>?@[]^_{|}~"
# Squid's echo prefixes: the line itself, the DEBUG parse echo, a rejected line, cache.log.
_ECHOES = (
    "{}",
    "Processing: {}",
    "FATAL: Bungled /etc/squid/squid.conf line 3: {}",
    "2026/12/07 01:12:15 kid1| ERROR: {}",
)


def _cases(word: str) -> st.SearchStrategy[str]:
    """`word` in any mix of upper and lower case."""
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(c.upper() if u else c.lower() for c, u in zip(word, upper))
    )


def _piece(chars: str = _WORD_CHARS) -> st.SearchStrategy[str]:
    # "xQ" makes every piece distinctive (never a word Squid prints by itself); the rest is anything.
    return st.text(alphabet=chars, min_size=3, max_size=12).map(lambda text: "xQ" + text)


_plain = _piece()  # one word: no whitespace, no quote
_no_slash = _piece(_WORD_CHARS.replace("/", ""))
_quoted_words = st.lists(_piece(_WORD_CHARS.replace("\\", "")), min_size=2, max_size=3)


@st.composite
def secret_lines(draw: st.DrawFn) -> tuple[str, list[str]]:
    """(a config line carrying a secret in one of its forms, the secret's pieces that must not leak)."""
    form = draw(
        st.sampled_from(
            [
                "login",
                "login_quoted",
                "option",
                "option_space",
                "getopt_long",
                "dsn",
                "cachemgr",
                "daemon",
                "flag_w",
                "flag_quoted",
                "edirectory",
                "kerberos",
                "url",
                "url_quoted",
                "snmp",
                "authorization",
                "wccp",
            ]
        )
    )
    secret = draw(_plain)
    if form == "login":
        keyword = draw(_cases("login"))
        return f"cache_peer peer.example parent 3128 0 no-query {keyword}=u:{secret} proxy-only", [
            secret
        ]
    if form == "login_quoted":
        words = draw(_quoted_words)
        quote = draw(st.sampled_from(['"', "'"]))
        keyword = draw(_cases("login"))
        value = f"{quote}u:{' '.join(words)}{quote}"
        return f"cache_peer peer.example parent 3128 0 no-query {keyword}={value} proxy-only", words
    if form == "option":  # name=value, the name in any case and with any dashes
        name = draw(
            st.sampled_from(
                [
                    "password",
                    "passwd",
                    "bindpassword",
                    "bind_password",
                    "client_secret",
                    "secret",
                    "token",
                    "api_key",
                    "pass",
                    "pwd",
                    "credentials",
                    "passphrase",
                ]
            )
        )
        dashes = draw(st.sampled_from(["", "-", "--"]))
        return (
            f"auth_param basic program /usr/lib/squid/helper {dashes}{draw(_cases(name))}={secret} -x",
            [secret],
        )
    if form == "option_space":  # --password SECRET, --bindPassword SECRET
        name = draw(
            st.sampled_from(["password", "bindpassword", "bind-password", "client_secret", "token"])
        )
        dashes = draw(st.sampled_from(["-", "--"]))
        return (
            f"auth_param basic program /usr/lib/squid/basic_db_auth {dashes}{draw(_cases(name))} {secret} --plaintext",
            [secret],
        )
    if form == "getopt_long":  # Getopt::Long: any unique abbreviation, any case, = or space
        name = "password"[: draw(st.integers(2, 8))]
        dashes = draw(st.sampled_from(["-", "--"]))
        gap = draw(st.sampled_from(["=", " "]))
        return (
            f"external_acl_type s %SRC /usr/lib/squid/ext_sql_session_acl {dashes}{draw(_cases(name))}{gap}{secret} --persist",
            [secret],
        )
    if form == "dsn":
        name = draw(_cases(draw(st.sampled_from(["dsn", "ds"]))))
        dsn = f"DBI:mysql:database=squid;host=db;password={secret}"
        quoted = draw(st.booleans())
        dsn = f'"{dsn}"' if quoted else dsn
        gap = draw(st.sampled_from(["=", " "]))
        return (
            f"auth_param basic program /usr/lib/squid/basic_db_auth --{name}{gap}{dsn} --user squid",
            [secret],
        )
    if form == "cachemgr":
        return f"{draw(_cases('cachemgr_passwd'))} {secret} info stats/objects", [secret]
    if (
        form == "daemon"
    ):  # log_db_daemon: /host/database/table/user/password (the password may hold /)
        password = draw(st.lists(_no_slash, min_size=1, max_size=3).map("/".join))
        return f"access_log daemon:/db.example/squid/log/logger/{password} squid", [password]
    if (
        form == "flag_w"
    ):  # -w SECRET, -wSECRET (basic_ldap_auth, ext_ldap_group_acl, basic_radius_auth)
        gap = draw(st.sampled_from(["", " ", "  ", "\t"]))
        helper = draw(
            st.sampled_from(
                ["basic_ldap_auth", "ext_ldap_group_acl", "basic_radius_auth", "digest_ldap_auth"]
            )
        )
        return (
            f"auth_param basic program /usr/lib/squid/{helper} -b dc=x -D cn=admin -w{gap}{secret} -h ldap",
            [secret],
        )
    if form == "flag_quoted":  # a quoted value is one word to the helper: redacted whole
        words = draw(_quoted_words)
        quote = draw(st.sampled_from(['"', "'"]))
        flag = draw(st.sampled_from(["-w ", "-w", "--password ", "--PASSWORD=", "-bindpassword "]))
        return (
            f"auth_param basic program /usr/lib/squid/helper {flag}{quote}{' '.join(words)}{quote} -x",
            words,
        )
    if form == "edirectory":  # -W SECRET, alone or in a flag cluster
        cluster = draw(st.sampled_from(["-W", "-ZW", "-W4", "-dPW"]))
        return (
            f"external_acl_type e %SRC /usr/lib/squid/ext_edirectory_userip_acl -b o=x -D cn=a {cluster} {secret} -H ldap",
            [secret],
        )
    if form == "kerberos":  # getopt -p: -p SECRET, -pSECRET, -dp SECRET
        flag = draw(st.sampled_from(["-p ", "-p", "-dp", "-di -p "]))
        return (
            f"external_acl_type k %LOGIN /usr/lib/squid/ext_kerberos_ldap_group_acl -g G -u ldapuser {flag}{secret} -l ldap://h",
            [secret],
        )
    if form == "url":  # user:password@ with any characters in the password, / : @ included
        scheme = draw(st.sampled_from(["http", "https", "icap", "ftp"]))
        return (
            f"url_rewrite_program /usr/lib/squid/rewriter {scheme}://bob:{secret}@host.example:8080/p x",
            [secret],
        )
    if form == "url_quoted":
        words = draw(_quoted_words)
        return (
            f'url_rewrite_program /usr/lib/squid/rewriter "http://bob:{" ".join(words)}@host.example/p" x',
            words,
        )
    if form == "snmp":
        return f"acl snmppublic {draw(_cases('snmp_community'))} {secret}", [secret]
    if form == "authorization":
        header = draw(_cases(draw(st.sampled_from(["Authorization", "Proxy-Authorization"]))))
        return f'request_header_add {header} "Basic {secret}" all', [secret]
    return f"wccp2_service dynamic 80 {draw(_cases('password'))}={secret}", [secret]


def _leaks(text: str, pieces: list[str]) -> list[str]:
    return [piece for piece in pieces if piece in text]


@given(secret_lines(), st.sampled_from(_ECHOES))
@example(("cache_peer p parent 3128 0 login=u:xQa,bcd", ["xQa,bcd"]), "{}")  # after , (issue 21)
@example(("cache_peer p parent 3128 0 LOGIN=u:xQS3CR", ["xQS3CR"]), "{}")
@example(("x --bindPassword=xQS3CR", ["xQS3CR"]), "{}")
@example(
    ("access_log daemon:/db.example/squid/log/logger/xQPASSWORD squid", ["xQPASSWORD"]),
    "Logfile: opening log {}",
)
def test_rules_never_let_a_secret_through(case: tuple[str, list[str]], echo: str) -> None:
    forget_secrets()
    line, pieces = case
    redacted = redact(echo.format(line))
    assert not _leaks(redacted, pieces), redacted
    # The directive name and the file and line number stay.
    directive = line.split()[0]
    assert directive in redacted and echo.split("{}")[0] in redacted
    assert redact(redacted) == redacted


_FRAGMENTS = (
    "ERROR: Ignoring unknown cache_peer option '{}'",
    "ERROR: Ignoring unknown cache_peer option '{}\"'",
    "Logfile Daemon: opening log /db.example/squid/log/logger/{}",
    "helper said: {} rejected",
    "{}",
)


@given(secret_lines(), st.sampled_from(_FRAGMENTS))
@example(  # found by the explore profile: two rules' values start at one place, the longer counts
    ('url_rewrite_program /h "http://bob:xQ0@0 xQ000@host.example/p" x', ["xQ0@0", "xQ000"]),
    "ERROR: Ignoring unknown cache_peer option '{}'",
)
def test_remembered_values_and_their_pieces_never_leak_alone(
    case: tuple[str, list[str]], fragment: str
) -> None:
    """Squid prints values without their option, or a quoted value's words one by one."""
    forget_secrets()
    line, pieces = case
    remember_secrets(line)
    try:
        for piece in [*pieces, " ".join(pieces)]:
            shown = redact(fragment.format(piece))
            assert not _leaks(shown, pieces), shown
    finally:
        forget_secrets()


@given(st.one_of(secret_lines().map(lambda case: case[0]), st.text(max_size=200)))
def test_precheck_never_skips_a_line_a_rule_matches(line: str) -> None:
    """The cheap pre-check (no trigger word: nothing to do) misses no line a rule would change."""
    matched = any(rule.pattern.search(line) for rule in redact_module._RULES)
    if matched:
        assert redact_module._has_trigger(line.casefold()), line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Squid 7.7 prints log_db_daemon's DSN without `daemon:` when it starts the daemon.
        (
            "Logfile Daemon: opening log /db.example/squid/log/logger/PW",
            "Logfile Daemon: opening log /db.example/squid/log/logger/<redacted>",
        ),
        # A log file path is no DSN (fewer than five /): kept.
        (
            "Logfile: opening log daemon:/var/log/squid/access.log",
            "Logfile: opening log daemon:/var/log/squid/access.log",
        ),
        # -W names the LDAP helpers' password *file*: kept; in ext_edirectory_userip_acl it is the password.
        (
            "/usr/lib/squid/basic_ldap_auth -D cn=a -W /etc/squid/ldap.secret",
            "/usr/lib/squid/basic_ldap_auth -D cn=a -W /etc/squid/ldap.secret",
        ),
        (
            "/usr/lib/squid/ext_edirectory_userip_acl -W /S3CR",
            "/usr/lib/squid/ext_edirectory_userip_acl -W <redacted>",
        ),
        # -p is a port elsewhere, the password only in ext_kerberos_ldap_group_acl.
        ("/usr/lib/squid/basic_ldap_auth -p 389", "/usr/lib/squid/basic_ldap_auth -p 389"),
        (
            "icap_service s reqmod_precache icap://h/ bypass=on",
            "icap_service s reqmod_precache icap://h/ bypass=on",
        ),
    ],
)
def test_redact_keeps_what_is_no_secret(line: str, expected: str) -> None:
    forget_secrets()
    assert redact(line) == expected


def test_a_remembered_value_is_replaced_anywhere_in_any_case() -> None:
    forget_secrets()
    try:
        remember_secrets("cachemgr_passwd Mgr-S3cret all")
        # cachemgr URLs carry the password after @: an access-log line holds it.
        assert (
            redact("GET cache_object://localhost/info@mgr-s3cret -")
            == f"GET cache_object://localhost/info@{REDACTED} -"
        )
        # Only the password is remembered, not the actions (else every "all" would go).
        assert redact("http_access deny all") == "http_access deny all"
    finally:
        forget_secrets()


def test_many_remembered_values_stay_cheap_and_all_match() -> None:
    """A config with more secrets than the pre-check takes: each is still redacted."""
    forget_secrets()
    try:
        for number in range(redact_module.MAX_HINTS * 3):
            remember_secrets(f"cachemgr_passwd Mgr{number:04d}pw menu")
        for number in (0, redact_module.MAX_HINTS * 3 - 1):
            assert (
                redact(f"GET cache_object://h/menu@Mgr{number:04d}pw")
                == f"GET cache_object://h/menu@{REDACTED}"
            )
    finally:
        forget_secrets()
