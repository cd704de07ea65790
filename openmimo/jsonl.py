"""Reading JSONL records with one clear error per bad line (file and line number named)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def iter_jsonl(path: str | Path, what: str = "file") -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line; a missing file, invalid JSON or a
    non-object line raises :class:`openmimo.config.ConfigError` naming ``path:line``."""
    from openmimo.config import ConfigError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}:{n}: not valid JSON: {e.msg}") from None
            if not isinstance(rec, dict):
                raise ConfigError(f"{p}:{n}: expected a JSON object")
            yield n, rec


def read_jsonl(path: str | Path, limit: int | None = None, what: str = "file") -> list[dict]:
    out = []
    for _, rec in iter_jsonl(path, what):
        out.append(rec)
        if limit and len(out) >= limit:
            break
    return out
