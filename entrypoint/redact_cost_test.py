"""Redaction's cost per line is linear in its length, and the linear rules find what the backtracking ones did."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from entrypoint import redact as redact_module
from entrypoint.redact import forget_secrets
from entrypoint.redact_test import _ANY_LINE

# The rules as they were before they were made linear (issue 27): the reference the linear ones
# must agree with, match for match. Same order as redact._RULES.
_W = redact_module._WORD
_S = redact_module._START
_C = redact_module._CREDENTIAL
_N = rf"[a-z0-9_.-]*?{_C}[a-z0-9_.-]*"
_F = redact_module._FLAGS
_BACKTRACKING = (
    re.compile(rf"(?<![a-z0-9_.-])(?P<n>-{{0,2}}{_N})=(?P<v>{_W})", _F),
    re.compile(rf"{_S}(?P<n>--?{_N})[ \t]+(?P<v>{_W})", _F),
    re.compile(
        rf"{_S}--?(?:pa(?:s(?:s(?:w(?:o(?:r(?:d)?)?)?)?)?)?|dsn?)(?:=(?P<v>{_W})|[ \t]+(?P<w>{_W}))",
        _F,
    ),
    re.compile(rf"{_S}-(?P<f>[wW])(?:(?P<v>{_W})|[ \t]+(?P<w>{_W}))"),
    re.compile(rf"{_S}-[a-z0-9]*w[a-z0-9]*[ \t]+(?P<v>{_W})", _F),
    re.compile(rf"{_S}-[diasnh]*p(?:(?P<v>{_W})|[ \t]+(?P<w>{_W}))"),
    re.compile(r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://[^ \t\r\n/?#@:\"']*:(?P<v>[^ \t\r\n]*)@", _F),
    re.compile(r"(?P<q>[\"'])[a-z][a-z0-9+.-]*://[^ \t\r\n/?#@:\"']*:(?P<v>(?:(?!(?P=q)).)*)@", _F),
    re.compile(
        rf"(?:(?<![a-z0-9])daemon:|logfile daemon: (?:opening|closing) log )(?:[^/ \t\r\n]*/){{5}}(?P<v>{_W})",
        _F,
    ),
    re.compile(r"(?P<q>[\"'])daemon:(?:(?:(?!(?P=q))[^/])*/){5}(?P<v>(?:(?!(?P=q)).)*)", _F),
    re.compile(
        r"(?<![^ \t\r\n:])(?=[a-z0-9]*_)[a-z][a-z0-9_]*(?:passw|secret|community)[a-z0-9_]*[ \t]+(?P<v>[^ \t\r\n].*)$",
        _F,
    ),
    re.compile(
        rf"(?<![a-z0-9-])(?:proxy-)?authorization(?::[ \t]*(?P<v>.+)|[ \t]+(?P<w>{_W}))", _F
    ),
)

# What the rules look for, and what sits around it: a line of these exercises every rule's
# starts, failures and overlaps.
_TOKENS = (
    *("key", "pass", "passw", "PASSWD", "pwd", "secret", "Secret", "token", "login"),
    *("credential", "community", "authorization", "Proxy-Authorization", "x_secret"),
    *("cachemgr_passwd ", "edirectory_userip", "kerberos_ldap_group", "daemon:", "Daemon:"),
    *("logfile daemon: opening log ", "LOGFILE DAEMON: closing log ", "://", "a://", "u:p@"),
    *("-", "--", "-w", "-W", " -w", "-p", "-d", "-pa", "-ds", "=", ":", "/", "/", "/", "@", "@"),
    *('"', "'", " ", " ", "\t", "\r", "(", ",", ";", ".", "_", "\\", "a", "x", "1", "w"),
)
_TOKEN_LINES = st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=24).map("".join)
# Denser in what the one-pass finders (URL, daemon path) skip over: starts inside a word, words
# without @ or without five /, several starts per word.
_PATH_TOKENS = ("a://", "http://", "u", ":", "p", "@", "/", "/a/b/c/d/", " ", "(", "'", '"', "x")
_PATH_LINES = st.lists(
    st.sampled_from((*_PATH_TOKENS, "daemon:", "logfile daemon: opening log ")),
    min_size=2,
    max_size=16,
).map("".join)


def _backtracking_redaction(line: str) -> str:
    folded = line.casefold()
    spans = []
    for rule, pattern in zip(redact_module._RULES, _BACKTRACKING, strict=True):
        if rule.context and rule.context not in folded:
            continue
        for match in pattern.finditer(line):
            start, end = redact_module._value(match)
            if end > start and not rule.keep(match):
                spans.append((start, end))
    return redact_module._replace(line, spans)


@settings(max_examples=1000)  # cheap (short lines), and the rules' corners are many
@given(st.one_of(_TOKEN_LINES, _PATH_LINES, _ANY_LINE))
@example("x(http://u:p@host")  # a URL inside a word
@example("daemon:x daemon:/h/db/t/u/PW")  # a hopeless start, then a DSN after the blank
@example("a://x a://b:c@d")
def test_the_linear_rules_redact_exactly_what_the_backtracking_ones_did(line: str) -> None:
    """And the relay's fast path (no trigger: nothing to do) skips none of these lines it changes."""
    forget_secrets()
    full = redact_module.full_redaction(line)
    assert full == _backtracking_redaction(line)
    if full != line:
        assert redact_module.needs_redaction(line.casefold()), line


# One hostile repetition per rule family: each made a backtracking rule rescan the rest of the
# line from every start in it (8 KiB of "--pwd" in a URL cost PID 1's loop 0.9 s).
_HOSTILE = (
    "--pwd",  # name rules: a credential word at every step of one long name
    "keykey",
    "password=",
    "x_secret",  # directive-name rule
    "-wW",  # -w / edirectory flag clusters
    " -w ",
    "://a",  # URL rule: a start at every :// of one word without @
    "(daemon:",  # daemon path: a start at every daemon: of one word without five /
    "authorization ",
    "'a://b:",
    "edirectory_userip kerberos_ldap_group -dp -w ",
)
SMALL, LARGE = 2048, 16384  # 8x longer: linear costs 8x, a quadratic rule 64x
RATIO_BOUND = 24  # far above linear's 8 on a loaded machine, far below quadratic's 64


def _cpu_seconds(line: str, repeats: int, give_up: float) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        redact_module.full_redaction(line)
        best = min(best, time.process_time() - started)
        if best > give_up:
            break  # already over the bound: one try says so (a quadratic rule takes seconds)
    return best


@pytest.mark.parametrize("fragment", _HOSTILE)
def test_redaction_costs_linear_cpu_in_the_line_length(fragment: str) -> None:
    """PID 1 redacts every relayed line on its event loop: a line an outsider shapes (a URL in the
    access log) must cost at most linear time, never a rescan per position (quadratic)."""
    forget_secrets()
    small = fragment * (SMALL // len(fragment))
    large = fragment * (LARGE // len(fragment))
    small_cost = max(_cpu_seconds(small, 5, float("inf")), 1e-5)
    large_cost = _cpu_seconds(large, 3, RATIO_BOUND * small_cost)
    ratio = large_cost / small_cost
    assert ratio <= RATIO_BOUND, (
        f"{fragment!r}: {LARGE} characters cost {ratio:.0f}x {SMALL} characters' CPU"
        f" ({large_cost * 1e3:.1f} ms vs {small_cost * 1e3:.2f} ms): not linear"
    )
