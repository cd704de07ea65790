"""The per-document stages of `openmimo data` after dedup, as datatrove pipeline steps.

- :class:`FinishDocs` (one task per input shard): drop the task's duplicates, decontaminate
  (:mod:`openmimo.data.decontam`), tag (:mod:`openmimo.data.quality`; tags go to the record as
  ``domain``/``edu``/``junk``) and put each document into the first mixture bin that accepts it (source,
  domain, ``min_edu``, ``max_junk``).  Each bin's documents of this task go to ``work/bins/<bin>/<rank>.jsonl``
  sorted by document key.  Counts per source and reason, contamination hits per evaluation task and tag
  distributions go to ``work/stats/finish/<rank>.json``.
- :class:`PrepareTokenizer` (one task): copy the configured tokenizer, or train a byte-level BPE on the
  kept text (the tiny default), into ``OUT/tokenizer``.
- :class:`WriteShards` (one task per bin): merge the bin's sorted task files by document key (streaming) and
  tokenise them into ``OUT/shards/<bin>`` — the format ``openmimo pretrain`` reads (``eos`` after each
  document; document boundaries kept in the index).  The order is the key order, so the shards do not depend
  on the number of tasks or workers.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep

from openmimo.data.pipeline_config import BinConfig, DataPipelineConfig
from openmimo.data.pipeline_dedup import REASONS
from openmimo.data.pipeline_readers import write_json_atomic


def accepts(b: BinConfig, source: str, tags: dict | None) -> bool:
    if b.sources and source not in b.sources:
        return False
    if tags is None:
        return True
    return ((not b.domains or tags["domain"] in b.domains) and tags["edu"] >= b.min_edu
            and tags["junk"] <= b.max_junk)


def load_decontaminator(cfg: DataPipelineConfig):
    from openmimo.data.decontam import Decontaminator, eval_items

    d = cfg.decontam
    items = eval_items(d.benchmarks or None, d.world or None)
    return Decontaminator(items, d.ngram, "alnum", d.min_exact_words) if items else None


class FinishDocs(PipelineStep):
    name = "dedup filter + decontaminate + tag + bin"
    type = "openmimo"

    def __init__(self, cfg: DataPipelineConfig, work: str):
        super().__init__()
        self.cfg, self.work = cfg, work

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from openmimo.data.quality import load_tagger  # torch: loaded in the worker, only when tagging

        cfg, work = self.cfg, Path(self.work)
        rem = np.load(work / "remove" / f"{rank:05d}.npy")
        removed = dict(zip(rem["idx"].tolist(), rem["reason"].tolist()))
        dec = load_decontaminator(cfg) if cfg.decontam.enabled else None
        tagger = load_tagger(cfg.tagger) if cfg.tagger else None
        counts: Counter = Counter()
        contamination: Counter = Counter()
        tags_hist: Counter = Counter()
        bins: dict[str, list] = {b.name: [] for b in cfg.bins}

        def process(batch: list[dict]):
            hits = dec.hits([d["text"] for d in batch]) if dec else [()] * len(batch)
            clean = [d for d, h in zip(batch, hits) if not h]
            for d, h in zip(batch, hits):
                if h:
                    counts[f"{d['source']}:contaminated"] += 1
                    contamination.update(h)
            tags = tagger.predict([d["text"] for d in clean]) if tagger else [None] * len(clean)
            for d, t in zip(clean, tags):
                src = d["source"]
                if t is not None:
                    d.update(domain=t["domain"], edu=t["edu"], junk=t["junk"])
                    tags_hist[f"{src}:domain:{t['domain']}"] += 1
                    tags_hist[f"{src}:edu:{min(int(t['edu']), 4)}"] += 1  # edu 4-5 share the top bucket
                    tags_hist[f"{src}:junk:{int(t['junk'] >= 0.5)}"] += 1
                b = next((b for b in cfg.bins if accepts(b, src, t)), None)
                if b is None:
                    counts[f"{src}:below_quality"] += 1
                    continue
                counts[f"{src}:kept"] += 1
                counts[f"{src}:kept_chars"] += len(d["text"])
                counts[f"bin:{b.name}:{src}"] += 1
                bins[b.name].append((d["key"], json.dumps(d, ensure_ascii=False)))

        batch: list[dict] = []
        with open(work / "docs" / f"{rank:05d}.jsonl", encoding="utf-8") as f:
            for idx, line in enumerate(f):
                d = json.loads(line)
                if idx in removed:
                    counts[f"{d['source']}:{REASONS[removed[idx]]}"] += 1
                    continue
                batch.append(d)
                if len(batch) >= cfg.batch_docs:
                    process(batch)
                    batch = []
        if batch:
            process(batch)
        for name, items in bins.items():
            items.sort()
            out = work / "bins" / name / f"{rank:05d}.jsonl"
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
            with open(tmp, "w", encoding="utf-8") as g:
                g.writelines(line + "\n" for _, line in items)
            os.replace(tmp, out)
        write_json_atomic(work / "stats" / "finish" / f"{rank:05d}.json",
                          {"counts": dict(counts), "contamination": dict(contamination), "tags": dict(tags_hist),
                           "eval_tasks": dict(dec.items_per_task) if dec else {}})


def bin_files(cfg: DataPipelineConfig, work: Path, name: str) -> list[Path]:
    return [work / "bins" / name / f"{r:05d}.jsonl" for r in range(cfg.tasks)]


def iter_bin(cfg: DataPipelineConfig, work: Path, name: str):
    """The bin's documents (dicts) in document-key order, merged from the tasks' sorted files."""
    files = [open(p, encoding="utf-8") for p in bin_files(cfg, work, name)]
    try:
        streams = [((json.loads(line)["key"], i, line) for line in f) for i, f in enumerate(files)]
        for _, _, line in heapq.merge(*streams):
            yield json.loads(line)
    finally:
        for f in files:
            f.close()


class PrepareTokenizer(PipelineStep):
    name = "tokenizer"
    type = "openmimo"

    def __init__(self, cfg: DataPipelineConfig, work: str, out: str):
        super().__init__()
        self.cfg, self.work, self.out = cfg, work, out

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from openmimo.tokenizer import load_tokenizer, train_tokenizer  # tokenizers: only this stage needs it

        dst = Path(self.out) / "tokenizer"
        tmp = dst.with_name(f"tokenizer.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        if self.cfg.tokenizer:
            tok = load_tokenizer(self.cfg.tokenizer)
        else:
            texts = (d["text"] for b in self.cfg.bins for d in iter_bin(self.cfg, Path(self.work), b.name))
            tok = train_tokenizer(texts, vocab_size=self.cfg.tokenizer_vocab)
        tok.save(tmp)
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)


class WriteShards(PipelineStep):
    name = "token shards"
    type = "openmimo"

    def __init__(self, cfg: DataPipelineConfig, work: str, out: str):
        super().__init__()
        self.cfg, self.work, self.out = cfg, work, out

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from openmimo.data.shards import write_shards
        from openmimo.tokenizer import load_tokenizer

        cfg, b = self.cfg, self.cfg.bins[rank]
        tok = load_tokenizer(Path(self.out) / "tokenizer")
        per_source: Counter = Counter()

        def docs():
            batch: list[dict] = []

            def emit():
                for d, ids in zip(batch, tok.encode_batch([x["text"] for x in batch])):
                    per_source[f"{d['source']}:docs"] += 1
                    per_source[f"{d['source']}:tokens"] += len(ids) + 1
                    yield ids + [tok.eos_id]

            for d in iter_bin(cfg, Path(self.work), b.name):
                batch.append(d)
                if len(batch) >= cfg.batch_docs:
                    yield from emit()
                    batch = []
            yield from emit()

        meta = write_shards(docs(), Path(self.out) / "shards" / b.name, tok.vocab_size, cfg.tokens_per_shard,
                            extra_meta={"source": {"pipeline": "openmimo data", "bin": b.name}}, overwrite=True)
        write_json_atomic(Path(self.work) / "stats" / "shards" / f"{b.name}.json",
                          {"docs": meta["num_docs"], "tokens": meta["num_tokens"], "per_source": dict(per_source)})
