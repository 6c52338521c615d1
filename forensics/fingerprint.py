"""Error fingerprints: one error that hit 4,000 jobs reads as one thing.

Numbers, ids, UUIDs, hex, paths, URLs' paths, e-mail addresses and quoted values are
normalised away, so "upstream 503 for user u17" and "upstream 503 for user u9" share
the fingerprint "upstream <n> for user <id>". HTTP-like status codes are kept (a 400 and
a 503 are different problems).
"""
from __future__ import annotations

import re

import pandas as pd

_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (None, "<email>"),  # see _emails: \b[\w.+-]+@[\w-]+\.[\w.-]+\b, in linear time
    (re.compile(r"\b(https?|wss?|redis|rediss|amqp|postgres(?:ql)?|mysql|mongodb)://[^\s/'\"]+[^\s'\"]*", re.I),
     lambda m: f"{m.group(1).lower()}://<host>"),
    (re.compile(r"(?<![\w.])(?:/[\w.@-]+){2,}/?"), "<path>"),
    (re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"'[^']{0,200}'|\"[^\"]{0,200}\"|`[^`]{0,200}`"), "<s>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    # A match starts where a run of [\w-] starts (its first letter or digit), as the leftmost
    # \b match always did (and cannot end before the run's last letter): trying every \b of a
    # long run, and rescanning the run from each, made it quadratic.
    (re.compile(r"(?<![\w-])(-*)\b((?=[\w-]*\d)(?=[\w-]*[a-z])[\w-]{2,}\b)", re.I), r"\1<id>"),
    (re.compile(r"(?<![<\w])\d+(?:\.\d+)?(?![\w>])"), "<n>"),
]
# HTTP status codes stay: "status code 400" vs "503" are different problems.
# Only the start of a long first line is read: the fingerprint keeps 300 characters, and a
# reason carrying a whole payload (megabytes) would be normalised for nothing.
FIRST_LINE_CHARS = 4096
_HTTP = re.compile(r"\b(?:status(?: code)?|HTTP(?:/\d(?:\.\d)?)?|code)\s*[:=]?\s*([1-5]\d\d)\b", re.I)


def fingerprint(message: str | None) -> str | None:
    """The normalised first line of an error message (None stays None); a fixed point
    (fingerprinting a fingerprint changes nothing, which ``--no-data`` relies on)."""
    if message is None or (isinstance(message, float) and message != message):
        return None
    fp = normalise(message)
    for _ in range(4):  # cut to 300 characters, a rule may see a new match (base64 in an error)
        again = normalise(fp)
        if again == fp:
            break
        fp = again
    return fp


def normalise(message: str) -> str:
    """One pass of the rules over the first line."""
    # \x01 marks kept status codes below; one in the message itself must not be read as one.
    message = str(message).replace("\x01", "")
    text = message.strip().splitlines()[0][:FIRST_LINE_CHARS].strip() if message.strip() else ""
    keep: list[str] = []

    def protect(m):  # keep status codes through the number rules (placeholder has no digit)
        keep.append(m.group(0))
        return f"\x01{chr(0x41 + len(keep) - 1)}\x01"

    text = _HTTP.sub(protect, text) if len(_HTTP.findall(text)) <= 26 else text
    for pattern, repl in _RULES:
        text = _emails(text) if pattern is None else pattern.sub(repl, text)
    text = re.sub(r"\x01([A-Z])\x01", lambda m: keep[ord(m.group(1)) - 0x41], text)
    return re.sub(r"\s+", " ", text)[:300].strip()


_DOMAIN = re.compile(r"@[\w-]+\.[\w.-]+\b")


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _boundary(text: str, i: int) -> bool:
    """Python's \\b before text[i]."""
    return _is_word(text[i]) != (i > 0 and _is_word(text[i - 1]))


def _emails(text: str) -> str:
    """``re.sub(r"\\b[\\w.+-]+@[\\w-]+\\.[\\w.-]+\\b", "<email>", text)``, exactly, in linear time.

    The regex tried a match at every word boundary of a run of [\\w.+-] and scanned the run to
    its end each time (quadratic in a long run of base64url or dotted names). Here each "@"
    is looked at once: the local part is the run that ends at it (not before the previous
    match), the match starts at the run's first word boundary, and the domain is matched
    from the "@" on."""
    if "@" not in text:
        return text
    out: list[str] = []
    last = pos = 0
    while (at := text.find("@", pos)) >= 0:
        r = at
        while r > last and (_is_word(text[r - 1]) or text[r - 1] in ".+-"):
            r -= 1
        q = next((i for i in range(r, at) if _boundary(text, i)), None)
        m = _DOMAIN.match(text, at) if q is not None else None
        if m is None:
            pos = at + 1
            continue
        out += [text[last:q], "<email>"]
        last = pos = m.end()
    return "".join(out) + text[last:]


def fingerprints(messages: pd.Series) -> pd.Series:
    """Vector form: each distinct message is fingerprinted once."""
    codes, uniques = pd.factorize(messages, use_na_sentinel=True)
    mapped = [fingerprint(u) for u in uniques]
    out = pd.Series([mapped[c] if c >= 0 else None for c in codes], index=messages.index, dtype="str")
    return out
