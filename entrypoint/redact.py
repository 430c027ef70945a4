"""Redaction of secrets in config lines and Squid output before they reach a log.

Squid echoes config lines verbatim (`Processing: cache_peer ... login=user:pass`, `Bungled
... line 3: ...`), so every line the entrypoint prints from Squid or from a config goes
through `redact`. Only values are replaced: the directive name, file and line number stay.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

# cache_peer login= keywords that are not credentials.
_LOGIN_KEYWORDS = frozenset({"PASS", "PASSTHRU", "PROXYPASS", "NEGOTIATE"})

# name=value where the name says credential: login=, password=, *passw*, *secret*, *key*, *token*.
_SECRET_OPTION = re.compile(
    r"""(?P<name>(?<![\w.-])-{0,2}[\w.-]*(?:login|passw|secret|key|token)[\w.-]*=)(?P<value>"[^"]*"|'[^']*'|[^\s,;]+)""",
    re.IGNORECASE,
)
# scheme://user:password@host -> scheme://user:<redacted>@host
_URL_USERINFO = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s/:@]*:)(?P<value>[^\s/]*)@", re.IGNORECASE)
# A directive whose own name says credential (cachemgr_passwd SECRET all): every argument.
# Squid-style names only (a word with `_`, at the start or after whitespace or `:`), so
# prose such as "password file" or a path like /etc/squid/passwd is left alone.
_SECRET_DIRECTIVE = re.compile(
    r"(?P<name>(?<![^\s:])(?=[a-z0-9]*_)[a-z][a-z0-9_]*(?:passw|secret)[a-z0-9_]*)(?P<gap>\s+)(?P<value>\S.*)$",
    re.IGNORECASE,
)
# Helper flags that take a password as the next word (basic_ldap_auth/ext_ldap_group_acl -w).
_PASSWORD_FLAG = re.compile(r"(?P<name>(?<!\S)-w\s+)(?P<value>\S+)")


def _option(match: re.Match[str]) -> str:
    name, value = match.group("name"), match.group("value")
    if name.lower().endswith("login=") and value.upper() in _LOGIN_KEYWORDS:
        return match.group(0)
    # A key *file* path names a file, not its content, and is what an operator needs to see.
    if "key" in name.lower() and "passw" not in name.lower() and "secret" not in name.lower() and value.startswith("/"):
        return match.group(0)
    return name + REDACTED


def redact(line: str) -> str:
    """`line` with credential values replaced by <redacted>; idempotent."""
    line = _URL_USERINFO.sub(lambda m: m.group("head") + REDACTED + "@", line)
    line = _SECRET_OPTION.sub(_option, line)
    line = _PASSWORD_FLAG.sub(lambda m: m.group("name") + REDACTED, line)
    return _SECRET_DIRECTIVE.sub(lambda m: m.group("name") + m.group("gap") + REDACTED, line)


def redact_text(text: str) -> str:
    """Every line of `text` redacted (line structure kept)."""
    return "\n".join(redact(line) for line in text.split("\n"))
