"""Text from a snapshot, made safe to show in HTML and plots.

Every value a snapshot holds was written by someone else: queue and job names, ids, data,
failed reasons, stack traces, log lines. Besides escaping markup, Unicode bidirectional
controls (U+202E RIGHT-TO-LEFT OVERRIDE and friends) are shown as visible ``<U+202E>`` marks
instead of being obeyed, so a name cannot reorder what is printed around it
("invoice\u202Egnp.exe" would otherwise read "invoiceexe.png").
"""
from __future__ import annotations

import html
import re
from typing import Any

import pandas as pd

BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def show_controls(text: str) -> str:
    """Bidi controls as visible ``<U+XXXX>`` marks."""
    return BIDI_CONTROLS.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def escape(value: Any) -> str:
    """``html.escape`` of the text, with bidi controls shown, not obeyed."""
    return html.escape(show_controls(str(value)))


def frame_html(df: pd.DataFrame, **kwargs: Any) -> str:
    """``DataFrame.to_html`` with every cell escaped and bidi controls shown (display
    frames are small: cell by cell, whatever the columns look like)."""
    def shown(v: Any) -> Any:
        return show_controls(v) if isinstance(v, str) else v
    out = df.map(shown)
    out.index = out.index.map(shown)
    out.columns = out.columns.map(shown)
    return out.to_html(escape=True, **kwargs)


def figure_texts(obj: Any) -> Any:
    """A plotly figure dict with bidi controls shown in every string (labels, hover text)."""
    if isinstance(obj, str):
        return show_controls(obj) if BIDI_CONTROLS.search(obj) else obj
    if isinstance(obj, dict):
        return {k: figure_texts(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [figure_texts(v) for v in obj]
    if hasattr(obj, "dtype") and getattr(obj.dtype, "kind", "") in "OU":  # numpy arrays of text
        return [figure_texts(v) for v in obj.tolist()]
    return obj
