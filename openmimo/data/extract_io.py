"""Inputs, parallelism and resumable output shared by `openmimo extract-html` and `openmimo extract-pdf`.

Inputs are files or folders (searched recursively): HTML files, JSONL page dumps (one object per line with an
``html`` field, e.g. the tiny world's ``html/pages.jsonl``), WARC files (``.warc``, ``.warc.gz``, read with
FastWARC: ``response`` records with an HTML content type; others are counted and skipped) and PDF files.  Work
goes to ``--workers`` processes in batches through a bounded window (the reader never runs ahead by more than a
few batches), and records are appended to the output in input order.  A re-run skips the ids the output already
holds (a torn last line from a killed run is cut off first), so a run is resumable by its output.  A summary of
what was kept, skipped and dropped (and why) goes to stderr and to ``OUTPUT.stats.json``.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import os
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from openmimo.config import UsageError

HTML_SUFFIXES = (".html", ".htm", ".xhtml", ".shtml")
WARC_SUFFIXES = (".warc", ".warc.gz", ".arc.gz")
HTML_TYPES = ("text/html", "application/xhtml+xml")
BATCH = 16
WINDOW = 4  # batches in flight per worker


class InputError(Exception):
    """A bad input path (named in the message)."""


def add_io_arguments(parser, what: str) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH", help=what)
    parser.add_argument("--output", required=True, help="output JSONL (appended to; ids already in it are skipped)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many input documents")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _files(paths: list[str], suffixes: tuple[str, ...]) -> Iterator[Path]:
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(suffixes))
        elif p.is_file():
            yield p
        else:
            raise InputError(f"input not found: {p}")


def iter_warc(path: Path, counts: Counter) -> Iterator[tuple[str, str | None, bytes]]:
    """``(record id, target URL, HTTP body)`` of the HTML ``response`` records of a WARC file (gzip'd or not)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType  # heavy optional dependency, only for WARC input

    with open(path, "rb") as f:
        try:
            for rec in ArchiveIterator(f, record_types=WarcRecordType.any_type, parse_http=True):
                if rec.record_type != WarcRecordType.response:
                    counts["warc_non_response"] += 1
                    continue
                ctype = (rec.http_content_type or "").lower()
                if not any(t in ctype for t in HTML_TYPES):
                    counts["warc_non_html"] += 1
                    continue
                try:
                    body = rec.reader.read()
                except Exception:  # noqa: BLE001  a truncated record's stream ends early or fails
                    counts["warc_truncated"] += 1
                    continue
                if len(body) < rec.content_length:  # after HTTP parsing: the declared body length
                    counts["warc_truncated"] += 1
                    continue
                yield rec.record_id, rec.headers.get("WARC-Target-URI"), body
        except Exception as e:  # noqa: BLE001  a broken stream ends this file, not the run
            counts[f"warc_unreadable:{type(e).__name__}"] += 1


def iter_jsonl_pages(path: Path, counts: Counter) -> Iterator[tuple[str, str | None, str]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                page = rec["html"]
            except (ValueError, KeyError, TypeError):
                counts["jsonl_bad_line"] += 1
                print(f"{path}:{n}: not a JSON object with an 'html' field; skipped", file=sys.stderr)
                continue
            yield str(rec.get("id") or f"{path.stem}:{n}"), rec.get("url"), page


def iter_inputs(paths: list[str], kind: str, counts: Counter) -> Iterator[tuple[str, str | None, object]]:
    """``(id, url, payload)`` for every document of ``paths``: page bytes / str for html, the file path for pdf."""
    if kind == "pdf":
        for f in _files(paths, (".pdf",)):
            yield f.stem, None, str(f)
        return
    for f in _files(paths, HTML_SUFFIXES + WARC_SUFFIXES + (".jsonl", ".jsonl.gz")):
        name = f.name.lower()
        if name.endswith(WARC_SUFFIXES):
            yield from iter_warc(f, counts)
        elif name.endswith((".jsonl", ".jsonl.gz")):
            yield from iter_jsonl_pages(f, counts)
        else:
            try:
                yield f.stem, None, f.read_bytes()
            except OSError:
                counts["unreadable_file"] += 1


def _work(kind: str, batch: list) -> list:
    if kind == "pdf":
        from openmimo.data.extract_pdf import extract_pdf as fn
    else:
        from openmimo.data.extract_html import extract_html as fn
    out = []
    for doc_id, url, payload in batch:
        try:
            rec = fn(payload, doc_id, url) if kind == "html" else fn(payload, doc_id)
            out.append((rec, None if rec["text"].strip() else "empty_text"))
        except Exception as e:  # noqa: BLE001  one bad document is counted, never fatal
            out.append(({"id": doc_id, "url": url}, f"error:{type(e).__name__}"))
    return out


def done_ids(path: Path) -> set[str]:
    """Ids already in an output file; a torn last line (a killed run) is cut off."""
    ids: set[str] = set()
    if not path.exists():
        return ids
    good = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                ids.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                break
            good += len(line)
    if good < path.stat().st_size:
        with open(path, "rb+") as f:
            f.truncate(good)
    return ids


def run_extraction(args, kind: str) -> int:
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    skip = done_ids(out_path)
    counts: Counter = Counter()
    try:
        docs = iter_inputs(args.input, kind, counts)

        def batches() -> Iterator[list]:
            batch, seen = [], 0
            for doc in docs:
                if args.limit is not None and seen >= args.limit:
                    break
                seen += 1
                if doc[0] in skip:
                    counts["skipped_done"] += 1
                    continue
                batch.append(doc)
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch

        start = time.time()
        bar = tqdm(unit="doc", desc=f"extract-{kind}", disable=True if args.no_progress else None, file=sys.stderr)
        with open(out_path, "a", encoding="utf-8") as out:
            for results in _map(kind, batches(), args.workers):
                for rec, reason in results:
                    if reason is None:
                        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                        counts["kept"] += 1
                        for key in ("formulas", "code_blocks", "chars", "boilerplate_chars"):
                            counts[f"total_{key}"] += rec.get(key, 0) or 0
                        if rec.get("ocr_pages"):
                            counts["pages_flagged_for_ocr"] += len(rec["ocr_pages"])
                    else:
                        counts[f"dropped_{reason}"] += 1
                    if rec.get("encoding") not in (None, "utf-8"):
                        counts["reencoded"] += 1
                bar.update(len(results))
                out.flush()
        bar.close()
    except InputError as e:
        raise UsageError(str(e)) from None
    elapsed = time.time() - start
    stats = {"output": str(out_path), "seconds": round(elapsed, 3), **dict(sorted(counts.items()))}
    with open(str(out_path) + ".stats.json", "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats), file=sys.stderr)
    return 0


def _map(kind: str, batches: Iterator[list], workers: int) -> Iterator[list]:
    """``_work`` over ``batches`` in order; with workers > 1 at most ``WINDOW * workers`` batches in flight."""
    if workers == 1:
        for b in batches:
            yield _work(kind, b)
        return
    ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
    with ctx.Pool(workers) as pool:
        pending: deque = deque()
        for b in batches:
            pending.append(pool.apply_async(_work, (kind, b)))
            if len(pending) >= WINDOW * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
