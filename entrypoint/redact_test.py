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
        ("Processing: cache_peer p parent 3128 0 login=admin:S3CR", "Processing: cache_peer p parent 3128 0 login=<redacted>"),
        ("FATAL: Bungled squid.conf line 7: cache_peer p parent x 0 login=u:S3CR no-query",
         "FATAL: Bungled squid.conf line 7: cache_peer p parent x 0 login=<redacted> no-query"),
        ("cache_peer p parent 3128 0 login=PASSTHRU", "cache_peer p parent 3128 0 login=PASSTHRU"),
        ("auth_param basic program /h --password=S3CR x", "auth_param basic program /h --password=<redacted> x"),
        ("external_acl_type g %LOGIN /h --bind_password=S3CR", "external_acl_type g %LOGIN /h --bind_password=<redacted>"),
        ("helper -D cn=a -w S3CR -h ldap", "helper -D cn=a -w <redacted> -h ldap"),
        ("x api_key=S3CR client-secret='S3 CR' token=S3CR", "x api_key=<redacted> client-secret=<redacted> token=<redacted>"),
        ('x password="S3 CR" y', "x password=<redacted> y"),
        ("url_rewrite_program /h http://bob:S3@CR@host.example/p", "url_rewrite_program /h http://bob:<redacted>@host.example/p"),
        ("line 4: cachemgr_passwd S3CR all", "line 4: cachemgr_passwd <redacted>"),
        # Key *files* are paths, not secrets; prose and ordinary options are left alone.
        ("http_port 3128 tls-cert=/a.pem tls-key=/b.key", "http_port 3128 tls-cert=/a.pem tls-key=/b.key"),
        ("No password file /etc/squid/passwd given", "No password file /etc/squid/passwd given"),
        ("http_port 3128 ssl-bump generate-host-certificates=on", "http_port 3128 ssl-bump generate-host-certificates=on"),
    ],
)
def test_redact_replaces_values_and_keeps_directive_and_line(line: str, expected: str) -> None:
    assert redact(line) == expected
    assert redact(expected) == expected  # idempotent: redacting twice changes nothing


def test_redact_text_keeps_the_lines() -> None:
    assert redact_text("a login=x:y\nb\n") == "a login=<redacted>\nb\n"


def test_problem_lines_are_redacted() -> None:
    output = "Processing: cache_peer p parent x 0 login=u:S3CR\nFATAL: Bungled s.conf line 2: cache_peer p parent x 0 login=u:S3CR\n"
    assert problem_lines(output) == ["FATAL: Bungled s.conf line 2: cache_peer p parent x 0 login=<redacted>"]
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
