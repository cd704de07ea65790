"""Throughput of the data pipeline's hot paths on one core, with their anchors measured in the same run.

- MinHash dedup end to end (shingle, sign, bucket, cluster, filter) on web-sized documents (~3 KB, Zipf words):
  ours (openmimo.data.minhash, rensa and numpy signature backends) vs datatrove's four MinHash stages with the
  same shingles and bands x rows (local executor, one task).  Recall and precision of each on the planted near
  duplicates (copies with a few words changed; hard negatives share half their text), against exact Jaccard.
- rensa's own per-document RMinHash (word tokens) as the signature-rate anchor.
- URL normalisation + dedup (normalise, hash, group) in URLs per CPU second: the column-wise ``url_keys`` (Polars
  on one thread) and the per-URL ``normalize_url`` + ``hash64`` as the anchor, the same keys.
- Decontamination against every evaluation task under ../shared/benchmarks, in MB/s of text.
- The quality tagger's inference in documents/s on 2 threads (bag and one-layer encoders, untrained weights:
  the speed does not depend on them); with ``--tagger-gpu``, a 100M-class tagger on one GPU instead.

    OMP_NUM_THREADS=1 RAYON_NUM_THREADS=1 python bench/bench_dedup.py [--docs 4000] [--json out.json]
    python bench/bench_dedup.py --tagger-gpu --docs 20000      # on a GPU machine: the 100M-class tagger
    python bench/bench_dedup.py --urls-only                    # only the URL dedup
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # URL dedup on one core (before anything imports Polars)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from openmimo.data import minhash  # noqa: E402


def corpus(n: int, seed: int = 0):
    """``(docs, truth)``: n documents of ~480 words; truth = indices of planted near duplicates (to be removed)."""
    r = random.Random(seed)
    vocab = [f"{r.choice('bcdfgklmnprst')}{r.choice('aeiou')}{r.choice('bcdfgklmnprst')}{i}" for i in range(30000)]
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    cdf = np.cumsum(weights) / weights.sum()
    rng = np.random.default_rng(seed)
    docs, truth = [], set()
    while len(docs) < n:
        base = [vocab[i] for i in np.searchsorted(cdf, rng.random(480))]
        docs.append(" ".join(base))
        roll = r.random()
        if roll < 0.15 and len(docs) < n:  # a near duplicate: ~1% of the words changed
            edit = list(base)
            for _ in range(5):
                edit[r.randrange(len(edit))] = r.choice(vocab)
            truth.add(len(docs))
            docs.append(" ".join(edit))
        elif roll < 0.25 and len(docs) < n:  # a hard negative: half the text shared
            docs.append(" ".join(base[:240] + [vocab[i] for i in np.searchsorted(cdf, rng.random(240))]))
    return docs, truth


def exact_truth(docs, truth, ngram=5, threshold=0.8):
    """Planted copies whose exact Jaccard with their source is >= threshold (the oracle's labels)."""
    keep = set()
    for i in truth:
        a, b = minhash.shingle_set(docs[i - 1], ngram), minhash.shingle_set(docs[i], ngram)
        if len(a & b) / len(a | b) >= threshold:
            keep.add(i)
    return keep


def ours(docs, params, backend):
    """Shingle + sign + bucket + cluster + filter in one process; returns (removed indices, wall seconds, kept,
    CPU seconds of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    keys = minhash.text_band_keys(docs, params, backend)
    uf = minhash.UnionFind()
    for a, b in minhash.candidate_pairs(keys).tolist():
        uf.union(a, b)
    removed = {m for root, ms in uf.groups().items() for m in ms if m != root}
    kept = [d for i, d in enumerate(docs) if i not in removed]
    return removed, time.perf_counter() - t0, len(kept), time.process_time() - c0


def datatrove_run(docs, ngram, bands, rows):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.logging import logger

    logger.remove()
    cfg = MinhashConfig(n_grams=ngram, num_buckets=bands, hashes_per_bucket=rows)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "in").mkdir()
        with open(d / "in" / "docs.jsonl", "w") as f:
            for i, t in enumerate(docs):
                f.write(json.dumps({"id": str(i), "text": t}) + "\n")
        reader = JsonlReader(str(d / "in"))
        stages = [
            [reader, MinhashDedupSignature(output_folder=str(d / "sigs"), config=cfg)],
            [MinhashDedupBuckets(input_folder=str(d / "sigs"), output_folder=str(d / "buckets"), config=cfg)],
            [MinhashDedupCluster(input_folder=str(d / "buckets"), output_folder=str(d / "remove"), config=cfg)],
            [JsonlReader(str(d / "in")), MinhashDedupFilter(input_folder=str(d / "remove")),
             JsonlWriter(str(d / "out"), compression=None)],
        ]
        t0 = time.perf_counter()
        for i, p in enumerate(stages):
            tasks = bands if i == 1 else 1
            LocalPipelineExecutor(p, tasks=tasks, workers=1, logging_dir=str(d / f"logs{i}")).run()
        dt = time.perf_counter() - t0
        kept = {json.loads(x)["id"] for f in (d / "out").glob("*.jsonl") for x in f.read_text().splitlines()}
    return {i for i in range(len(docs)) if str(i) not in kept}, dt


def scores(removed, truth):
    hit = len(removed & truth)
    return {"recall": round(hit / max(1, len(truth)), 4), "precision": round(hit / max(1, len(removed)), 4)}


def bench_urls(n=200_000, passes=5):
    """Normalise + hash + group n URLs, column-wise (``url_keys``) and per URL (``hash64(normalize_url(u))``, the
    anchor), in the same run: URLs per CPU second (process time, all threads; Polars on one thread), best pass.
    Grouping is :func:`first_of_each` for both; ``urls_per_cpu_s_np_unique`` is the column-wise path grouped by
    ``np.unique(return_index=True)`` as before, for comparison with earlier rows."""
    import polars as pl

    from openmimo.data.texthash import hash64
    from openmimo.data.urls import normalize_url, url_keys

    r = random.Random(0)
    urls = [f"http{r.choice(['', 's'])}://www.site{r.randint(0, 999)}.com/{r.choice(['post', 'q'])}/{r.randint(0, 10**6)}"
            f"/{r.choice(['', '?utm_source=tw&id=3', '?b=1&a=2', '#c'])}" for _ in range(n)]

    def per_url():
        return np.fromiter((hash64(normalize_url(u)) for u in urls), dtype=np.uint64, count=n)

    def first_of_each(keys):
        """``np.unique(keys, return_index=True)``'s result (each distinct key, and where it first occurs) from one
        unstable argsort: the first occurrence is the smallest index among equal keys (np.unique's stable
        mergesort costs ~5x more here)."""
        order = np.argsort(keys)
        s = keys[order]
        starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
        return s[starts], np.minimum.reduceat(order, starts)

    def timed(keys_of, k, group=first_of_each):
        best, out = None, None
        for _ in range(k):
            c0, t0 = time.process_time(), time.perf_counter()
            keys = keys_of()
            uniq, first = group(keys)
            c, t = time.process_time() - c0, time.perf_counter() - t0
            best = (c, t) if best is None or c < best[0] else best
            out = keys, uniq, first
        return best, out

    (pc, pt), (pkeys, _, pfirst) = timed(per_url, 2)
    url_keys(urls[:5000])  # warm-up (Polars' regex compilation)
    (bc, bt), (bkeys, buniq, bfirst) = timed(lambda: url_keys(urls), passes)
    (uc, _), _ = timed(lambda: url_keys(urls), passes, lambda k: np.unique(k, return_index=True))
    nu, nfirst = np.unique(pkeys, return_index=True)
    assert np.array_equal(pkeys, bkeys) and np.array_equal(pfirst, bfirst)
    assert np.array_equal(nu, buniq) and np.array_equal(nfirst, bfirst)
    return {"urls": n, "polars_threads": pl.thread_pool_size(), "unique": int(bfirst.size),
            "urls_per_cpu_s": round(n / bc), "urls_per_s": round(n / bt),
            "urls_per_cpu_s_np_unique": round(n / uc),
            "per_url_urls_per_cpu_s": round(n / pc), "per_url_urls_per_s": round(n / pt), "speedup": round(pc / bc, 2)}


def bench_decontam(docs):
    from openmimo.data.decontam import Decontaminator, eval_items

    items = eval_items(ROOT.parent / "shared" / "benchmarks")
    t0 = time.perf_counter()
    dec = Decontaminator(items)
    build = time.perf_counter() - t0
    mb = sum(len(d.encode()) for d in docs) / 1e6
    t0 = time.perf_counter()
    for i in range(0, len(docs), 256):
        dec.hits(docs[i:i + 256])
    dt = time.perf_counter() - t0
    return {"tasks": len(items), "ngrams": dec.num_grams, "build_s": round(build, 2), "mb": round(mb, 1),
            "mb_per_s": round(mb / dt, 1)}


def bench_tagger(docs):
    import torch

    from openmimo.data.quality import Tagger, TaggerConfig

    torch.set_num_threads(2)
    out = {}
    for layers in (0, 1):
        m = Tagger(TaggerConfig(layers=layers))
        m.predict(docs[:256])
        t0 = time.perf_counter()
        m.predict(docs)
        out[f"layers{layers}_docs_per_s"] = round(len(docs) / (time.perf_counter() - t0))
    return out


def bench_tagger_gpu(docs):
    """A 100M-class tagger (dim 512, 12 layers, 2 x 65k-bucket embeddings: 92M parameters) on one GPU, bf16."""
    import torch

    from openmimo.data.quality import Tagger, TaggerConfig

    m = Tagger(TaggerConfig(dim=512, layers=12, heads=8, max_words=128)).cuda()
    params = sum(p.numel() for p in m.parameters())
    m.predict(docs[:1024], batch_size=512)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    m.predict(docs, batch_size=512)
    torch.cuda.synchronize()
    return {"params": params, "gpu": torch.cuda.get_device_name(), "docs_per_s": round(len(docs) / (time.perf_counter() - t0))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tagger-gpu", action="store_true", help="only the 100M-class tagger on the GPU")
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--json", default="")
    ap.add_argument("--urls-only", action="store_true", help="only the URL normalise + hash + group bench")
    a = ap.parse_args()
    if a.urls_only:
        res = {"url_dedup": bench_urls()}
        print(json.dumps(res, indent=2))
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
        return
    docs, planted = corpus(a.docs)
    if a.tagger_gpu:
        res = {"docs": len(docs), "avg_bytes": round(sum(map(len, docs)) / len(docs)), "tagger_gpu": bench_tagger_gpu(docs)}
        print(json.dumps(res, indent=2))
        return
    truth = exact_truth(docs, planted)
    res = {"docs": len(docs), "avg_bytes": round(sum(map(len, docs)) / len(docs)), "planted": len(planted),
           "truth_j>=0.8": len(truth)}
    p = minhash.MinHashParams(ngram=5, bands=14, rows=8, seed=1)
    for backend in ("rensa", "numpy"):
        ours(docs[:300], p, backend)  # warm-up (power tables)
        runs = [ours(docs, p, backend) for _ in range(3)]
        removed = runs[0][0]
        res[f"ours_{backend}"] = {"docs_per_s": round(len(docs) / min(r[1] for r in runs)),
                                  "docs_per_cpu_s": round(len(docs) / min(r[3] for r in runs)), **scores(removed, truth)}
        print(backend, res[f"ours_{backend}"], flush=True)
    import rensa

    t0 = time.perf_counter()
    for d in docs:
        m = rensa.RMinHash(num_perm=112, seed=1)
        m.update(d.split())
        m.digest()
    res["rensa_per_doc_signatures_per_s"] = round(len(docs) / (time.perf_counter() - t0))
    if not a.skip_datatrove:
        try:
            removed, dt = datatrove_run(docs, 5, 14, 8)
            res["datatrove"] = {"docs_per_s": round(len(docs) / dt), **scores(removed, truth)}
        except ImportError as e:
            res["datatrove"] = {"error": str(e)}
        print("datatrove", res["datatrove"], flush=True)
    res["url_dedup"] = bench_urls()
    print("url_dedup", res["url_dedup"], flush=True)
    res["decontam"] = bench_decontam(docs)
    res["tagger"] = bench_tagger(docs[:2000])
    print(json.dumps(res, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
