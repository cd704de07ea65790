"""Weight sync into Ray rollout workers: wall time of ``RayRolloutBackend.update_weights`` for the object-store and
the collective (NCCL / gloo broadcast) paths, on a MiMo-shaped model of a chosen size.

    python bench/bench_weight_sync.py --layers 8 --hidden 1024 --workers 2          # CPU: gloo, fp32 workers
    python bench/bench_weight_sync.py --shape mimo-7b --workers 8 --gpus-per-worker 1  # one node of GPUs: NCCL

Timed: from the call to every worker holding the new weights (``ray.get`` of their copies), median of
``--repeats`` after one warm-up sync; checked: every worker's weights equal the sent ones (``--check``, CPU
copies).  The bytes moved per worker are the model's parameters in the workers' dtype.  Prints one line per path
and writes JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openmimo.infer.engine import SamplingParams  # noqa: E402
from openmimo.model.config import MiMoConfig  # noqa: E402
from openmimo.model.mimo import build_model  # noqa: E402
from openmimo.rl.ray_rollout import RayRolloutBackend, cpu_state_dict  # noqa: E402


def config(args) -> MiMoConfig:
    if args.shape == "mimo-7b":
        return MiMoConfig(vocab_size=151680, hidden_size=4096, intermediate_size=11008, num_hidden_layers=36,
                          num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                          num_nextn_predict_layers=1, tie_word_embeddings=False)
    heads = max(1, args.hidden // 64)
    return MiMoConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 2,
                      num_hidden_layers=args.layers, num_attention_heads=heads,
                      num_key_value_heads=2 if heads % 2 == 0 else 1,
                      max_position_embeddings=512, num_nextn_predict_layers=1, tie_word_embeddings=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["custom", "mimo-7b"], default="custom")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--gpus-per-worker", type=float, default=0.0)
    ap.add_argument("--paths", nargs="+", choices=["object_store", "collective"], default=["object_store", "collective"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    cfg = config(args)
    device = "cuda" if args.gpus_per_worker and torch.cuda.is_available() else "cpu"
    model = build_model(cfg, device=device, dtype=torch.float32, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {"date": str(datetime.date.today()), "commit": commit, "params": n_params, "workers": args.workers,
              "gpus_per_worker": args.gpus_per_worker, "device": device, "rows": []}
    print(f"{n_params / 1e6:.1f}M parameters (fp32 on the trainer's {device}), {args.workers} workers, "
          f"{args.gpus_per_worker} GPUs each; commit {commit}", flush=True)
    for path in args.paths:
        t0 = time.perf_counter()
        b = RayRolloutBackend(cfg.to_hf_dict(), model.state_dict(), SamplingParams(max_new_tokens=1),
                              workers=args.workers, engine_kwargs={"max_slots": 1, "max_len": 64},
                              gpus_per_worker=args.gpus_per_worker, weight_sync=path)
        start = time.perf_counter() - t0
        try:
            times = []
            for i in range(args.repeats + 1):
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(1e-3)  # new weights every sync
                t = time.perf_counter()
                b.update_weights(model)
                if i:
                    times.append(time.perf_counter() - t)
            ok = None
            if args.check:
                import ray

                want = cpu_state_dict(model)
                dtype = next(iter(ray.get(b.workers[0].state_dict.remote()).values())).dtype
                ok = all(torch.equal(sd[k], want[k].to(dtype)) for sd in ray.get([w.state_dict.remote()
                                                                                  for w in b.workers]) for k in sd)
            elem = 2 if args.gpus_per_worker else 4
            row = {"path": path, "median_s": statistics.median(times), "times_s": times, "start_s": start,
                   "bytes_per_worker": n_params * elem, "exact": ok}
            row["GBps_per_worker"] = row["bytes_per_worker"] / row["median_s"] / 1e9
            report["rows"].append(row)
            print(f"{path}: {row['median_s']:.3f} s per sync (median of {args.repeats}; {row['GBps_per_worker']:.2f} "
                  f"GB/s per worker), set-up {start:.1f} s, weights exact: {ok}", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=1))
        finally:
            b.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
