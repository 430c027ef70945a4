"""Redaction rules, and that each place printing Squid or config lines applies them."""

from __future__ import annotations

import io
import logging
import random
import string
import sys

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from entrypoint import redact as redact_module
from entrypoint.logs import configure_logging
from entrypoint.redact import (
    REDACTED,
    forget_secrets,
    redact,
    redact_text,
    remember_for,
    secrets_in,
)
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
        lambda upper: "".join(
            c.upper() if u else c.lower() for c, u in zip(word, upper, strict=True)
        )
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


def _remember(*config_lines: str) -> None:
    """What config_steps does with a config's lines, under a name of the tests' own."""
    remember_for("test", [secret for line in config_lines for secret in secrets_in(line)])


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
    _remember(line)
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
        _remember("cachemgr_passwd Mgr-S3cret all")
        # cachemgr URLs carry the password after @: an access-log line holds it.
        assert (
            redact("GET cache_object://localhost/info@mgr-s3cret -")
            == f"GET cache_object://localhost/info@{REDACTED} -"
        )
        # Only the password is remembered, not the actions (else every "all" would go).
        assert redact("http_access deny all") == "http_access deny all"
    finally:
        forget_secrets()


# Many remembered values: rotated cache_peer passwords, as token_urlsafe makes them (fixed here).
_MANY = [
    f"cache_peer parent.example 3128 0 login=proxyuser:Rot{number:04d}{word}"
    for number, word in enumerate(
        "".join(random.Random(number).choices(string.ascii_letters + string.digits + "-_", k=12))
        for number in range(500)
    )
]
_ACCESS = "1796627004.562     12 10.1.2.3 TCP_MISS/200 1532 GET http://example.com/some/path/x.js - HIER_DIRECT/93.184.216.34 application/javascript"


def test_many_remembered_values_keep_the_fast_path_and_all_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1000 remembered strings (500 rotations): an access line still takes the fast path (no
    full redaction at all, in a batch or alone), and every value is still redacted."""
    full_redactions = 0
    full_redaction = redact_module.full_redaction

    def counted(line: str) -> str:
        nonlocal full_redactions
        full_redactions += 1
        return full_redaction(line)

    monkeypatch.setattr(redact_module, "full_redaction", counted)
    forget_secrets()
    try:
        _remember(*_MANY)
        assert redact_module.remembered_count() == 1000
        assert safe_lines([_ACCESS] * 100) == [_ACCESS] * 100
        assert [redact(_ACCESS) for _ in range(100)] == [_ACCESS] * 100
        assert full_redactions == 0
        for config_line in (_MANY[0], _MANY[-1]):
            password = config_line.rsplit(":", 1)[1]
            assert (
                redact(f"GET http://h/menu@{password.upper()}") == f"GET http://h/menu@{REDACTED}"
            )
    finally:
        forget_secrets()


# -- the fast path (needs_redaction) against the full work: shared with the generator above -------
from entrypoint.log_text import escape_controls, safe_lines  # noqa: E402

# Lines the relay passes most: access-log lines, Squid's own, and anything at all.
_ORDINARY = st.sampled_from(
    [
        "1733550000.123      1 127.0.0.1 TCP_MISS/200 425 GET http://127.0.0.1:45678/obj - HIER_DIRECT/127.0.0.1 text/plain",
        "2026/12/07 03:40:00 kid1| Accepting HTTP Socket connections at conn3 local=[::]:3128 remote=[::] FD 12 flags=9",
        "1733550000.200      0 10.0.0.7 TCP_DENIED/403 3900 CONNECT example.com:443 - HIER_NONE/- text/html",
    ]
)
_ANY_LINE = st.one_of(
    secret_lines().map(lambda case: case[0]),
    st.tuples(secret_lines(), st.sampled_from(_FRAGMENTS)).map(
        lambda pair: pair[1].format(" ".join(pair[0][1]))
    ),
    _ORDINARY,
    st.text(max_size=200),
)


@given(st.lists(secret_lines(), max_size=3), _ANY_LINE)
def test_fast_path_never_skips_a_line_the_full_redaction_would_change(
    config: list[tuple[str, list[str]]], line: str
) -> None:
    """Remembered values from any config lines, then any line: the pre-check says "nothing to do"
    only for a line the full redaction (every rule, every remembered value) leaves as it is."""
    forget_secrets()
    try:
        _remember(*(config_line for config_line, _ in config))
        full = redact_module.full_redaction(line)
        if full != line:
            assert redact_module.needs_redaction(line.casefold()), line
        assert redact(line) == full
    finally:
        forget_secrets()


@given(st.lists(secret_lines(), max_size=2), st.lists(_ANY_LINE, min_size=1, max_size=6))
def test_a_batch_of_lines_is_each_line_made_safe(
    config: list[tuple[str, list[str]]], lines: list[str]
) -> None:
    """The relay's one look at all the lines that arrived together: the same lines as one by one."""
    forget_secrets()
    try:
        _remember(*(config_line for config_line, _ in config))
        assert safe_lines(lines) == [
            escape_controls(redact_module.full_redaction(line)) for line in lines
        ]
    finally:
        forget_secrets()


def _case_mixed(text: str, seed: int) -> str:
    chooser = random.Random(seed)
    return "".join(char.upper() if chooser.random() < 0.5 else char.lower() for char in text)


_MANY_SECRETS = [secret for line in _MANY for secret in secrets_in(line)]
# Lines holding one of the many remembered values (or a piece or a near miss), in any ASCII case.
_WITH_MANY = st.builds(
    lambda secret, cut, seed, fragment: fragment.format(_case_mixed(secret[cut:], seed)),
    st.sampled_from(_MANY_SECRETS),
    st.integers(0, 8),
    st.integers(0, 2**16),
    st.sampled_from([*_FRAGMENTS, _ACCESS.replace("x.js", "{}")]),
)


@given(st.lists(secret_lines(), max_size=2), st.one_of(_ANY_LINE, _WITH_MANY))
def test_fast_path_never_skips_a_line_with_many_remembered_values(
    config: list[tuple[str, list[str]]], line: str
) -> None:
    """As above, with the 1000 strings of 500 rotations remembered besides."""
    forget_secrets()
    try:
        remember_for("rotations", _MANY_SECRETS)
        _remember(*(config_line for config_line, _ in config))
        full = redact_module.full_redaction(line)
        if full != line:
            assert redact_module.needs_redaction(line.casefold()), line
        assert redact(line) == full
        assert safe_lines([_ACCESS, line]) == [_ACCESS, escape_controls(full)]
    finally:
        forget_secrets()


@pytest.mark.parametrize(
    "secret", ["Ab{c}De^Fg|Hi", "Pässwört1x", "with space:and%percent", "plain-ascii-Secret9"]
)
def test_a_remembered_value_is_redacted_percent_encoded_too(secret: str) -> None:
    """Squid logs URLs percent-encoded (the access log's URL, its request dump): a remembered
    value put in a URL appears encoded, in either hex case, and is replaced all the same."""
    from urllib.parse import quote

    forget_secrets()
    try:
        remember_for("test", [secret])
        for encoded in {quote(secret, safe=""), quote(secret, safe="/:@!$&'()*+,;=%"), secret}:
            for form in (encoded, encoded.lower()):
                line = f"1796627004.562 12 10.1.2.3 TCP_DENIED/403 0 GET http://h/cachemgr?{form} -"
                assert redact(line) == line.replace(form, REDACTED), form
    finally:
        forget_secrets()
