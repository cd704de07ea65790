"""Decontamination throughput by CPU time: the documents of bench_dedup.py (~3.2 KB web-sized pages) checked
against every evaluation task under ../shared/benchmarks, in MB of text per CPU second of this process.

CPU time (``time.process_time``) rather than wall time, so that other jobs on a shared machine inflate the
reading less; best and median of ``--passes`` passes over the documents, in batches of ``--batch`` texts as the
pipeline passes them.  ``hit_docs`` (documents with any hit) is there to compare two versions' results.

    OMP_NUM_THREADS=1 python bench/bench_decontam.py [--docs 3000] [--passes 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_dedup import corpus  # noqa: E402
from openmimo.data.decontam import Decontaminator, eval_items  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--benchmarks", default=str(ROOT.parent / "shared" / "benchmarks"))
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    docs, _ = corpus(a.docs)
    items = eval_items(a.benchmarks)
    t0 = time.process_time()
    dec = Decontaminator(items)
    build = time.process_time() - t0
    mb = sum(len(d.encode()) for d in docs) / 1e6
    batches = [docs[i:i + a.batch] for i in range(0, len(docs), a.batch)]
    hit_docs = sum(bool(h) for b in batches for h in dec.hits(b))  # also the warm-up pass
    rates = []
    for _ in range(a.passes):
        t0 = time.process_time()
        for b in batches:
            dec.hits(b)
        rates.append(mb / (time.process_time() - t0))
    res = {"tasks": len(items), "ngrams": dec.num_grams, "build_cpu_s": round(build, 2), "mb": round(mb, 1),
           "hit_docs": hit_docs, "mb_per_cpu_s_best": round(max(rates), 1),
           "mb_per_cpu_s_median": round(statistics.median(rates), 1), "load_average": os.getloadavg()}
    print(json.dumps(res, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
