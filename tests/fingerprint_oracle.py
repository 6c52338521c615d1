"""Error fingerprints as they were before issue 18 (two rules quadratic on long runs), kept as the
oracle tests/test_fingerprint_linear.py compares forensics.fingerprint with. Not used by the product."""
from __future__ import annotations

import re

import pandas as pd

_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"), "<email>"),
    (re.compile(r"\b(https?|wss?|redis|rediss|amqp|postgres(?:ql)?|mysql|mongodb)://[^\s/'\"]+[^\s'\"]*", re.I),
     lambda m: f"{m.group(1).lower()}://<host>"),
    (re.compile(r"(?<![\w.])(?:/[\w.@-]+){2,}/?"), "<path>"),
    (re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"'[^']{0,200}'|\"[^\"]{0,200}\"|`[^`]{0,200}`"), "<s>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[a-z])[\w-]{2,}\b", re.I), "<id>"),
    (re.compile(r"(?<![<\w])\d+(?:\.\d+)?(?![\w>])"), "<n>"),
]
# HTTP status codes stay: "status code 400" vs "503" are different problems.
_HTTP = re.compile(r"\b(?:status(?: code)?|HTTP(?:/\d(?:\.\d)?)?|code)\s*[:=]?\s*([1-5]\d\d)\b", re.I)


def fingerprint(message: str | None) -> str | None:
    """The normalised first line of an error message (None stays None)."""
    if message is None or (isinstance(message, float) and message != message):
        return None
    # \x01 marks kept status codes below; one in the message itself must not be read as one.
    message = str(message).replace("\x01", "")
    text = message.strip().splitlines()[0].strip() if message.strip() else ""
    keep: list[str] = []

    def protect(m):  # keep status codes through the number rules (placeholder has no digit)
        keep.append(m.group(0))
        return f"\x01{chr(0x41 + len(keep) - 1)}\x01"

    text = _HTTP.sub(protect, text) if len(_HTTP.findall(text)) <= 26 else text
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    text = re.sub(r"\x01([A-Z])\x01", lambda m: keep[ord(m.group(1)) - 0x41], text)
    return re.sub(r"\s+", " ", text)[:300].strip()


def fingerprints(messages: pd.Series) -> pd.Series:
    """Vector form: each distinct message is fingerprinted once."""
    codes, uniques = pd.factorize(messages, use_na_sentinel=True)
    mapped = [fingerprint(u) for u in uniques]
    out = pd.Series([mapped[c] if c >= 0 else None for c in codes], index=messages.index, dtype="str")
    return out
