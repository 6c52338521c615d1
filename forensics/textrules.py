"""The secret rules of ``forensics.redact`` over free text, in time linear in the text.

Each rule is an RE2 pattern run over the text's UTF-8 bytes (RE2 never backtracks: its time
is linear in the input by construction). What RE2 cannot say -- a look-behind, a look-ahead,
a conditional, a possessive group, Python's Unicode ``\\b`` -- is a check in Python on the
match RE2 found, which looks at a bounded part of it and, when it rejects the match, says
where the search goes on. So each text is scanned a bounded number of times per rule.

The rules give the same output as the Python ``re`` rules they replace (which took minutes
on a base64 value of 100 KB: a run of letters before the key word made them backtrack), on
every text without a blob. ``tests/redact_oracle.py`` keeps the old rules and
``tests/test_redaction_engine.py`` compares both on generated text. One difference is on
purpose: a **blob** (a run of at least ``BLOB_MIN`` base64/hex characters, with its ``=``
padding: an image, a PDF, a ``data:`` URL's payload) is kept or replaced as a unit. A key=value
pair whose key word sits inside a blob (``...pwdX==`` at the end of a base64 value read as
``pwdX`` = ``=``) is no secret, so it is not redacted; a blob that *is* a value
(``token=<blob>``) is replaced whole. JWTs, PEM keys and AWS key ids are found wherever their
own rules say, blob or not; a provider token (``ghp_``, ``xoxb-``, ``sk_live_``, ``AIza``) is
found unless it starts or ends strictly inside a blob: random base64 spells ``+AIza`` and 35
more key characters about once in 1.6 GB, and that is no key.

A set of all the patterns (one RE2 pass) tells which rules can match at all; a value no rule
can match -- nearly every blob -- costs that one pass.
"""
from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from typing import Callable

import re2
from re2 import _re2

UNANCHORED = _re2.RE2.Anchor.UNANCHORED
ANCHORED = _re2.RE2.Anchor.ANCHOR_START
_NO = (-1, -1)
BLOB_MIN = 256      # base64/hex characters in a run that make it a blob

# Python's \s on str (str.isspace): RE2's \s is ASCII-only. A test keeps this equal to re's.
WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
              "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
S = "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE)   # for use inside [...]
# Under re.IGNORECASE Python also folds i/I with dotless ı and dotted İ; RE2 does not.
I = "[iI\\x{130}\\x{131}]"
FOLD_I = "\\x{130}\\x{131}"  # added to case-insensitive classes that hold letters
# The value of a key=value pair: quoted, up to the closing quote; bare, up to a space,
# separator or bracket.
QUOTED = "[^\"'\\\\\\n]+"
BARE = f"[^{S}\"'\\\\&,;{{}}()\\[\\]<>]+"

_OPTIONS = re2.Options()
_OPTIONS.max_mem = 64 << 20   # room for the DFA of the key=value rule (else RE2 falls back to its NFA)


def compile_re2(pattern: str):
    rx = _re2.RE2(pattern.encode("utf-8"), _OPTIONS)
    if not rx.ok():
        raise ValueError(f"RE2 cannot compile {pattern!r}: {rx.error().decode()}")
    return rx


def fold_i(words: str) -> str:
    """Our own word lists (letters, ``(?:``, ``|``, ``[-_]``) with Python's case folding of i."""
    return re.sub("[iI]", lambda m: I, words)


# ---- Python's \b next to a match ----------------------------------------------------------------
# RE2's \b is ASCII: it sees a boundary between "é" and "A", Python does not. Every \b of the
# rules sits next to an ASCII letter or digit of the match, so RE2 finds a superset; these
# drop the matches Python would not make.

def _char_before(b: bytes, i: int) -> str:
    j = i - 1
    while j > 0 and 0x80 <= b[j] < 0xC0 and i - j < 4:
        j -= 1
    return b[j:i].decode("utf-8", "replace")


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def unicode_boundary_before(b: bytes, i: int) -> bool:
    return i == 0 or b[i - 1] < 0x80 or not _is_word(_char_before(b, i))


def unicode_boundary_after(b: bytes, i: int) -> bool:
    if i >= len(b) or b[i] < 0x80:
        return True
    n = 2 if b[i] < 0xE0 else 3 if b[i] < 0xF0 else 4
    return not _is_word(b[i:i + n].decode("utf-8", "replace"))


# ---- blobs ------------------------------------------------------------------------------------
_BLOB = compile_re2(f"[A-Za-z0-9+/_-]{{{BLOB_MIN}}}[A-Za-z0-9+/_-]*={{0,2}}")
_BLOBISH = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-=")


class Blobs:
    """The blobs of one text, found on first need (one RE2 pass)."""

    def __init__(self, b: bytes):
        self.b = b
        self.spans: list[tuple[int, int]] | None = None

    def cut(self, i: int) -> int | None:
        """The end of the blob position ``i`` falls strictly inside, else None."""
        b = self.b
        if i <= 0 or i >= len(b) or b[i - 1] not in _BLOBISH or b[i] not in _BLOBISH:
            return None
        if self.spans is None:
            self.spans, pos = [], 0
            while True:
                s, e = _BLOB.Match(UNANCHORED, b, pos, len(b))[0]
                if s < 0:
                    break
                self.spans.append((s, e))
                pos = e
        k = bisect.bisect_right(self.spans, (i, len(b) + 1)) - 1
        if k >= 0 and self.spans[k][0] < i < self.spans[k][1]:
            return self.spans[k][1]
        return None


# ---- the rules ----------------------------------------------------------------------------------

@dataclass
class Rule:
    """One text rule: ``pattern`` finds candidates; ``decide(b, spans)`` returns
    ``(end, replacement, replaced)`` for a match to rewrite (the text from the match start to
    ``end`` becomes ``replacement``; ``replaced`` is the span of the secret itself) or
    ``(resume, None, None)`` for a candidate the rule does not take (search again from
    ``resume``)."""
    name: str
    pattern: str
    decide: Callable
    whole_blobs: bool = False   # a secret may not start or end inside a blob

    def __post_init__(self):
        self.rx = compile_re2(self.pattern)
        self.groups = {n.decode(): i for n, i in self.rx.NamedCapturingGroups()}


def _g(rule: Rule, sp, name: str) -> tuple[int, int]:
    return sp[rule.groups[name]]


def _whole(label: bytes, start_b: bool = False, end_b: bool = False):
    """A match replaced by ``label`` (with Python's \\b at its start and/or end)."""
    def decide(rule: Rule, b: bytes, sp):
        s, e = sp[0]
        if (start_b and not unicode_boundary_before(b, s)) or (end_b and not unicode_boundary_after(b, e)):
            return s + 1, None, None
        return e, label, (s, e)
    return decide


def _keep_then_redact(keep: str):
    """Group ``keep`` kept, the rest of the match replaced (Python's \\b at the start)."""
    def decide(rule: Rule, b: bytes, sp):
        s, e = sp[0]
        if not unicode_boundary_before(b, s):
            return s + 1, None, None
        ks, ke = _g(rule, sp, keep)
        return e, b[ks:ke] + b"[REDACTED]", (ke, e)
    return decide


def _url_password(rule: Rule, b: bytes, sp):
    """https://user:password@host -> https://user:[REDACTED]@host (not twice)."""
    s, e = sp[0]
    if not unicode_boundary_before(b, s):
        return s + 1, None, None
    ss, se = _g(rule, sp, "scheme")
    ps, pe = _g(rule, sp, "pw")
    if b[ps:pe] == b"[REDACTED]":
        return ps, None, None
    return e, b[ss:se] + b"[REDACTED]@", (ps, pe)


_Q = compile_re2("\\\\?[\"']")
_SCHEME = compile_re2(f"(?i)(?:bearer|bas{I}c|d{I}gest|token|ap{I}key|negot{I}ate)[{S}]+")
_QUOTED = compile_re2(QUOTED)
_BARE = compile_re2(BARE)


def _anchored(rx, b: bytes, pos: int) -> int | None:
    """End of ``rx`` matched at ``pos``, else None."""
    s, e = rx.Match(ANCHORED, b, pos, len(b))[0]
    return None if s < 0 else e


def _authorization(rule: Rule, b: bytes, sp):
    """``Authorization: Basic xxx`` / ``Bearer xxx`` / a bare token. The old rule:
    key, an optional quote, an optional scheme taken possessively, then a value that does not
    start with [REDACTED (quoted: up to the quote; bare: up to a separator)."""
    s, k = sp[0]
    if not unicode_boundary_before(b, s):
        return s + 1, None, None
    q_end = _anchored(_Q, b, k)
    v = q_end if q_end is not None else k
    scheme_end = _anchored(_SCHEME, b, v)
    v2 = scheme_end if scheme_end is not None else v
    if q_end is not None:
        if b[v2:v2 + 9].lower() == b"[redacted":
            return k, None, None
        end = _anchored(_QUOTED, b, v2)
    else:
        end = _anchored(_BARE, b, v2)
    if end is None:
        return k, None, None
    return end, b[s:v2] + b"[REDACTED]", (v2, end)


_ERROR_TAIL = re.compile(r"(?:error|exception)\Z", re.IGNORECASE)


def _key_value(rule: Rule, b: bytes, sp):
    """``key=value`` / ``key: value`` / ``"key":"value"``. Keys ending in Error/Exception are
    class names (``TokenExpiredError: jwt expired``); a quoted value already [REDACTED] stays."""
    s, e = sp[0]
    _, run_end = _g(rule, sp, "run")
    if _ERROR_TAIL.search(b[max(run_end - 40, 0):run_end].decode("utf-8", "ignore")):
        return run_end, None, None
    qs, qe = _g(rule, sp, "q")
    vs = qe if qs >= 0 else _g(rule, sp, "b")[0]
    if qs >= 0 and b[vs:vs + 9].lower() == b"[redacted":
        return run_end, None, None
    ks, ke = _g(rule, sp, "key")
    return e, b[ks:ke] + (b[qs:qe] if qs >= 0 else b"") + b"[REDACTED]", (vs, e)


TEXT_WORDS = ("pass(?:word|wd|phrase)?|secret|token|auth[-_]?header|cookie|api[-_]?key|apikey|"
              "access[-_]?key|private[-_]?key|credential|session[-_]?id|signature|pwd")


def key_value_pattern(words: str) -> str:
    """After the word the key may only go on camelCase or after a separator, so ``passed: 5``
    and ``secretary: Bob`` are left alone."""
    return (f"(?i)(?P<key>[\"']?(?P<run>[A-Za-z0-9_.\\-{FOLD_I}]*(?:{words})(?-i:[A-Z0-9_.-][A-Za-z0-9_.-]*)?)"
            f"\\\\?[\"']?[{S}]*[:=][{S}]*)(?:(?P<q>\\\\?[\"'])(?P<a>{QUOTED})|(?P<b>{BARE}))")


def secret_rules() -> list[Rule]:
    """The built-in rules, in the order they run (each on the output of the one before)."""
    return [
        Rule("private-key", "-----BEGIN [A-Z ]*PRIVATE KEY-----(?s:.)*?(?:-----END [A-Z ]*PRIVATE KEY-----|\\z)",
             _whole(b"[REDACTED:private-key]")),
        Rule("url-password", f"(?P<scheme>\\b[A-Za-z][A-Za-z0-9+.-]*://[^{S}:/?#@'\"\\\\]*:)"
                             f"(?P<pw>[^{S}/?#@'\"\\\\]+)@", _url_password),
        Rule("authorization", f"(?i)\\b(?:proxy-)?author{I}zat{I}on\\\\?[\"']?[{S}]*[:=][{S}]*", _authorization,
             whole_blobs=True),
        Rule("bearer", f"(?i)\\b(?P<key>bearer[{S}]+)[A-Za-z0-9\\-._~+/{FOLD_I}]{{6,}}=*", _keep_then_redact("key")),
        Rule("jwt", "\\beyJ[A-Za-z0-9_-]{6,}\\.eyJ[A-Za-z0-9_-]{6,}\\.[A-Za-z0-9_-]*",
             _whole(b"[REDACTED:jwt]", start_b=True)),
        Rule("aws-key-id", "\\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}\\b",
             _whole(b"[REDACTED:aws-key-id]", start_b=True, end_b=True)),
        Rule("token", "\\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}|xox[abposr]-[A-Za-z0-9-]{10,}|"
                      "sk_(?:live|test)_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_-]{35})",
             _whole(b"[REDACTED:token]", start_b=True), whole_blobs=True),
    ]


def key_value_rule(words: str) -> Rule:
    return Rule("key-value", key_value_pattern(words), _key_value, whole_blobs=True)


def unnamed(pattern: str) -> str:
    """The pattern without group names (several in one alternation)."""
    return re.sub(r"\(\?P<\w+>", "(?:", pattern)


# ---- secret-looking keys of a JSON text, without parsing it ---------------------------------------
# A key is always preceded by "{" or "," (and JSON whitespace); inside a string every quote is
# escaped, so "[{,] WS* \"" cannot start inside one. One RE2 search finds each key that holds a
# candidate word; the caller confirms the key and the value found after the colon is replaced
# in place (the rest of the text is left byte for byte as it was).
_JWS = "[ \\t\\n\\r]"
_JSTR = '"(?:[^"\\\\]|\\\\.)*"'
_JSON_STRING = compile_re2(_JSTR)
_JSON_SCALAR = compile_re2("-?(?:0|[1-9][0-9]*)(?:[.][0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null|NaN|-?Infinity")
_QUOTED_REDACTED = b'"[REDACTED]"'


class JsonKeys:
    """``key_words``: an RE2 alternation every secret key matches (a superset: ``is_secret``
    decides)."""

    def __init__(self, key_words: str, is_secret: Callable[[str], bool]):
        self.rx = compile_re2(f'(?i)[{{,]{_JWS}*"(?:[^"\\\\]|\\\\.)*?(?:{key_words})(?:[^"\\\\]|\\\\.)*"{_JWS}*:{_JWS}*')
        self.is_secret = is_secret

    def redact(self, b: bytes) -> tuple[bytes, int]:
        out: list[bytes] = []
        pos = last = n = 0
        end = len(b)
        while pos < end:
            s, e = self.rx.Match(UNANCHORED, b, pos, end)[0]
            if s < 0:
                break
            pos = e
            ks = b.index(b'"', s) + 1
            ke = e - 1
            while b[ke] != 0x22:  # back over the colon and whitespace to the key's closing quote
                ke -= 1
            raw = b[ks:ke]
            key = raw.decode("utf-8", "surrogatepass") if b"\\" not in raw else json.loads(b'"' + raw + b'"')
            if e >= end or b[e] in b"{[" or not self.is_secret(key):
                continue   # an object or list under a secret key: its own keys are looked at in turn
            rx = _JSON_STRING if b[e] == 0x22 else _JSON_SCALAR
            vs, ve = rx.Match(ANCHORED, b, e, end)[0]
            if vs < 0:
                continue
            pos = ve
            if b[vs:ve] == _QUOTED_REDACTED:
                continue
            out += [b[last:vs], _QUOTED_REDACTED]
            last = ve
            n += 1
        if not n:
            return b, 0
        out.append(b[last:])
        return b"".join(out), n


class TextRules:
    """Rules applied in order, each to the output of the one before, as ``re.subn`` would.
    ``extra`` patterns ride along in the same RE2 set (one pass answers both: which rules
    can match, and which extra patterns match), numbered after the rules."""

    def __init__(self, rules: list[Rule], extra: tuple[str, ...] = ()):
        self.rules = rules
        self.extra = extra
        self.gate = re2.Set.SearchSet(_OPTIONS) if rules or extra else None
        for p in [r.pattern for r in rules] + list(extra):
            self.gate.Add(p.encode("utf-8"))
        if self.gate is not None:
            self.gate.Compile()
        # One pattern any text a rule could rewrite matches (RE2 syntax: Arrow's pre-filter).
        self.any_pattern = "|".join(f"(?:{unnamed(r.pattern)})" for r in rules) or None

    def candidates(self, b: bytes) -> list[int]:
        return sorted(self.gate.Match(b) or ()) if self.gate is not None else []

    @staticmethod
    def encode(text: str) -> bytes:
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (never from Redis): carried through as such
            return text.encode("utf-8", "surrogatepass")

    def apply(self, text: str, b: bytes | None = None, hits: list[int] | None = None) -> tuple[str, int]:
        """``b``: the text's UTF-8 bytes and ``hits`` its candidates, when known already."""
        if not self.rules or not text:
            return text, 0
        if b is None:
            b = self.encode(text)
        todo = [j for j in (self.candidates(b) if hits is None else hits) if j < len(self.rules)]
        if not todo:
            return text, 0
        total = 0
        i = todo[0]
        while i < len(self.rules):
            b, n = self._one(self.rules[i], b)
            total += n
            later = [j for j in (self.candidates(b) if n else todo) if i < j < len(self.rules)]
            if not later:
                break
            i = later[0]
            todo = later
        return (b.decode("utf-8", "surrogatepass") if total else text), total

    @staticmethod
    def _one(rule: Rule, b: bytes) -> tuple[bytes, int]:
        out: list[bytes] = []
        pos = last = n = 0
        end = len(b)
        blobs = Blobs(b) if rule.whole_blobs else None
        match = rule.rx.Match
        while pos <= end:
            sp = match(UNANCHORED, b, pos, end)
            s = sp[0][0]
            if s < 0:
                break
            stop, repl, replaced = rule.decide(rule, b, sp)
            if repl is not None and blobs is not None:
                cut = blobs.cut(replaced[0]) or blobs.cut(replaced[1])
                if cut is not None:
                    stop, repl = cut, None
            if repl is None:
                pos = max(stop, s + 1)
                continue
            out.append(b[last:s])
            out.append(repl)
            last = pos = stop
            n += 1
        if not n:
            return b, 0
        out.append(b[last:])
        return b"".join(out), n
