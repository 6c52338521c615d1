"""Bull / BullMQ versions the application declares (package.json) and locks (npm, pnpm, yarn)."""
from __future__ import annotations

import json
import re
from pathlib import Path

NAMES = ("bullmq", "bull", "@nestjs/bullmq", "@nestjs/bull")


def _folders(paths) -> list[Path]:
    out = []
    for p in paths:
        p = Path(p)
        p = p if p.is_dir() else p.parent
        for cand in (p, *p.parents[:3]):
            if (cand / "package.json").exists():
                out.append(cand)
                break
    return list(dict.fromkeys(out))


def packages_of(paths) -> dict[str, str]:
    """{name: version}: the locked version where a lockfile has it, else the declared range."""
    found: dict[str, str] = {}
    for folder in _folders(paths):
        try:
            pj = json.loads((folder / "package.json").read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError):
            continue
        for section in ("dependencies", "devDependencies", "peerDependencies"):
            deps = pj.get(section) if isinstance(pj, dict) else None
            for name in NAMES:
                if isinstance(deps, dict) and isinstance(deps.get(name), str):
                    found.setdefault(name, deps[name])
        found.update({k: v for k, v in _locked(folder).items() if k in found})
    return found


def _locked(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    lock = folder / "package-lock.json"
    if lock.exists():
        try:
            data = json.loads(lock.read_text(encoding="utf-8", errors="replace"))
            for name in NAMES:
                v = ((data.get("packages") or {}).get(f"node_modules/{name}") or {}).get("version") \
                    or ((data.get("dependencies") or {}).get(name) or {}).get("version")
                if v:
                    out[name] = v
        except (OSError, ValueError, AttributeError):
            pass
    for lockfile, pattern in (("pnpm-lock.yaml", r"^\s+/?{name}[@/](\d[\w.\-+]*)"),
                              ("yarn.lock", r'^"?{name}@[^\n]*:\n\s+version:? "?([\w.\-+]+)')):
        f = folder / lockfile
        if f.exists():
            text = f.read_text(encoding="utf-8", errors="replace")
            for name in NAMES:
                m = re.search(pattern.format(name=re.escape(name)), text, re.M)
                if m:
                    out.setdefault(name, m.group(1))
    return out
