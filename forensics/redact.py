"""What a snapshot keeps of the values it reads: secrets redacted, or no values at all.

Secrets are where people really leave them, not only in fields named ``password``:

* **fields** of job data, return values and events whose name looks secret (``password``,
  ``token``, ``apiKey``, ``authorization``, ... plus the patterns given with
  ``--redact-field``): the value becomes ``[REDACTED]``;
* **inside free text** (failed reasons, stack traces, job logs, worker log lines, and string
  values of job data): the password of a URL (``https://user:pass@host``), secret-looking
  query parameters (``?token=``, ``X-Amz-Signature=``), ``Authorization: Bearer ...`` and
  any ``Bearer ...``, ``key=value`` / ``"key": "value"`` pairs with a secret-looking key, JWTs,
  AWS access key ids, GitHub/Slack/Stripe/Google tokens and PEM private keys.

``no_data`` (``--no-data``) keeps sizes, shapes and field names but no values, for sharing a
snapshot outside the team: job data and return values become their JSON shape (every value
replaced by its type and size), failed reasons and log messages become their error
fingerprint (numbers, ids, quoted values, e-mails and URLs normalised away), stack traces
keep their frames (code locations) under a fingerprinted first line, and job logs are
dropped (their count is kept).

Each rewrite is a fixed point: redacting redacted text changes nothing.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd

REDACTED = "[REDACTED]"

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


@dataclass(frozen=True)
class Redaction:
    """How a capture treats values: ``secrets`` redacts secret-looking fields and tokens in
    text (the default; ``--no-redact`` turns it off), ``fields`` adds field-name patterns
    (regular expressions, case-insensitive; ``--redact-field``), ``no_data`` keeps no values
    at all (``--no-data``)."""

    secrets: bool = True
    fields: tuple[str, ...] = ()
    no_data: bool = False

    def __post_init__(self):
        from .errors import UsageError
        import pyarrow as pa
        import pyarrow.compute as pc
        for f in self.fields:
            try:
                re.compile(f)
            except re.error as e:
                raise UsageError(f"--redact-field {f!r} is not a regular expression: {e}") from None
            try:  # the columns are pre-filtered by Arrow's RE2, which has no look-around
                pc.match_substring_regex(pa.array(["x"]), f, ignore_case=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise UsageError(f"--redact-field {f!r} uses syntax RE2 lacks (look-around, "
                                 "backreferences); write it without") from None

    @classmethod
    def of(cls, redact: "bool | Redaction | None") -> "Redaction":
        if isinstance(redact, Redaction):
            return redact
        return cls(secrets=redact is None or bool(redact))

    @property
    def active(self) -> bool:
        return self.secrets or bool(self.fields) or self.no_data

    def describe(self) -> dict[str, Any]:
        """For the manifest's options."""
        return {"redact": self.secrets, "redact_fields": list(self.fields), "no_data": self.no_data}

    # ---- compiled rules ------------------------------------------------------------------
    @cached_property
    def _key_re(self) -> re.Pattern | None:
        parts = ([SECRET_WORDS] if self.secrets else []) + [f"(?:{f})" for f in self.fields]
        return re.compile("|".join(parts), re.IGNORECASE) if parts else None

    @cached_property
    def _rules(self) -> list[tuple[re.Pattern, str]]:
        rules = list(_TEXT_RULES) if self.secrets else []
        words = "|".join(([_TEXT_WORDS] if self.secrets else []) + [f"(?:{_unanchored(f)})" for f in self.fields])
        if words:
            rules.append((_key_value_rule(words), _KEEP))
        return rules

    @cached_property
    def json_prefilter(self) -> str | None:
        """RE2 pattern (case-insensitive) a JSON text must match to need the JSON pass."""
        if not (self.secrets or self.fields):
            return None
        extra = "|".join(f"(?:{_unanchored(f)})" for f in self.fields)
        inner = SECRET_TEXT_RE if not extra else SECRET_TEXT_RE.replace(r"|pwd)", f"|pwd|{extra})")
        return inner if self.secrets else r'"[^"]*(' + extra + r')[^"]*"\s*:'

    @cached_property
    def text_prefilter(self) -> str | None:
        """RE2 pattern (case-insensitive) a text must match to need the text pass."""
        if not (self.secrets or self.fields):
            return None
        parts = ([TEXT_PREFILTER] if self.secrets else []) + [f"(?:{_unanchored(f)})" for f in self.fields]
        return "|".join(parts)

    @cached_property
    def _needs_re(self) -> re.Pattern | None:
        pre = "|".join(p for p in (self.json_prefilter, self.text_prefilter) if p)
        return re.compile(pre, re.IGNORECASE) if pre else None

    def needs(self, text: str) -> bool:
        """Whether a text might hold something to redact (the cheap pre-filter, in Python)."""
        return self._needs_re is not None and self._needs_re.search(text) is not None

    # ---- one value -----------------------------------------------------------------------
    def text(self, text: Any) -> tuple[Any, int]:
        """Secrets inside free text replaced; returns (text, replacements)."""
        if not isinstance(text, str) or not text or not self.needs(text):
            return text, 0
        n = 0
        for pattern, repl in self._rules:
            text, k = pattern.subn(repl, text)
            n += k
        return text, n

    def json_text(self, text: Any) -> tuple[Any, int]:
        """Secret-looking fields of a JSON text redacted, then secrets in its strings.
        Text that is not JSON gets the text pass only."""
        if not isinstance(text, str) or not text:
            return text, 0
        n = 0
        if self._key_re is not None:
            try:
                obj = json.loads(text)
            except (ValueError, TypeError, RecursionError):
                obj = _NOT_JSON
            if obj is not _NOT_JSON:
                red, n = _redact_keys(obj, self._key_re)
                if n:
                    text = json.dumps(red, separators=(",", ":"), ensure_ascii=False)
        text, m = self.text(text)
        return text, n + m

    # ---- vectorized over a column ----------------------------------------------------------
    def column(self, s: pd.Series, kind: str = "text") -> tuple[pd.Series, pd.Series]:
        """(column, replacements per row). ``kind``: "text" or "json". Only rows the RE2
        pre-filter flags are looked at in Python."""
        counts = pd.Series(0, index=s.index, dtype="Int64")
        pre = self.json_prefilter if kind == "json" else None
        pre = "|".join(p for p in (pre, self.text_prefilter) if p)
        if not pre or not len(s):
            return s, counts
        suspect = pd.Series(regex_hits(s, pre), index=s.index)
        if not suspect.any():
            return s, counts
        fn = self.json_text if kind == "json" else self.text
        pairs = s[suspect].map(fn)
        s = s.copy()
        s[suspect] = pairs.map(lambda p: p[0])
        counts[suspect] = pairs.map(lambda p: p[1]).astype("Int64")
        return s, counts


_NOT_JSON = object()


def _unanchored(pattern: str) -> str:
    return pattern.strip("^$") or pattern


def _redact_keys(obj: Any, key_re: re.Pattern) -> tuple[Any, int]:
    n = 0
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and key_re.search(k) and not isinstance(v, (dict, list)) and v != REDACTED:
                out[k] = REDACTED
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


def regex_hits(s: pd.Series, pattern: str, ignore_case: bool = True):
    """Vectorized regex search (pyarrow RE2); missing text never matches."""
    import pyarrow as pa
    import pyarrow.compute as pc
    arr = pa.array(s.astype("str"), type=pa.large_string(), from_pandas=True)
    return pc.match_substring_regex(arr, pattern, ignore_case=ignore_case).fill_null(False).to_numpy(
        zero_copy_only=False)


# ---- --no-data: shapes, not values ------------------------------------------------------------

def shape_of(value: Any) -> Any:
    """A JSON value with every leaf replaced by its type (and a string's length in bytes)."""
    if isinstance(value, dict):
        return {k: shape_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape_of(v) for v in value]
    if isinstance(value, bool):
        return "<bool>"
    if isinstance(value, (int, float)):
        return "<number>"
    if isinstance(value, str):
        return f"<string {len(value.encode('utf-8', 'replace'))} B>"
    return value  # null


def json_shape(text: Any) -> Any:
    """A JSON text's shape (field names kept, values replaced); other text: its size only."""
    if not isinstance(text, str):
        return text
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return f"<text {len(text.encode('utf-8', 'replace'))} B>"
    return json.dumps(shape_of(obj), separators=(",", ":"), ensure_ascii=False)


_FRAME = re.compile(r"^\s*at\s")


def stack_shape(text: Any) -> Any:
    """A stack trace without values: its first line's fingerprint and its frames."""
    from .fingerprint import fingerprint
    if not isinstance(text, str) or not text.strip():
        return text
    lines = text.splitlines()
    return "\n".join([fingerprint(lines[0]) or ""] + [ln for ln in lines[1:] if _FRAME.match(ln)])


def stacktrace_json_shape(text: Any) -> Any:
    """A job's ``stacktrace`` (a JSON array of stack texts) without values."""
    if not isinstance(text, str):
        return text
    try:
        entries = json.loads(text)
    except (ValueError, RecursionError):
        return stack_shape(text)
    if not isinstance(entries, list):
        return json_shape(text)
    return json.dumps([stack_shape(e) if isinstance(e, str) else shape_of(e) for e in entries],
                      ensure_ascii=False)


def message_shape(s: pd.Series) -> pd.Series:
    """Messages as their error fingerprints (the wording kept, the values normalised away)."""
    from .fingerprint import fingerprints
    return fingerprints(s)


def event_fields_shape(text: Any) -> Any:
    """An events-stream entry's fields (JSON) without values: ``data`` and ``returnvalue``
    become shapes (``returnvalue_bytes`` keeps the size), ``failedReason`` its fingerprint."""
    from .fingerprint import fingerprint
    if not isinstance(text, str):
        return text
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        return json_shape(text)
    if not isinstance(fields, dict):
        return json_shape(text)
    for k in ("data", "returnvalue"):
        if isinstance(fields.get(k), str):
            if k == "returnvalue":
                fields["returnvalue_bytes"] = len(fields[k].encode("utf-8", "replace"))
            fields[k] = json_shape(fields[k])
    if isinstance(fields.get("failedReason"), str):
        fields["failedReason"] = fingerprint(fields["failedReason"])
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
