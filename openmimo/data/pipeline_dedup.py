"""Global dedup of `openmimo data` in three datatrove stages, sharded by hash as datatrove's MinHash is.

1. :class:`PrepareDocs` (one task per input shard): for every document, in the order the task reads them,
   write it to ``work/docs/<rank>.jsonl`` and emit its dedup keys — the normalised URL's hash (kind 0),
   the whitespace-normalised text's hash (kind 1) and one MinHash band key per band (kind 2; parameters
   per source) — into ``work/keys/<bucket>/<rank>.npy``, bucket = key mod ``buckets``.
2. :class:`GroupKeys` (one task per bucket): sort the bucket's keys of all tasks; every key held by two or
   more documents is a group, written to ``work/groups/<bucket>.npy``.
3. :class:`ResolveDuplicates` (one task): in order URL, exact text, near duplicates — URL and exact groups
   keep their best document; the near-duplicate groups that survive are merged by union-find into clusters
   that keep their best document.  "Best" is the smallest ``(priority, document key)``: for URLs the
   priority is minus the text length (``url_priority: longest``) or minus the date (``newest``); for exact
   and near duplicates it is the source's position in the config, then minus the text length; the document
   key is a hash of source and id — so the choice does not depend on how documents were split among tasks.  Each task's
   removals go to ``work/remove/<rank>.npy``; the stage's counts (removed per source and reason, cluster
   sizes) to ``work/stats/dedup.json``.

Only stage 3 sees more than one shard at a time, and it holds only the keys of duplicated documents.
Every file is written under a temporary name and renamed, so a task killed midway leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep

from openmimo.data.minhash import UnionFind, text_band_keys
from openmimo.data.pipeline_config import DataPipelineConfig
from openmimo.data.pipeline_readers import write_json_atomic
from openmimo.data.texthash import hash64, mix64
from openmimo.data.urls import url_keys

KEY_DTYPE = np.dtype([("kind", "u1"), ("key", "<u8"), ("prio", "<i8"), ("tie", "<u8"), ("src", "<u2"),
                      ("rank", "<u4"), ("idx", "<u4")])
REMOVE_DTYPE = np.dtype([("idx", "<u4"), ("reason", "u1")])
KINDS = ("url", "exact", "near")
REASONS = ("url_duplicate", "exact_duplicate", "near_duplicate")
NO_DATE = 1 << 62  # priority of a document without a date under 'newest' (after every dated one)
URL_BATCH = 1 << 16  # URLs normalised and hashed in one column-wise call (many batches of documents)


def doc_key(source: str, doc_id: str) -> int:
    return hash64(f"{source}\x00{doc_id}")


def _save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def date_priority(date: str | None) -> int:
    if not date:
        return NO_DATE
    try:
        return -int(datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return NO_DATE


class PrepareDocs(PipelineStep):
    name = "prepare docs + dedup keys"
    type = "openmimo"

    def __init__(self, cfg: DataPipelineConfig, work: str):
        super().__init__()
        self.cfg, self.work = cfg, work

    def _keys(self, batch: list, rank: int, first_idx: int) -> list[np.ndarray]:
        cfg, out = self.cfg, []
        names = [s.name for s in cfg.sources]
        n = len(batch)
        keys = np.array([d["key"] for d in batch], dtype=np.uint64)
        length = np.array([len(d["text"]) for d in batch], dtype=np.int64)
        src = np.array([names.index(d["source"]) for d in batch], dtype=np.uint16)
        idx = np.arange(first_idx, first_idx + n, dtype=np.uint32)

        def rec(kind, key, prio, sel):
            a = np.zeros(int(sel.sum()), KEY_DTYPE)
            a["kind"], a["key"], a["prio"], a["tie"] = kind, key[sel], prio[sel], keys[sel]
            a["src"], a["rank"], a["idx"] = src[sel], rank, idx[sel]
            return a

        if cfg.dedup.url:
            has = np.array([bool(d.get("url")) for d in batch], dtype=bool)
            if cfg.dedup.url_priority == "newest":
                prio = np.array([date_priority(d.get("date")) for d in batch], dtype=np.int64)
            else:
                prio = -length
            # the keys (hash64 of the normalised URL) come later, from _fill_url_keys: many batches at once
            urls = rec(0, np.zeros(n, np.uint64), prio, has)
            self._pending_urls.append((urls, [d["url"] for d in batch if d.get("url")]))
            out.append(urls)
        # among exact and near duplicates, a source listed earlier wins, then the longer text
        rank_prio = src.astype(np.int64) * (1 << 40) - length
        if cfg.dedup.exact:
            ekey = np.array([hash64(" ".join(d["text"].split())) for d in batch], dtype=np.uint64)
            out.append(rec(1, ekey, rank_prio, np.ones(n, bool)))
        if cfg.dedup.minhash:
            for si, s in enumerate(cfg.sources):
                sel = np.flatnonzero(src == si)
                if sel.size == 0:
                    continue
                p = s.minhash.params(cfg.dedup.seed)
                bk = text_band_keys([batch[i]["text"] for i in sel], p, cfg.dedup.backend)
                # documents of sources with other parameters never share a band key
                salt = np.uint64(hash64(f"{p.ngram}/{p.bands}/{p.rows}/{p.seed}"))
                with np.errstate(over="ignore"):
                    bk = np.where(bk == 0, np.uint64(0), mix64(bk ^ salt) | np.uint64(1))
                full = np.zeros((n, p.bands), np.uint64)
                full[sel] = bk
                mask = np.zeros(n, bool)
                mask[sel] = True
                for b in range(p.bands):
                    out.append(rec(2, full[:, b], rank_prio, mask & (full[:, b] != 0)))
        return out

    def _fill_url_keys(self) -> None:
        """Fill in the keys of the URL records that :meth:`_keys` left at 0: one column-wise
        :func:`~openmimo.data.urls.url_keys` call (``hash64(normalize_url(url))`` of each) over all their URLs."""
        pending, self._pending_urls = self._pending_urls, []
        keys = url_keys([u for _, urls in pending for u in urls])
        pos = 0
        for recs, urls in pending:
            recs["key"] = keys[pos:pos + len(urls)]
            pos += len(urls)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        work = Path(self.work)
        self._pending_urls: list[tuple[np.ndarray, list[str]]] = []
        docs_path = work / "docs" / f"{rank:05d}.jsonl"
        docs_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = docs_path.with_name(docs_path.name + f".tmp-{os.getpid()}")
        parts: list[np.ndarray] = []
        counts: Counter = Counter()
        seen: set[int] = set()
        batch: list[dict] = []
        n = 0
        with open(tmp, "w", encoding="utf-8") as f:
            def flush():
                nonlocal n, batch
                for d in batch:
                    f.write(json.dumps(d, ensure_ascii=False) + "\n")
                parts.extend(self._keys(batch, rank, n))
                n += len(batch)
                batch = []
                if sum(len(urls) for _, urls in self._pending_urls) >= URL_BATCH:
                    self._fill_url_keys()

            for doc in data or ():
                src = doc.metadata["source"]
                key = doc_key(src, doc.id)
                if key in seen:  # the same id twice in one source (in this shard): the second is not a new document
                    counts[f"{src}:duplicate_id"] += 1
                    continue
                seen.add(key)
                counts[f"{src}:docs"] += 1
                counts[f"{src}:chars"] += len(doc.text)
                batch.append({"key": key, "source": src, "id": doc.id, "text": doc.text,
                              **{k: doc.metadata[k] for k in ("url", "date") if k in doc.metadata}})
                if len(batch) >= self.cfg.batch_docs:
                    flush()
            if batch:
                flush()
        self._fill_url_keys()
        keys = np.concatenate(parts) if parts else np.zeros(0, KEY_DTYPE)
        bucket = keys["key"] % np.uint64(self.cfg.buckets)
        for b in range(self.cfg.buckets):
            _save_npy(work / "keys" / f"{b:05d}" / f"{rank:05d}.npy", keys[bucket == b])
        os.replace(tmp, docs_path)
        write_json_atomic(work / "stats" / "prepare" / f"{rank:05d}.json", dict(counts))


class GroupKeys(PipelineStep):
    name = "group dedup keys"
    type = "openmimo"

    def __init__(self, cfg: DataPipelineConfig, work: str):
        super().__init__()
        self.cfg, self.work = cfg, work

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        work = Path(self.work)
        files = [work / "keys" / f"{rank:05d}" / f"{r:05d}.npy" for r in range(self.cfg.tasks)]
        keys = np.concatenate([np.load(f) for f in files]) if files else np.zeros(0, KEY_DTYPE)
        keys = keys[np.lexsort((keys["idx"], keys["rank"], keys["key"], keys["kind"]))]
        same = (keys["kind"][1:] == keys["kind"][:-1]) & (keys["key"][1:] == keys["key"][:-1])
        in_group = np.zeros(keys.size, bool)
        in_group[1:] |= same
        in_group[:-1] |= same
        _save_npy(work / "groups" / f"{rank:05d}.npy", keys[in_group])


class ResolveDuplicates(PipelineStep):
    name = "resolve duplicates"
    type = "openmimo"

    def __init__(self, cfg: DataPipelineConfig, work: str):
        super().__init__()
        self.cfg, self.work = cfg, work

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        work = Path(self.work)
        names = [s.name for s in self.cfg.sources]
        g = np.concatenate([np.load(work / "groups" / f"{b:05d}.npy") for b in range(self.cfg.buckets)])
        g = g[np.lexsort((g["idx"], g["rank"], g["key"], g["kind"]))]
        removed: dict[tuple[int, int], int] = {}  # (rank, idx) -> reason
        source_of: dict[tuple[int, int], int] = {}
        sizes = {k: Counter() for k in KINDS}
        cuts = np.flatnonzero((g["kind"][1:] != g["kind"][:-1]) | (g["key"][1:] != g["key"][:-1])) + 1
        uf = UnionFind()
        for grp in np.split(g, cuts) if g.size else []:
            kind = int(grp["kind"][0])
            members = sorted({(int(m["prio"]), int(m["tie"]), int(m["rank"]), int(m["idx"])) for m in grp})
            for m, s in zip(grp, grp["src"]):
                source_of[(int(m["rank"]), int(m["idx"]))] = int(s)
            if kind == 2:
                continue  # near duplicates: after URL and exact removals (below)
            alive = [m for m in members if (m[2], m[3]) not in removed]
            if len(alive) > 1:
                sizes[KINDS[kind]][len(alive)] += 1
                for m in alive[1:]:
                    removed[(m[2], m[3])] = kind
        for grp in np.split(g, cuts) if g.size else []:
            if int(grp["kind"][0]) != 2:
                continue
            alive = sorted({(int(m["prio"]), int(m["tie"]), int(m["rank"]), int(m["idx"])) for m in grp
                            if (int(m["rank"]), int(m["idx"])) not in removed})
            for m in alive[1:]:
                uf.union(alive[0], m)
        for root, members in uf.groups().items():
            sizes["near"][len(members)] += 1
            for m in members:
                if m != root:
                    removed[(m[2], m[3])] = 2
        per_rank: dict[int, list] = {r: [] for r in range(self.cfg.tasks)}
        counts: Counter = Counter()
        for (r, i), reason in removed.items():
            per_rank[r].append((i, reason))
            counts[f"{names[source_of[(r, i)]]}:{REASONS[reason]}"] += 1
        for r, items in per_rank.items():
            _save_npy(work / "remove" / f"{r:05d}.npy", np.array(sorted(items), dtype=REMOVE_DTYPE))
        write_json_atomic(work / "stats" / "dedup.json", {
            "removed": dict(counts),
            "cluster_sizes": {k: {str(n): c for n, c in sorted(v.items())} for k, v in sizes.items()}})
