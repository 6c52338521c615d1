"""The text rules as they were before issue 18 (Python ``re``, super-linear on long runs), kept
as the oracle the RE2 engine in ``forensics.redact`` must agree with on every input
without a blob (tests/test_redaction_engine.py). Not used by the product."""
from __future__ import annotations

import re

# Field names that look secret (JSON keys and the key of key=value in text).
SECRET_WORDS = (r"pass(?:word|wd|phrase)?|secret|token|authorization|auth[-_]?header|cookie|api[-_]?key|"
                r"apikey|access[-_]?key|private[-_]?key|credential|session[-_]?id|bearer|signature|^pwd$")
SECRET_KEY_RE = re.compile(SECRET_WORDS, re.IGNORECASE)
# The same words as they occur in text, for key=value pairs (Authorization and Bearer have
# rules of their own below).
_TEXT_WORDS = (r"pass(?:word|wd|phrase)?|secret|token|auth[-_]?header|cookie|api[-_]?key|apikey|"
               r"access[-_]?key|private[-_]?key|credential|session[-_]?id|signature|pwd")

# A cheap pre-filter run on raw JSON text (vectorized, case-insensitive, RE2 syntax):
# only rows with a key that might be secret are parsed and redacted.
SECRET_TEXT_RE = (
    r'"[^"]*(pass|secret|token|auth|cookie|api[-_]?key|key|cred|session|bearer|sign|pwd)[^"]*"\s*:'
)
# ... and on free text: anything a text rule below could match (RE2 syntax, case-insensitive).
# It must match whatever a rule below matches (the fuzz tests plant secrets to check).
TEXT_PREFILTER = (r"://[^\s/@]*:[^\s/@]*@|bearer|authoriz|eyj|a(?:kia|sia|bia|cca|gpa|ida|ipa|npa|nva|roa|pka|sca)|"
                  r"gh[pousr]_|github_pat_|xox[abposr]-|sk_live|sk_test|aiza|private[-_ ]?key|pass|secret|token|"
                  r"api[-_]?key|apikey|access[-_]?key|credential|session[-_]?id|signature|pwd|cookie|auth[-_]?header")

# The value of a key=value pair: inside quotes, up to the closing quote; bare, up to a
# space, separator or bracket. Never a value that is already [REDACTED] (so each rule is a
# fixed point) or a nested object.
_VALUE = r"(?P<q>\\?[\"'])?(?!\[REDACTED)(?(q)[^\"'\\\n]+|[^\s\"'\\&,;{}()\[\]<>]+)"
_KEEP = r"\g<key>\g<q>[REDACTED]"


def _key_value_rule(words: str) -> re.Pattern:
    """``key=value`` / ``key: value`` / ``"key":"value"`` where the key holds a secret word.
    After the word the key may only go on camelCase or after a separator, so ``passed: 5``
    and ``secretary: Bob`` are left alone; keys ending in Error/Exception are class names
    (``TokenExpiredError: jwt expired``)."""
    return re.compile(
        r"(?P<key>[\"']?[A-Za-z0-9_.-]*(?:" + words + r")(?-i:[A-Z0-9_.-][A-Za-z0-9_.-]*)?"
        r"(?<!error)(?<!exception)\\?[\"']?\s*[:=]\s*)" + _VALUE,
        re.IGNORECASE)


_TEXT_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
     "[REDACTED:private-key]"),
    # https://user:password@host -> https://user:[REDACTED]@host
    (re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@'\"\\]*:)(?!\[REDACTED\]@)[^\s/?#@'\"\\]+@"),
     r"\g<scheme>[REDACTED]@"),
    # Authorization: Basic xxx / Bearer xxx / a bare token
    (re.compile(r"(?P<key>\b(?:proxy-)?authorization\\?[\"']?\s*[:=]\s*)(?P<q>\\?[\"'])?"
                r"(?P<scheme>(?:bearer|basic|digest|token|apikey|negotiate)\s+)?+(?!\[REDACTED)"
                r"(?(q)[^\"'\\\n]+|[^\s\"'\\&,;{}()\[\]<>]+)", re.IGNORECASE), r"\g<key>\g<q>\g<scheme>[REDACTED]"),
    (re.compile(r"\b(?P<key>bearer\s+)(?!\[REDACTED)[A-Za-z0-9\-._~+/]{6,}=*", re.IGNORECASE), r"\g<key>[REDACTED]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*"), "[REDACTED:jwt]"),
    (re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}\b"),
     "[REDACTED:aws-key-id]"),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}|xox[abposr]-[A-Za-z0-9-]{10,}|"
                r"sk_(?:live|test)_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_-]{35})"), "[REDACTED:token]"),
]




def rules(fields: tuple[str, ...] = (), secrets: bool = True) -> list[tuple[re.Pattern, str]]:
    out = list(_TEXT_RULES) if secrets else []
    words = "|".join(([_TEXT_WORDS] if secrets else []) + [f"(?:{f.strip('^$') or f})" for f in fields])
    if words:
        out.append((_key_value_rule(words), _KEEP))
    return out


def text(value: str, fields: tuple[str, ...] = (), secrets: bool = True) -> tuple[str, int]:
    """The old ``Redaction.text`` without its pre-filter (which only ever skipped texts no rule
    matches)."""
    n = 0
    for pattern, repl in rules(fields, secrets):
        value, k = pattern.subn(repl, value)
        n += k
    return value, n


def _redact_keys(obj, key_re):
    n = 0
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and key_re.search(k) and not isinstance(v, (dict, list)) and v != "[REDACTED]":
                out[k] = "[REDACTED]"
                n += 1
            else:
                out[k], m = _redact_keys(v, key_re)
                n += m
        return out, n
    if isinstance(obj, list):
        items = []
        for v in obj:
            v2, m = _redact_keys(v, key_re)
            items.append(v2)
            n += m
        return items, n
    return obj, 0


def json_text(value: str, fields: tuple[str, ...] = ()) -> tuple[str, int]:
    """The old ``Redaction.json_text``: parse, walk every key, dump again, then the text rules."""
    import json
    key_re = re.compile("|".join([SECRET_WORDS] + [f"(?:{f})" for f in fields]), re.IGNORECASE)
    n = 0
    try:
        obj = json.loads(value)
    except (ValueError, TypeError, RecursionError):
        obj = None
    if isinstance(obj, (dict, list)):
        red, n = _redact_keys(obj, key_re)
        if n:
            value = json.dumps(red, separators=(",", ":"), ensure_ascii=False)
    value, m = text(value, fields)
    return value, n + m
