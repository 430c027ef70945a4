"""Redaction of secrets in config lines, Squid's output and log records before they reach a log.

Two layers, both case-insensitive. Pattern rules find the value of every secret-bearing
directive and helper option Squid 7.7 documents, in any line (`Processing: cache_peer ...
login=<redacted>`). Squid also prints values without their option (`Logfile Daemon: opening
log /h/db/t/user/PASSWORD`) or in pieces (a quoted `login="u:two words"` gives `Ignoring
unknown cache_peer option 'words"'`), so every value the rules find in a config line PID 1
parses is remembered, and it and its pieces are replaced wherever they appear in any later
line. What is remembered is rebuilt, never accumulated: named sets (`remember_for`), one per
config Squid may still print (config_steps: the active, the previous and the last attempted).
Only values are replaced: directive names, files and line numbers stay.
"""

from __future__ import annotations

import re
import string
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

REDACTED = "<redacted>"
# Distinct strings one named set may hold: far above any real config (a cache_peer login gives
# 2-4); squid_config refuses a config with more, so a set never has to drop one.
MAX_REMEMBERED_PER_SET = 2_000

# A word as Squid splits a line (at " \t\r\n" only): a quoted run ("..." or '...', backslash
# escapes, unclosed: to the end of the line) is part of the word, whitespace and all.
_WORD = r"""(?:[^ \t\r\n"']|"(?:[^"\\]|\\[\s\S]?)*(?:"|$)|'(?:[^'\\]|\\[\s\S]?)*(?:'|$))+"""
_START = r"""(?<![^ \t\r\n"'(=,;])"""  # an option starts a word (or follows a quote or =)
# Words in an option's name that say credential; `pass` only as a word of its own (not bypass=).
_CREDENTIAL = (
    r"(?:passw|passph|pwd|secret|token|login|key|credential|community|(?<![a-z])pass(?![a-z]))"
)
# An option name: a run of name characters holding a credential word. The lookahead finds the
# word, then the run is taken whole and never given back (possessive): one pass over the run,
# where `[...]*?CREDENTIAL[...]*` retried the tail at every credential word in it (quadratic:
# 8 KiB of "--pwd" in a URL cost 0.9 s of PID 1's loop).
_NAME = rf"(?=[a-z0-9_.-]*?{_CREDENTIAL})[a-z0-9_.-]*+"
_FLAGS = re.IGNORECASE | re.ASCII  # ASCII case folding: what Squid and its helpers fold
_CREDENTIAL_RE = re.compile(_CREDENTIAL, _FLAGS)
_FIRST_WORD = re.compile(_WORD)
_QUOTES = "\"'"

# cache_peer login= keywords that are not credentials.
_LOGIN_KEYWORDS = frozenset({"PASS", "PASSTHRU", "PROXYPASS", "NEGOTIATE"})


def _whole(value: str) -> str:
    return value


def _first_word(value: str) -> str:
    match = _FIRST_WORD.match(value)
    return match.group(0) if match else value


def _credentials(value: str) -> str:
    """`Basic dXNlcjpwYXNz` -> the credentials, not the scheme word (remembering "Basic" would
    redact every "basic" in the log)."""
    value = value.strip().strip(_QUOTES)
    return value.split(None, 1)[1] if " " in value else value


def _every_match(pattern: re.Pattern[str], line: str) -> Iterator[re.Match[str]]:
    return pattern.finditer(line)


class _Rule(NamedTuple):
    pattern: re.Pattern[str]
    context: str = ""  # only for lines that contain this (lower case), e.g. a helper's name
    keep: Callable[[re.Match[str]], bool] = lambda match: False  # a match that is no secret
    remember: Callable[[str], str] = _whole  # what of the value to remember (secrets_in)
    # The pattern's matches, as finditer finds them; a rule whose failed tries would rescan the
    # rest of a word at every start (quadratic on a hostile line) finds them in one pass instead.
    finder: Callable[[re.Pattern[str], str], Iterator[re.Match[str]]] = _every_match


def _value(match: re.Match[str]) -> tuple[int, int]:
    """The span of the secret: group v or w, whichever matched something."""
    groups = match.groupdict()
    return match.span("v") if groups.get("v") else match.span("w") if groups.get("w") else (0, 0)


_STRETCH = re.compile(r"[^ \t\r\n]+")
_URL_START = re.compile(r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*+://[^ \t\r\n/?#@:\"']*+:", _FLAGS)
_DAEMON_START = re.compile(r"(?<![a-z0-9])daemon:|logfile daemon: (?:opening|closing) log ", _FLAGS)
_BLANK = re.compile(r"[ \t\r\n]")


def _url_matches(pattern: re.Pattern[str], line: str) -> Iterator[re.Match[str]]:
    """finditer's matches of the unquoted URL rule, in one pass: its value runs to the last @ of
    the word, so a word's first URL start before that @ is its only match (and a word without
    one has none: finditer would rescan the word from every `a://` in it)."""
    for word in _STRETCH.finditer(line):
        at = line.rfind("@", word.start(), word.end())
        if at < 0:
            continue
        start = _URL_START.search(line, word.start(), at)
        if start is not None:
            match = pattern.match(line, start.start())
            if match is not None:
                yield match


def _daemon_matches(pattern: re.Pattern[str], line: str) -> Iterator[re.Match[str]]:
    """finditer's matches of the daemon-path rule, in one pass: when a `daemon:` start fails (fewer
    than five / before the next blank), every later `daemon:` before that blank fails too and is
    not tried (finditer would rescan the rest of the word from each)."""
    position, hopeless_until = 0, -1
    while (start := _DAEMON_START.search(line, position)) is not None:
        plain = start.group()[0] in "dD"  # the `daemon:` form, not the `logfile daemon:` one
        if plain and start.start() < hopeless_until:
            position = start.start() + 1
            continue
        match = pattern.match(line, start.start())
        if match is not None:
            yield match
            position = match.end()
            continue
        if plain:
            blank = _BLANK.search(line, start.end())
            hopeless_until = blank.start() if blank else len(line)
        position = start.start() + 1


def _keeps_path_or_keyword(match: re.Match[str]) -> bool:
    name = match.group("n").lower()
    start, end = _value(match)
    value = match.string[start:end]
    if name.endswith("login") and value.upper() in _LOGIN_KEYWORDS:
        return True
    # A key *file* (tls-key=/etc/k.pem) names a file, not its content: the operator needs it.
    says_only_key = "key" in name and _CREDENTIAL_RE.search(name.replace("key", " ")) is None
    return says_only_key and value.startswith("/")


def _keeps_secret_file(match: re.Match[str]) -> bool:
    """-W names a file holding the bind password (LDAP helpers), except in ext_edirectory_userip_acl."""
    start, _ = _value(match)
    return (
        match.group("f") == "W"
        and match.string.startswith("/", start)
        and "edirectory_userip" not in match.string.lower()
    )


_RULES = (
    # name=value: login=, password=, --bindPassword=, client_secret=, api_key=, DSN attributes.
    _Rule(
        re.compile(rf"(?<![a-z0-9_.-])(?P<n>{_NAME})=(?P<v>{_WORD})", _FLAGS),
        keep=_keeps_path_or_keyword,
    ),
    # --password VALUE, -bind_password VALUE (Getopt::Long and friends take the next word too).
    _Rule(
        re.compile(rf"{_START}(?P<n>--?{_NAME})[ \t]++(?P<v>{_WORD})", _FLAGS),
        keep=_keeps_path_or_keyword,
    ),
    # Getopt::Long abbreviations (basic_db_auth, ext_sql_session_acl): --pa ... --password, --ds(n).
    _Rule(
        re.compile(
            rf"{_START}--?(?:pa(?:s(?:s(?:w(?:o(?:r(?:d)?)?)?)?)?)?|dsn?)(?:=(?P<v>{_WORD})|[ \t]++(?P<w>{_WORD}))",
            _FLAGS,
        )
    ),
    # -w PASSWORD / -wPASSWORD (basic_ldap_auth, ext_ldap_group_acl, digest_*_auth, basic_radius_auth);
    # -W is a password file there (kept when it is a path) but the password in ext_edirectory_userip_acl.
    _Rule(
        re.compile(rf"{_START}-(?P<f>[wW])(?:(?P<v>{_WORD})|[ \t]++(?P<w>{_WORD}))"),
        keep=_keeps_secret_file,
    ),
    # ext_edirectory_userip_acl: any flag cluster with W takes the next word as the password.
    _Rule(
        re.compile(rf"{_START}-(?=[a-z0-9]*?w)[a-z0-9]*+[ \t]++(?P<v>{_WORD})", _FLAGS),
        context="edirectory_userip",
    ),
    # ext_kerberos_ldap_group_acl -p PASSWORD (getopt: -dpX, -d -p X).
    _Rule(
        re.compile(rf"{_START}-[diasnh]*+p(?:(?P<v>{_WORD})|[ \t]++(?P<w>{_WORD}))"),
        context="kerberos_ldap_group",
    ),
    # scheme://user:PASSWORD@host: the password runs to the last @ of the word (it may hold / : @),
    # or of the quoted run the URL starts.
    _Rule(
        re.compile(
            r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://[^ \t\r\n/?#@:\"']*:(?P<v>[^ \t\r\n]*)@", _FLAGS
        ),
        finder=_url_matches,
    ),
    _Rule(
        re.compile(
            r"(?P<q>[\"'])[a-z][a-z0-9+.-]*://[^ \t\r\n/?#@:\"']*:(?P<v>(?:(?!(?P=q)).)*)@", _FLAGS
        )
    ),
    # log_db_daemon's DSN as a log path: daemon:/host/database/table/user/PASSWORD (all after the
    # fifth /); Squid also prints it without `daemon:` when it starts the daemon.
    _Rule(
        re.compile(
            rf"(?:(?<![a-z0-9])daemon:|logfile daemon: (?:opening|closing) log )(?:[^/ \t\r\n]*+/){{5}}(?P<v>{_WORD})",
            _FLAGS,
        ),
        finder=_daemon_matches,
    ),
    _Rule(
        re.compile(r"(?P<q>[\"'])daemon:(?:(?:(?!(?P=q))[^/])*/){5}(?P<v>(?:(?!(?P=q)).)*)", _FLAGS)
    ),
    # A directive whose own name says credential: all its arguments (cachemgr_passwd SECRET all;
    # acl NAME snmp_community SECRET). Squid-style names only (a word with `_`).
    _Rule(
        re.compile(
            r"(?<![^ \t\r\n:])(?=[a-z0-9]*+_)(?=[a-z][a-z0-9_]*?(?:passw|secret|community))[a-z][a-z0-9_]*+[ \t]++(?P<v>[^ \t\r\n].*)$",
            _FLAGS,
        ),
        remember=_first_word,
    ),
    # request_header_add Authorization "Basic ..." / a dumped `Proxy-Authorization: Basic ...`.
    _Rule(
        re.compile(
            rf"(?<![a-z0-9-])(?:proxy-)?authorization(?::[ \t]*(?P<v>.+)|[ \t]++(?P<w>{_WORD}))",
            _FLAGS,
        ),
        remember=_credentials,
    ),
)

# Cheap pre-check: a line holds none of these (lower case) -> no rule can match it.
_TRIGGERS = (
    "pass",
    "pwd",
    "secret",
    "token",
    "login",
    "key",
    "credential",
    "community",
    "-pa",
    "-ds",
    "-w",
    "edirectory_userip",
    "kerberos_ldap_group",
    "@",
    "daemon",
    "authorization",
)

_remembered: dict[str, frozenset[str]] = {}  # name -> its strings (remember_for)
_remembering = threading.Lock()  # configs may be parsed off the event loop (reload)

# The pre-check's piece of each remembered value: this many characters (fewer only when the
# value is shorter), starting at its rarest character in log text (see _RARITY).
ANCHOR_LENGTH = 6


class _Registry(NamedTuple):
    # One casefolded piece of each value: a line whose casefold holds none holds no remembered
    # value. A trie regex starting with rare characters: one C-level scan whatever their number.
    anchors: re.Pattern[str] | None
    pattern: re.Pattern[str] | None


# Replaced whole (one assignment), so a thread that logs never sees anchors and pattern disagree;
# rebuilt when first needed after a set changed (a config with many secrets compiles once).
_registry = _Registry(None, None)
_registry_stale = False


def _has_trigger(folded: str) -> bool:
    for trigger in _TRIGGERS:
        if trigger in folded:
            return True
    return False


def _rule_matches(line: str, folded: str) -> Iterator[tuple[int, int, _Rule]]:
    if not _has_trigger(folded):
        return
    yield from _all_rule_matches(line, folded)


def _all_rule_matches(line: str, folded: str) -> Iterator[tuple[int, int, _Rule]]:
    for rule in _RULES:
        if rule.context and rule.context not in folded:
            continue
        for match in rule.finder(rule.pattern, line):
            start, end = _value(match)
            if end > start and not rule.keep(match):
                yield start, end, rule


def _current_registry() -> _Registry:
    if _registry_stale:
        _compile_remembered()
    return _registry


def _may_hold_remembered(folded: str) -> bool:
    registry = _current_registry()
    return registry.anchors is not None and registry.anchors.search(folded) is not None


def needs_redaction(folded: str) -> bool:
    """Whether redaction may change a text whose casefold is `folded`: one line, or many joined
    (a line's triggers are in any text holding the line). False only when the text holds no
    rule's trigger word and no remembered value's hint: then every line of it is left as it is.
    The fast path of the log relay; a property test holds it to never skip a line `redact`'s
    full work would change."""
    return _has_trigger(folded) or _may_hold_remembered(folded)


def _remembered_spans(line: str) -> Iterator[tuple[int, int]]:
    pattern = _current_registry().pattern
    if pattern is not None:
        for match in pattern.finditer(line):
            yield match.span()


def _replace(line: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return line
    spans.sort()
    pieces: list[str] = []
    position = 0
    for start, end in spans:
        if start < position:  # overlapping: one replacement covers both
            if end > position:
                position = end
            continue
        pieces.extend((line[position:start], REDACTED))
        position = end
    pieces.append(line[position:])
    return "".join(pieces)


def full_redaction(line: str) -> str:
    """`line` redacted by every rule and every remembered value, no pre-check skipping any: the
    reference the fast path (needs_redaction) is tested against."""
    folded = line.casefold()
    spans = [(start, end) for start, end, _ in _all_rule_matches(line, folded)]
    return _replace(line, [*spans, *_remembered_spans(line)])


def redact(line: str) -> str:
    """`line` with credential values (by the rules, and every remembered one) replaced by <redacted>."""
    # casefold, not lower: it is per character (lower() turns a capital sigma into its final or non-final form by context),
    # so a value's casefold is in the line's whenever the value is in the line in any ASCII case.
    if not needs_redaction(line.casefold()):
        return line
    return full_redaction(line)


def redact_text(text: str) -> str:
    """Every line of `text` redacted (line structure kept)."""
    return "\n".join(redact(line) for line in text.split("\n"))


def might_redact(text: str) -> bool:
    """False only when redact() leaves `text` and every piece of it unchanged: redact's own
    pre-checks (a rule's trigger, a remembered value's hint) find nothing in it. casefold works
    per character, so a piece's fold is in the whole's. For callers with many small values (a
    JSON access line): one check instead of one redact() per value."""
    return needs_redaction(text.casefold())


# -- remembered values -------------------------------------------------------------------------
_PIECE_SEPARATORS = re.compile(r"[ \t\r\n,;/]+")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] in _QUOTES and value[-1] == value[0]:
        return value[1:-1]
    return value.strip(_QUOTES)


def secret_strings(value: str) -> list[str]:
    """What to remember of one secret value: itself, its part after the first `:` (user:password)
    and their pieces split at whitespace , ; and / (Squid prints some of those alone)."""
    value = _unquote(value)
    wholes = [value]
    if ":" in value:
        wholes.append(value.split(":", 1)[1])
    strings = list(wholes)
    for whole in wholes:
        strings.extend(piece.strip(_QUOTES) for piece in _PIECE_SEPARATORS.split(whole))
    return [
        s
        for s in dict.fromkeys(strings)
        if s and REDACTED.lower() not in s.lower() and _worth_remembering(s)
    ]


def _worth_remembering(piece: str) -> bool:
    # Short punctuation ("-", "..") would redact Squid's own field separators everywhere.
    return len(piece) >= 4 or any(ch.isalnum() for ch in piece)


def secrets_in(line: str) -> list[str]:
    """Every secret string the rules find in `line` (a config line), with its pieces: what to
    remember of it (squid_config collects them per config, config_steps hands them to remember_for)."""
    found: list[str] = []
    outer_end = -1
    # The longest value first where several start at one place (a quoted URL's password, not the
    # part before its first @ that the unquoted rule sees).
    for start, end, rule in sorted(
        _rule_matches(line, line.casefold()), key=lambda match: (match[0], -match[1])
    ):
        if (
            start < outer_end
        ):  # inside another value (password= in a quoted --dsn): only up to its end
            end = min(end, outer_end)
        else:
            outer_end = end
        found.extend(secret_strings(rule.remember(line[start:end])))
    return list(dict.fromkeys(found))


def remember_for(name: str, strings: Iterable[str]) -> None:
    """Remember `strings` under `name` instead of what was remembered under it: every string
    of every set is redacted in any later line, until its set is replaced. Never drops one (a
    config with more than MAX_REMEMBERED_PER_SET is refused where it is read)."""
    global _registry_stale
    remembered = frozenset(strings)
    with _remembering:
        if _remembered.get(name, frozenset()) != remembered:
            _remembered[name] = remembered
            _registry_stale = True


def remembered_for(name: str) -> frozenset[str]:
    """What is remembered under `name` (empty when nothing)."""
    return _remembered.get(name, frozenset())


def remembered_count() -> int:
    """Distinct strings remembered over all sets."""
    return len(_all_remembered())


def _all_remembered() -> list[str]:
    return list(dict.fromkeys(string for strings in _remembered.values() for string in strings))


def forget_secrets() -> None:
    """Forget every remembered value (tests)."""
    global _registry, _registry_stale
    with _remembering:
        _remembered.clear()
        _registry, _registry_stale = _Registry(None, None), False


def _literal(string: str) -> str:
    # A byte Python could not decode: U+FFFD in the config text, a surrogate in a relayed line.
    return "[\ufffd\udc80-\udcff]+".join(re.escape(part) for part in string.split("\ufffd"))


def _hint(string: str) -> str:
    return max(string.split("\ufffd"), key=len).casefold()


def _compile_remembered() -> None:
    global _registry, _registry_stale
    with _remembering:
        if _registry_stale:
            _registry, _registry_stale = _build_registry(_all_remembered()), False


def _build_registry(remembered: list[str]) -> _Registry:
    """Longer values match anywhere; short ones (under 4 characters) only as a word of their own."""
    if not remembered:
        return _Registry(None, None)
    remembered = list(dict.fromkeys(form for s in remembered for form in _forms(s)))
    ordered = sorted(remembered, key=len, reverse=True)
    long = "|".join(_literal(s) for s in ordered if len(s) >= 4)
    short = "|".join(_literal(s) for s in ordered if len(s) < 4)
    alternatives = [f"(?:{long})"] if long else []
    if short:
        alternatives.append(rf"(?<![a-z0-9])(?:{short})(?![a-z0-9])")
    pattern = re.compile("|".join(alternatives), _FLAGS)
    anchors = re.compile(_trie({_anchor(_hint(s)) for s in remembered}))
    return _Registry(anchors, pattern)


# What Squid writes as it is in a URL (RFC 3986's unreserved and reserved characters, `%`):
# anything else in a remembered value may reach a log percent-encoded (the access log's URL).
_ALNUM = frozenset(string.ascii_letters + string.digits)
_URL_AS_IS = _ALNUM | frozenset("-._~:/?#[]@!$&'()*+,;=%")


def _percent_encoded(value: str, as_is: frozenset[str]) -> str:
    return "".join(
        char
        if char in as_is
        else "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogateescape"))
        for char in value
    )


def _forms(value: str) -> list[str]:
    """A remembered value as it may appear in a line: itself, and percent-encoded as a URL
    carries it (only what a URL cannot hold, or every character not alphanumeric); the hex
    digits match in either case (the pattern folds ASCII case)."""
    forms = [value]
    for as_is in (_URL_AS_IS, _ALNUM):
        encoded = _percent_encoded(value, as_is)
        if encoded not in forms:
            forms.append(encoded)
    return forms


# Characters of Squid's access and cache.log lines (casefolded), most frequent first: a value's
# anchor starts at its character latest in this list (absent: rarest), so the anchors' regex
# tries a match only where the line has such a character (sre scans for its first characters).
_RARITY = " 0123456789./:-etaoinsrhdlcpmu_gwfybv|=&?kx@jqz"


def _anchor(hint: str) -> str:
    """The piece of `hint` (ANCHOR_LENGTH characters, or all of a shorter one) that starts at
    its rarest character: any piece will do, as a line holding the hint holds each of its pieces."""
    size = min(ANCHOR_LENGTH, len(hint))
    start = max(
        range(len(hint) - size + 1),
        key=lambda index: _RARITY.find(hint[index]) % (len(_RARITY) + 1),
    )
    return hint[start : start + size]


_TrieNode = dict[str, "_TrieNode"]  # a character -> what follows it; "" -> a piece ends


def _trie(pieces: set[str]) -> str:
    """A regex matching any of `pieces` (exact, case-sensitive), as a trie: a C-level scan whose
    cost grows with the line, hardly with the number of pieces (an alternation tries each)."""
    root: _TrieNode = {}
    for piece in pieces:
        node = root
        for char in piece:
            node = node.setdefault(char, {})
        node[""] = {}
    return _trie_branch(root)


def _trie_branch(node: _TrieNode) -> str:
    if "" in node:  # a piece ends here: what follows is no longer needed
        return ""
    branches = [re.escape(char) + _trie_branch(child) for char, child in sorted(node.items())]
    return branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
