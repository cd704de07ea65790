"""Reading JSONL records with one clear error per bad line (file and line number named)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from openmimo.config import ConfigError


def parse_jsonl_lines(lines: Iterable[str], source: str) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line of ``lines`` (str or UTF-8 bytes: a file, stdin, ...);
    bytes that are not UTF-8, invalid JSON or a non-object line raise :class:`openmimo.config.ConfigError` naming ``source:line``."""
    offset = 0
    for n, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(f"{source}:{n}: not valid UTF-8 (byte {offset + e.start} of the file, "
                                  f"{line[e.start:e.start + 1]!r})") from None
            offset += len(line)
            line = text
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{source}:{n}: not valid JSON: {e.msg}") from None
        if not isinstance(rec, dict):
            raise ConfigError(f"{source}:{n}: expected a JSON object")
        yield n, rec


def iter_jsonl(path: str | Path, what: str = "file") -> Iterator[tuple[int, dict]]:
    """:func:`parse_jsonl_lines` over a file; a missing file is an error naming it too."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    with p.open("rb") as f:
        yield from parse_jsonl_lines(f, str(p))


def read_jsonl(path: str | Path, limit: int | None = None, what: str = "file") -> list[dict]:
    out = []
    for _, rec in iter_jsonl(path, what):
        out.append(rec)
        if limit and len(out) >= limit:
            break
    return out
