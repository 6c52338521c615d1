"""Finding and parsing the application's JavaScript and TypeScript (tree-sitter; nothing is
executed). Files that cannot be read as source are skipped and counted, never fatal."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

EXTENSIONS = {".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
              ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx"}
SKIP_DIRS = {"node_modules", ".git", ".hg", ".svn", "dist", "build", "out", "coverage", ".next", ".nuxt",
             ".turbo", ".cache", "bower_components", "vendor"}
MAX_BYTES = 2 << 20        # a bigger source file is a bundle, not code someone wrote
MINIFIED_LINE = 5_000      # ... and so is one with a line this long


@dataclass
class Skipped:
    """Files left out, by reason (counts), with a few examples each."""
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, path: Path) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 5:
            ex.append(str(path))


_LANGS: dict[str, object] = {}


def language(kind: str):
    if kind not in _LANGS:
        import tree_sitter as ts
        if kind == "javascript":
            import tree_sitter_javascript as g
            _LANGS[kind] = ts.Language(g.language())
        else:
            import tree_sitter_typescript as g
            _LANGS[kind] = ts.Language(g.language_tsx() if kind == "tsx" else g.language_typescript())
    return _LANGS[kind]


def source_files(paths, skipped: Skipped):
    """(path, grammar) of every source file under ``paths`` (files or folders), skipping
    dependency, build and VCS folders and never following symbolic links to folders (a
    link loop cannot trap the walk)."""
    seen: set[Path] = set()
    for p in paths:
        p = Path(p)
        if not p.exists():
            skipped.add("not found", p)
            continue
        files = [p] if p.is_file() else None
        if files is None:
            files = []
            for root, dirs, names in os.walk(p, followlinks=False):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
                files.extend(Path(root) / n for n in sorted(names))
        for f in files:
            kind = EXTENSIONS.get(f.suffix.lower())
            if kind is None or f.name.endswith(".d.ts"):
                continue
            real = f.resolve()
            if real in seen:
                continue
            seen.add(real)
            yield f, kind


def read_source(path: Path, skipped: Skipped) -> bytes | None:
    """The file's bytes, or None (skipped and counted): unreadable, binary, not UTF-8,
    too big or minified."""
    try:
        if path.stat().st_size > MAX_BYTES:
            skipped.add("too big (a bundle)", path)
            return None
        data = path.read_bytes()
    except OSError:
        skipped.add("unreadable", path)
        return None
    if b"\0" in data[:8192]:
        skipped.add("binary", path)
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        skipped.add("not UTF-8", path)
        return None
    if any(len(line) > MINIFIED_LINE for line in data.splitlines()):
        skipped.add("minified", path)
        return None
    return data


def parse(data: bytes, kind: str):
    import tree_sitter as ts
    return ts.Parser(language(kind)).parse(data)
