"""Readers of `openmimo data`: datatrove readers that count every record they cannot use, and why.

Each reader is a datatrove ``BaseDiskReader`` (so its files are split among tasks, and any fsspec path
works) for one configured source.  A record becomes a ``Document`` with ``metadata = {"source", "url",
"date"}``; its id is the record's id field, else ``file:line``.  Bad records are counted, never fatal:

- ``invalid_utf8`` (a line that is not UTF-8), ``bad_json`` (not JSON or not an object),
- ``no_text`` (the text field missing, empty or whitespace), ``wrong_type`` (the text field not a string),
- for page sources (``pages``: JSONL records with raw ``html``; ``warc``): ``extract_failed``, ``extract_empty``.

Counts go to ``work/stats/read/<source>.<rank>.json`` when the task's input is exhausted.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from datatrove.pipeline.readers.base import BaseDiskReader

from openmimo.data.pipeline_config import SourceConfig


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, p)


class SourceReader(BaseDiskReader):
    """One configured source (see the module docstring)."""

    name = "openmimo source"

    def __init__(self, source: SourceConfig, data_folder: str, paths_file: str, stats_dir: str):
        super().__init__(data_folder, paths_file=paths_file, text_key=source.text_key, id_key=source.id_key,
                         add_file_path=False)
        self.source, self.stats_dir = source, stats_dir
        self.counts: Counter = Counter()

    # -- one record ------------------------------------------------------------------------------------
    def _document(self, rec, where: str, text_key: str | None = None):
        if not isinstance(rec, dict):
            self.counts["bad_json"] += 1
            return None
        key = text_key or self.source.text_key
        text = rec.get(key)
        if text is None:
            self.counts["no_text"] += 1
            return None
        if not isinstance(text, str):
            self.counts["wrong_type"] += 1
            return None
        if not text.strip():
            self.counts["no_text"] += 1
            return None
        doc_id = rec.get(self.source.id_key) if self.source.id_key else None
        meta = {"source": self.source.name}
        for k, field in (("url", self.source.url_key), ("date", self.source.date_key)):
            if field and isinstance(rec.get(field), str) and rec[field].strip():
                meta[k] = rec[field]
        self.counts["read"] += 1
        return {"text": text, "id": str(doc_id) if doc_id not in (None, "") else where, "metadata": meta}

    def _page(self, html, page_id: str, url, extra: dict):
        from openmimo.data.extract_html import extract_html  # resiliparse: only page sources need it

        try:
            rec = extract_html(html, page_id, url)
        except Exception:  # noqa: BLE001  one broken page is counted, not fatal
            self.counts["extract_failed"] += 1
            return None
        if not rec["text"].strip():
            self.counts["extract_empty"] += 1
            return None
        fields = {**extra, "text": rec["text"], self.source.id_key or "id": page_id}
        if self.source.url_key:
            fields[self.source.url_key] = url
        return self._document(fields, page_id, "text")

    def _records(self, filepath: str):
        """``(record or None, where)`` for each line / row / page of one file."""
        if self.source.reader == "parquet":
            import polars as pl  # the `data` extra; Parquet input only

            with self.data_folder.open(filepath, "rb") as f:
                for i, row in enumerate(pl.read_parquet(f).iter_rows(named=True)):
                    yield self._document(row, f"{filepath}:row {i + 1}")
            return
        if self.source.reader == "warc":
            from openmimo.data.extract_io import iter_warc  # fastwarc: WARC input only

            for rid, url, body in iter_warc(Path(self.data_folder.resolve_paths(filepath)), self.counts):
                yield self._page(body, rid, url, {})
            return
        with self.data_folder.open(filepath, "rb", compression="infer") as f:
            for n, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                where = f"{filepath}:{n}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.counts["invalid_utf8"] += 1
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    self.counts["bad_json"] += 1
                    continue
                if self.source.reader == "pages":
                    if not isinstance(rec, dict) or not isinstance(rec.get("html"), str):
                        self.counts["no_text" if isinstance(rec, dict) else "bad_json"] += 1
                        continue
                    pid = str(rec.get(self.source.id_key) or rec.get("url") or where)
                    extra = {k: v for k, v in rec.items() if k == self.source.date_key}
                    yield self._page(rec["html"], pid, rec.get(self.source.url_key), extra)
                else:
                    yield self._document(rec, where)

    def read_file(self, filepath: str):
        for parsed in self._records(filepath):
            if parsed is not None:
                doc = self.get_document_from_dict(parsed, filepath, 0)
                if doc is not None:
                    yield doc

    def _default_adapter(self, data: dict, path: str, id_in_file):
        return data  # records are already in Document form (see _document)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        yield from super().run(data, rank, world_size)
        write_json_atomic(Path(self.stats_dir) / f"{self.source.name}.{rank:05d}.json", dict(self.counts))
