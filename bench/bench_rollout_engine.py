"""The paper's Table 2 on our system: the five rollout modes with the real generation engine and real rewards.

    python bench/bench_rollout_engine.py --model CKPT --problems JSONL [--problems JSONL2 ...] [--levels 1 2]
        [--steps 3] [--batch 16] [--n 8] [--slots 128] [--max-new-tokens 128] [--temperature 1.0]
        [--reward-workers 8] [--modes none naive continuous async_rewards early_termination]
        [--device auto] [--dtype auto] [--json OUT]

What is measured.  ``--steps`` calls of :meth:`SeamlessRollout.collect` per mode (one training batch of
``--batch`` groups of ``--n`` samples each), driving :class:`EngineBackend` over one
:class:`openmimo.infer.engine.Engine` (continuous batching, ``--slots`` concurrent sequences; on CUDA the
engine's compiled CUDA-graph decode with host overlap, weights in ``--dtype``, bfloat16 by default)
and :class:`PoolRewards` (the trainer's ``kind: auto`` loader and scorer: a record with ``tests`` is a
code problem scored by the code judge, any other a math problem scored by Math-Verify in a
:class:`RewardPool` of ``--reward-workers`` processes).

The weights are frozen: one model and one engine serve every mode and nothing is trained between steps,
so the modes differ only in scheduling (the isolation of Table 2; a real run's weight updates would
change the pass rate and response lengths from step to step).  Every mode sees the same problems in
the same order (``ProblemSampler`` with no easy pool and the same seed) and the g-th launched group
gets the same sampling seed in every mode, so the samples of a launch are the same whatever the mode
(up to the numerics of batch composition on GPU).  Before timing, one untimed generation of the
longest prompt to ``--max-new-tokens`` (no stop token) compiles the decode graphs for every attention
bucket the run can reach, and every reward worker scores a well-formed answer (imports, judge start).
Between steps the engine and the reward pool are drained, untimed (the place of the update and weight
sync in training).

Metrics (docs/rl.md; :mod:`openmimo.rl.rollout`): time per step = rollout + reward wall seconds;
GPU idle = 1 - useful slot-seconds / (slots x time), a slot being useful while it holds a sequence of a
group that was not aborted (so an under-filled engine, host-side scoring and aborted work all count
as idle); sample waste = valid groups finished beyond the batch / batch.  Prints a Markdown table with
the device, the model, the measured pass rate and response-length skew, and the paper's figures as
the anchor; ``--json`` writes every number (per-step metrics included).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

try:
    import openmimo  # noqa: F401
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openmimo.infer.engine import Engine, SamplingParams
from openmimo.model.hf import load_model
from openmimo.rewards.math import require_math_verify
from openmimo.rewards.pool import RewardPool
from openmimo.rl.backends import EngineBackend, Finished, PoolRewards, make_score_fn
from openmimo.rl.problems import load_problems
from openmimo.rl.rollout import MODES, RolloutConfig, SeamlessRollout
from openmimo.rl.sampler import ProblemSampler
from openmimo.runtime import init_runtime, seed_everything
from openmimo.tokenizer import load_tokenizer

PAPER = {"source": "MiMo-7B report, Table 2 (256 GPUs)", "speedup_early_termination_vs_naive": 2.29,
         "gpu_idle_naive": 0.693, "gpu_idle_early_termination": 0.277,
         "sample_waste_naive": 0.221, "sample_waste_early_termination": 0.129}
MEAN_KEYS = ("time_s", "gpu_idle_ratio", "sample_waste_ratio", "launches", "aborted_tokens", "aborted_sequences",
             "pass_rate", "valid_group_fraction", "selected_groups", "generated_tokens", "engine_tokens",
             "response_len_mean", "response_len_max", "reward_wait_s", "rounds", "decode_steps", "decode_s",
             "prefill_s", "reward_errors", "reward_error_rate")


# -- rewards and bookkeeping ---------------------------------------------------------------------------
class TrackedScores:
    """Wraps a score function and keeps its futures, so that the bench can wait, untimed, for the
    scoring of aborted groups (which the rollout forgets but the workers still run) between steps."""

    def __init__(self, fn):
        self.fn, self.futures = fn, []

    def __call__(self, problem, fin):
        f = self.fn(problem, fin)
        if isinstance(f, cf.Future):
            self.futures.append(f)
        return f

    def settle(self, timeout: float = 120.0) -> None:
        cf.wait(self.futures, timeout=timeout)
        self.futures = []


class RecordingBackend(EngineBackend):
    """:class:`EngineBackend` that also keeps the length and finish reason of every finished sample."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.finished: list[tuple[int, str]] = []

    def poll(self, until=None):
        done = super().poll(until)
        self.finished += [(len(f.token_ids), f.finish_reason) for f in done]
        return done


def drain(engine) -> None:
    """Run the engine until nothing is queued, running, in flight or pending (abort notices)."""
    while engine.has_unfinished():
        engine.step()


def length_stats(finished, max_new: int) -> dict:
    lens = sorted(L for L, _ in finished)
    if not lens:
        return {"count": 0}

    def q(p):
        return lens[min(len(lens) - 1, int(p * len(lens)))]

    return {"count": len(lens), "mean": statistics.mean(lens), "p50": q(0.5), "p90": q(0.9), "max": lens[-1],
            "min": lens[0], "truncated_fraction": sum(1 for _, r in finished if r == "length") / len(lens),
            "max_new_tokens": max_new}


# -- the run --------------------------------------------------------------------------------------------
def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}, {torch.get_num_threads()} torch threads"


def run_mode(mode: str, ctx: dict, args) -> dict:
    engine, problems = ctx["engine"], ctx["problems"]
    backend = RecordingBackend(engine, ctx["params"], seed=args.seed)
    rewards = PoolRewards(ctx["score"])
    sampler = ProblemSampler(len(problems), seed=args.seed, use_easy_pool=False)
    cfg = RolloutConfig(mode=mode, n=args.n, batch_groups=args.batch, max_launch_factor=args.max_launch_factor)
    ro = SeamlessRollout(backend, rewards, sampler, problems, cfg)
    steps, short = [], 0
    for _ in range(args.steps):
        c0 = dict(engine.counters)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, m = ro.collect()
        short += sum(1 for w in caught if "groups for this batch" in str(w.message))
        c1 = engine.counters
        m["engine_tokens"] = c1["generated_tokens"] - c0["generated_tokens"]  # aborted and discarded work included
        m["decode_steps"] = c1["decode_steps"] - c0["decode_steps"]
        m["decode_s"] = c1["decode_seconds"] - c0["decode_seconds"]
        m["prefill_s"] = c1["prefill_seconds"] - c0["prefill_seconds"]
        steps.append(m)
        drain(engine)  # untimed: where training would update and sync the weights
        ctx["score"].settle()
    mean = {k: statistics.mean(float(s[k]) for s in steps) for k in MEAN_KEYS}
    mean["tokens_per_s"] = mean["engine_tokens"] / max(mean["time_s"], 1e-12)
    mean["ms_per_decode_step"] = 1e3 * mean["decode_s"] / max(mean["decode_steps"], 1)
    return {"mean": mean, "steps": steps, "short_batches": short,
            "lengths": length_stats(backend.finished, args.max_new_tokens)}


def reweight_code(problems: list, share: float) -> list:
    """The problem list with each code problem repeated so that code makes up ``share`` of it (the draws
    of a uniform sampler): a few code problems among thousands of math ones would otherwise almost never
    be drawn.  Math keeps its order; copies of code problems are spread evenly through it."""
    code = [p for p in problems if "tests" in p]
    math = [p for p in problems if "tests" not in p]
    if not code or not math or not 0 < share < 1:
        raise SystemExit(f"--code-share {share}: needs math and code problems and 0 < share < 1")
    n_code = round(share * len(math) / (1 - share))
    every = (len(math) + n_code) / n_code
    out, ci = [], 0
    for m in math:
        out.append(m)
        while ci < n_code and len(out) >= every * (ci + 1) - 1:
            out.append(code[ci % len(code)])
            ci += 1
    out += [code[i % len(code)] for i in range(ci, n_code)]
    return out


def setup(args, score_fn=None) -> dict:
    rt = init_runtime(args.device, args.dtype)
    seed_everything(args.seed)
    tok = load_tokenizer(args.model)
    # kind "auto": per record, code when it has "tests" (scored by the judge), math otherwise (Math-Verify)
    problems, counts = load_problems(args.problems, "auto", tok, args.max_prompt_tokens, levels=args.levels or ())
    if args.code_share > 0:
        problems = reweight_code(problems, args.code_share)
        counts = {**counts, "code_share": args.code_share, "list_size": len(problems)}
    if score_fn is None and counts["math"]:
        require_math_verify()  # a missing verifier would score every sample 0: a meaningless table
    model = load_model(args.model, dtype=rt.dtype, device=rt.device)
    longest = max(len(p["prompt_ids"]) for p in problems)
    max_len = min(longest + args.max_new_tokens + 1, model.config.max_position_embeddings)
    compile_ = None if args.compile == "auto" else args.compile == "on"
    engine = Engine(model, max_slots=args.slots, max_len=max_len, spec_k=args.spec_k, compile=compile_,
                    seed=args.seed)
    stop = tuple(x for x in (tok.eos_id,) if x is not None)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            stop_ids=stop)
    pool = RewardPool(args.reward_workers, timeout=args.reward_timeout)
    score = TrackedScores(score_fn or make_score_fn("auto", tok, pool, args.reward_timeout))
    return {"rt": rt, "tok": tok, "problems": problems, "counts": counts, "model": model, "engine": engine,
            "params": params, "pool": pool, "score": score, "max_len": max_len, "longest_prompt": longest}


def warm_up(ctx: dict, args) -> float:
    """Untimed: the longest prompt to max_new_tokens (no stop) compiles every decode bucket the run can
    reach; then every reward worker scores a well-formed answer (imports, judge start-up).  Returns seconds."""
    t0 = time.perf_counter()
    engine, problems, tok, score = ctx["engine"], ctx["problems"], ctx["tok"], ctx["score"]
    rec = max(problems, key=lambda p: len(p["prompt_ids"]))
    p = dataclasses.replace(ctx["params"], n=min(args.n, engine.slots), stop_ids=(), seed=args.seed + 7777)
    for c in engine.generate([rec["prompt_ids"]], p)[0]:
        score(rec, Finished(-1, c.index, c.token_ids, c.logprobs, c.finish_reason or "", 0.0))
    math_rec = next((q for q in problems if "tests" not in q), None)
    code_rec = next((q for q in problems if "tests" in q), None)
    if math_rec is not None:  # the first task of a pool worker imports the verifier: reach them all
        ids = tok.encode(f"The answer is \\boxed{{{math_rec['answer']}}}.")
        for i in range(2 * args.reward_workers):
            score(math_rec, Finished(-1, i, ids, [], "stop", 0.0))
    if code_rec is not None:
        ids = tok.encode("print(0)\n```\n")  # the code prompt opened the fence (CODE_OPEN)
        score(code_rec, Finished(-1, 0, ids, [], "stop", 0.0))
    score.settle()
    drain(engine)
    engine.reset_stats()
    if ctx["rt"].device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def print_report(res: dict) -> None:
    c, modes = res["config"], res["modes"]
    base = modes.get("naive", {}).get("mean", {}).get("time_s")
    ref = modes.get("none") or next(iter(modes.values()))
    L = ref["lengths"]
    print(f"device: {res['device']} · dtype {c['dtype_resolved']} · compiled decode {res['engine']['compiled']} · "
          f"torch {torch.__version__} · commit {res['commit']} · {res['date']}")
    print(f"model: {c['model']} ({res['engine']['parameters'] / 1e6:.1f}M parameters) · problems: "
          f"{res['problems']['kept']} ({res['problems']['math']} math, {res['problems']['code']} code"
          f"{', levels ' + ' '.join(map(str, c['levels'])) if c['levels'] else ''}) from {', '.join(c['problems'])}")
    print(f"batch {c['batch']} groups x {c['n']} samples, {res['engine']['slots']} slots, max {c['max_new_tokens']} "
          f"new tokens, temperature {c['temperature']}, {c['reward_workers']} reward workers, {c['steps']} steps "
          f"per mode, launch limit {c['max_launch_factor']:g} x batch; frozen weights; warm-up {res['warmup_s']:.1f} s")
    which = "none" if "none" in modes else next(iter(modes))
    print(f"measured ({which} mode, every launched sample): pass rate {ref['mean']['pass_rate']:.3f}, valid-group "
          f"fraction {ref['mean']['valid_group_fraction']:.3f}; response length mean {L.get('mean', 0):.1f}, "
          f"p50 {L.get('p50', 0)}, p90 {L.get('p90', 0)}, max {L.get('max', 0)} tokens "
          f"({100 * L.get('truncated_fraction', 0):.0f}% hit the limit)\n")
    print("| mode | time/step (s) | vs naive | GPU idle | sample waste | launches/step | aborted tok/step "
          "| batch filled | pass rate | tok/s | ms/decode step | reward wait (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m, r in modes.items():
        x = r["mean"]
        vs = f"{base / x['time_s']:.2f}x" if base else "-"
        print(f"| {m} | {x['time_s']:.2f} | {vs} | {100 * x['gpu_idle_ratio']:.1f}% | "
              f"{100 * x['sample_waste_ratio']:.1f}% | {x['launches']:.1f} | {x['aborted_tokens']:.0f} | "
              f"{x['selected_groups']:.1f}/{c['batch']} | {x['pass_rate']:.3f} | {x['tokens_per_s']:.0f} | "
              f"{x['ms_per_decode_step']:.1f} | {x['reward_wait_s']:.2f} |")
    print(f"\nAnchor (paper, 256 GPUs): early termination {PAPER['speedup_early_termination_vs_naive']}x faster than "
          f"naive dynamic sampling, GPU idle {100 * PAPER['gpu_idle_naive']:.1f}% -> "
          f"{100 * PAPER['gpu_idle_early_termination']:.1f}%, sample waste {100 * PAPER['sample_waste_naive']:.1f}% "
          f"-> {100 * PAPER['sample_waste_early_termination']:.1f}%.")
    errs = {m: r["mean"].get("reward_errors", 0) for m, r in modes.items() if r["mean"].get("reward_errors", 0)}
    if errs:
        print("WARNING: rewards crashed or timed out (scored 0), per step: "
              + ", ".join(f"{m} {k:.0f}" for m, k in errs.items()))
    short = {m: r["short_batches"] for m, r in modes.items() if r["short_batches"]}
    if short:
        print(f"Short batches (launch limit reached before {c['batch']} valid groups): "
              + ", ".join(f"{m} {k}/{c['steps']}" for m, k in short.items()))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="HF-layout checkpoint folder with its tokenizer")
    ap.add_argument("--problems", action="append", required=True,
                    help="JSONL of problems (math: problem/answer; a record with 'tests' is code); repeatable")
    ap.add_argument("--levels", type=int, nargs="+", default=[],
                    help="keep only records of these 'level's (records without a level are kept)")
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--code-share", type=float, default=0.0,
                    help="repeat code problems so they are this share of the draws (0 = as loaded)")
    ap.add_argument("--steps", type=int, default=3, help="collect() calls per mode")
    ap.add_argument("--batch", type=int, default=16, help="groups (prompts) per training batch")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--slots", type=int, default=128, help="engine slots (concurrent sequences)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--max-launch-factor", type=float, default=8.0,
                    help="stop launching after batch x this many groups in one step (RolloutConfig)")
    ap.add_argument("--reward-workers", type=int, default=8)
    ap.add_argument("--reward-timeout", type=float, default=10.0)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="engine weights: auto = bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                    help="the engine's compiled CUDA-graph decode (auto = on CUDA)")
    ap.add_argument("--spec-k", type=int, default=0, help="MTP speculative decoding (0 = off, as in RL training)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="write every number here")
    return ap


def main(argv=None, score_fn=None) -> dict:
    """Run the bench; returns what ``--json`` writes.  ``score_fn`` replaces the rewards (tests only)."""
    args = build_parser().parse_args(argv)
    args.modes = list(dict.fromkeys(args.modes))
    t_start = time.time()
    ctx = setup(args, score_fn)
    try:
        warm_s = warm_up(ctx, args)
        modes = {}
        for m in args.modes:
            modes[m] = run_mode(m, ctx, args)
            print(f"[bench] {m}: {modes[m]['mean']['time_s']:.2f} s/step", file=sys.stderr, flush=True)
    finally:
        ctx["pool"].close()
    eng, rt = ctx["engine"], ctx["rt"]
    config = {k: v for k, v in vars(args).items()}
    config["dtype_resolved"] = str(rt.dtype).replace("torch.", "")
    res = {"date": datetime.date.today().isoformat(), "commit": _commit(), "device": device_name(rt.device),
           "torch": torch.__version__, "config": config, "problems": ctx["counts"],
           "engine": {"slots": eng.slots, "max_len": ctx["max_len"], "compiled": eng.compiled, "overlap": eng.overlap,
                      "parameters": sum(p.numel() for p in ctx["model"].parameters()),
                      "longest_prompt": ctx["longest_prompt"]},
           "warmup_s": warm_s, "modes": modes, "paper": PAPER, "wall_s": time.time() - t_start}
    if "naive" in modes:
        for r in modes.values():
            r["mean"]["speedup_vs_naive"] = modes["naive"]["mean"]["time_s"] / max(r["mean"]["time_s"], 1e-12)
    print_report(res)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return res


if __name__ == "__main__":
    main()
