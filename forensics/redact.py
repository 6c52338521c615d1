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

import numpy as np
import pandas as pd

from .clock import phase
from .stop import check_stop
from .textrules import (TEXT_WORDS, UNANCHORED, JsonKeys, TextRules, compile_re2, fold_i, key_value_rule,
                        secret_rules)

REDACTED = "[REDACTED]"

# Field names that look secret (JSON keys).
SECRET_WORDS = (r"pass(?:word|wd|phrase)?|secret|token|authorization|auth[-_]?header|cookie|api[-_]?key|"
                r"apikey|access[-_]?key|private[-_]?key|credential|session[-_]?id|bearer|signature|^pwd$")
SECRET_KEY_RE = re.compile(SECRET_WORDS, re.IGNORECASE)

# A cheap pre-filter run on raw JSON text (RE2 syntax, case-insensitive): only texts with a key
# that might be secret get the JSON pass. A key is a JSON string (escapes and all); a \u escape
# may spell a key's letters, so it counts too.
_JSON_KEY_WORDS = "pass|secret|token|auth|cookie|api[-_]?key|key|cred|session|bearer|sign|pwd"
_JSON_KEY = '"(?:[^"\\\\]|\\\\.)*({words})(?:[^"\\\\]|\\\\.)*"\\s*:|\\\\u00[2-7]'
SECRET_TEXT_RE = _JSON_KEY.format(words=fold_i(_JSON_KEY_WORDS))
_KEY_CACHE_MAX = 100_000
BIG_VALUE = 4096   # characters: above, a value is pre-filtered on its own by the engine's RE2 set


@dataclass(frozen=True)
class Redaction:
    """How a capture treats values: ``secrets`` redacts secret-looking fields and tokens in
    text (the default; ``--no-redact`` turns it off), ``fields`` adds field-name patterns
    (regular expressions, case-insensitive; ``--redact-field``), ``no_data`` keeps no values
    at all (``--no-data``).

    Free text goes through the rules of ``forensics.textrules`` (RE2: linear in the text, a
    blob kept or replaced as a unit); JSON is parsed only when a key might be secret."""

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
            try:  # the text rules and the pre-filters run on RE2, which has no look-around
                pc.match_substring_regex(pa.array(["x"]), f, ignore_case=True)
                compile_re2(f)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
                raise UsageError(f"--redact-field {f!r} uses syntax RE2 lacks (look-around, "
                                 "backreferences); write it without") from None

    def __reduce__(self):  # to another process by its settings (compiled rules stay behind)
        return (Redaction, (self.secrets, self.fields, self.no_data))

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
    def _engine(self) -> TextRules:
        rules = secret_rules() if self.secrets else []
        words = "|".join(([fold_i(TEXT_WORDS)] if self.secrets else []) + [f"(?:{_unanchored(f)})" for f in self.fields])
        if words:
            rules.append(key_value_rule(words))
        # the JSON pre-filter rides in the same RE2 set: one pass over a value answers both
        return TextRules(rules, extra=("(?i)" + self.json_prefilter,) if self.json_prefilter else ())

    @cached_property
    def json_prefilter(self) -> str | None:
        """RE2 pattern (case-insensitive) a JSON text must match to need the JSON pass."""
        if not (self.secrets or self.fields):
            return None
        words = "|".join(([fold_i(_JSON_KEY_WORDS)] if self.secrets else [])
                         + [f"(?:{_unanchored(f)})" for f in self.fields])
        return _JSON_KEY.format(words=words)

    @cached_property
    def text_prefilter(self) -> str | None:
        """RE2 pattern any text a text rule could rewrite matches (the rules themselves, as
        one alternation)."""
        return self._engine.any_pattern

    @property
    def _json_hit(self) -> int:
        """The index of the JSON pre-filter among the engine's set of patterns."""
        return len(self._engine.rules)

    def needs(self, text: str) -> bool:
        """Whether a text might hold something to redact."""
        if not isinstance(text, str) or not text:
            return False
        return bool(self._engine.candidates(self._engine.encode(text)))

    @cached_property
    def _json_keys(self) -> JsonKeys:
        words = "|".join(([fold_i(SECRET_WORDS.replace("^pwd$", "pwd"))] if self.secrets else [])
                         + [f"(?:{_unanchored(f)})" for f in self.fields])
        return JsonKeys(words, self._is_secret_key)

    @cached_property
    def _secret_keys(self) -> dict[str, bool]:
        return {}

    def _is_secret_key(self, key: Any) -> bool:
        cache = self._secret_keys
        hit = cache.get(key)
        if hit is None:
            hit = isinstance(key, str) and self._key_re.search(key) is not None
            if len(cache) >= _KEY_CACHE_MAX:
                cache.clear()
            cache[key] = hit
        return hit

    # ---- one value -----------------------------------------------------------------------
    def text(self, text: Any) -> tuple[Any, int]:
        """Secrets inside free text replaced; returns (text, replacements)."""
        if not isinstance(text, str) or not text:
            return text, 0
        return self._engine.apply(text)

    def json_text(self, text: Any, hits: list[int] | None = None) -> tuple[Any, int]:
        """Secret-looking fields of a JSON text redacted, then secrets in its strings.
        Text that is not JSON gets the text pass only. ``hits``: the text's candidates, when
        known (one pass of the engine's set)."""
        if not isinstance(text, str) or not text:
            return text, 0
        engine = self._engine
        b = engine.encode(text)
        if hits is None:
            hits = engine.candidates(b)
        n = 0
        if self._key_re is not None and self._json_hit in hits:
            if "\\u" in text:  # an escape may spell a key: parse and walk it
                try:
                    obj = json.loads(text)
                except (ValueError, TypeError, RecursionError):
                    obj = _NOT_JSON
                if obj is not _NOT_JSON and isinstance(obj, (dict, list)):
                    n = _redact_keys(obj, self._is_secret_key)
                    if n:
                        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
                        b = engine.encode(text)
            elif text.lstrip()[:1] in ("{", "["):  # keys found by RE2, values replaced in place
                b, n = self._json_keys.redact(b)
                if n:
                    text = b.decode("utf-8", "surrogatepass")
            if n:
                hits = engine.candidates(b)
        text, m = engine.apply(text, b, hits)
        return text, n + m

    # ---- vectorized over a column ----------------------------------------------------------
    def column(self, s: pd.Series, kind: str = "text") -> tuple[pd.Series, pd.Series]:
        """(column, replacements per row). ``kind``: "text" or "json". Small values are
        pre-filtered by Arrow (RE2, over the whole column at once); big ones (a blob, a long
        document) by one pass of the engine's RE2 set each, which also tells the rules what
        to look for. Only the values a pre-filter flags are looked at further."""
        with phase("redact"):
            return self._column(s, kind)

    def _column(self, s: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
        import pyarrow as pa
        import pyarrow.compute as pc
        counts = pd.Series(0, index=s.index, dtype="Int64")
        if not (self.secrets or self.fields) or not len(s):
            return s, counts
        if s.dtype == object:
            values = s.to_numpy()
            lengths = np.fromiter((len(v) if isinstance(v, str) else 0 for v in values), dtype=np.int64,
                                  count=len(values))
            arr = None
        else:  # Arrow-backed: Python strings only for the values looked at
            arr = arrow_strings(s)
            lengths = pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
            values = _Lazy(arr)
        big = lengths > BIG_VALUE
        suspect = np.zeros(len(lengths), dtype=bool)
        small = ~big & (lengths > 0)
        if small.any():
            part = arrow_strings(pd.Series(values[small], dtype=object)) if arr is None else arr.filter(pa.array(small))
            hits = None
            # two passes: RE2's automaton for both patterns at once is several times slower
            for p, ic in ((self.text_prefilter, False), (self.json_prefilter if kind == "json" else None, True)):
                if p:
                    h = pc.match_substring_regex(part, p, ignore_case=ic).fill_null(False)
                    hits = h if hits is None else pc.or_(hits, h)
            if hits is not None:
                suspect[small] = hits.to_numpy(zero_copy_only=False)
        known: dict[int, list[int]] = {}
        engine = self._engine
        for i in np.flatnonzero(big):
            check_stop()
            # an Arrow value is read by RE2 in place; a Python string is encoded once
            found = engine.candidates(values.buffer(i) if arr is not None else engine.encode(values[i]))
            if kind != "json":
                found = [j for j in found if j != self._json_hit]
            if found:
                suspect[i] = True
                known[int(i)] = found
        if not suspect.any():
            return s, counts
        out, found = [], []
        for i in np.flatnonzero(suspect):
            check_stop()
            v = values[i]
            red, k = (self.json_text(v, known.get(int(i))) if kind == "json" else
                      self._engine.apply(v, None, known.get(int(i))) if isinstance(v, str) else (v, 0))
            out.append(red)
            found.append(k)
        s = s.copy()
        s.iloc[np.flatnonzero(suspect)] = out
        counts.iloc[np.flatnonzero(suspect)] = found
        return s, counts


class _Lazy:
    """An Arrow string array read one value at a time: as a Python string, or as its UTF-8
    bytes in place (no copy)."""

    def __init__(self, arr):
        self.arr = arr

    def __getitem__(self, i):
        return self.arr[int(i)].as_py()

    def buffer(self, i):
        return self.arr[int(i)].as_buffer()


_NOT_JSON = object()


def _unanchored(pattern: str) -> str:
    return pattern.strip("^$") or pattern


def _redact_keys(obj: Any, is_secret) -> int:
    """Secret-looking keys' scalar values replaced in place (json.loads' own dicts and lists);
    returns how many. Iterative (no recursion limit); a Buffer's byte array is one unit."""
    n = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if type(o) is dict:
            if o.get("type") == "Buffer" and type(o.get("data")) is list:
                continue
            for k, v in o.items():
                t = type(v)
                if t is dict or t is list:
                    stack.append(v)
                elif is_secret(k) and v != REDACTED:
                    o[k] = REDACTED
                    n += 1
        else:
            stack.extend(v for v in o if type(v) is dict or type(v) is list)
    return n


def regex_hits(s: pd.Series, pattern: str, ignore_case: bool = True):
    """Vectorized regex search (pyarrow RE2); missing text never matches."""
    import pyarrow.compute as pc
    return pc.match_substring_regex(arrow_strings(s), pattern, ignore_case=ignore_case).fill_null(False).to_numpy(
        zero_copy_only=False)


def arrow_strings(s: pd.Series):
    """A text column as Arrow strings, copied once. (Python str objects become Arrow's 32-bit
    offset strings an order of magnitude faster than large_string; Arrow splits a column past
    2 GB into chunks itself.)"""
    import pyarrow as pa
    if s.dtype != object:
        s = s.astype("str")
        try:
            return pa.array(s.array)   # Arrow-backed already: no copy
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            pass
    try:
        return pa.array(s.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers and other values among the text
        return pa.array(s.astype("str").to_numpy(dtype=object), type=pa.string(), from_pandas=True)


# ---- --no-data: shapes, not values ------------------------------------------------------------

def shape_of(value: Any) -> Any:
    """A JSON value with every leaf replaced by its type (and a string's length in bytes).
    A Node Buffer (``{"type":"Buffer","data":[...]}``) is one unit: its byte count."""
    if isinstance(value, dict):
        if value.get("type") == "Buffer" and isinstance(value.get("data"), list):
            return {"type": "Buffer", "data": f"<Buffer {len(value['data'])} B>"}
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
        return json.dumps(shape_of(obj), separators=(",", ":"), ensure_ascii=False)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than a shape can be walked
        return f"<text {len(text.encode('utf-8', 'replace'))} B>"


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
    try:
        return json.dumps([stack_shape(e) if isinstance(e, str) else shape_of(e) for e in entries],
                          ensure_ascii=False)
    except RecursionError:
        return json_shape(text)


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
