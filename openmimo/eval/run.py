"""`openmimo eval`: tasks x (our engine on a checkpoint | any OpenAI-compatible server) -> results.json.

    openmimo eval --model PATH | --endpoint URL [--api-model NAME] --tasks math500,aime24,... \\
        [--samples K] [--temperature 0.6] [--top-p 0.95] [--max-tokens N] [--limit N] \\
        [--chat | --base | --fewshot] [--data-dir DIR] [--task-file NAME=PATH] --output results.json

Every prompt is sampled ``K`` times (MiMo's protocol: temperature 0.6, top-p 0.95); each sample is
scored by its task (math: Math-Verify in the reward pool; code: the isolated judge, all tests must
pass) while generation continues, and appended to ``<output stem>.samples.jsonl`` with its prompt,
response, extracted answer, score and reason, so every number can be audited.  ``results.json``
holds, per task, ``n`` (problems), ``k``, ``avg@k``, unbiased ``pass@1 .. pass@k``, mean response
length (tokens), truncation rate, failed requests, and the same figures per level / subject where
the data has them; plus wall time and tokens/s.  A markdown table is printed at the end.

Killed and re-run with the same ``--output``, it resumes from the samples file (prompts with all
their samples are not asked again); the settings are kept in ``<output stem>.run.json`` and a
re-run with different ones is refused unless ``--overwrite``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import zlib
from pathlib import Path

from openmimo.config import UsageError
from openmimo.eval.backends import EndpointBackend, EngineBackend, Request, Sample
from openmimo.eval.passk import summarise
from openmimo.eval.tasks import TASKS, get_task

DEFAULT_TASKS = "math500,aime24,aime25,amc23,gsm8k,minerva,humaneval,mbpp,livecodebench,codecontests"
SETTINGS = ("source", "style", "samples", "temperature", "top_p", "max_tokens", "seed")


def add_source_arguments(parser, required: bool = True) -> None:
    """--model | --endpoint and their options (shared with `openmimo curate`)."""
    from openmimo.infer.generate import add_engine_arguments

    src = parser.add_mutually_exclusive_group(required=required)
    src.add_argument("--model", help="HF-layout checkpoint folder: generate with openmimo's engine")
    src.add_argument("--endpoint", help="base URL of an OpenAI-compatible server (e.g. http://localhost:8000)")
    parser.add_argument("--api-model", default=None, help="model name to send to --endpoint (default: its first model)")
    parser.add_argument("--concurrency", type=int, default=16, help="--endpoint: requests in flight")
    parser.add_argument("--retries", type=int, default=4, help="--endpoint: retries of a failed request (backoff)")
    add_engine_arguments(parser)
    parser.set_defaults(spec_k=None)  # default: every MTP layer the checkpoint has


def add_style_arguments(parser) -> None:
    style = parser.add_mutually_exclusive_group()
    style.add_argument("--chat", dest="style", action="store_const", const="chat",
                       help="chat prompts through the checkpoint's (or server's) chat template (default)")
    style.add_argument("--base", dest="style", action="store_const", const="base", help="plain completion prompts")
    style.add_argument("--fewshot", dest="style", action="store_const", const="fewshot",
                       help="completion prompts after worked examples")
    parser.set_defaults(style="chat")


def add_arguments(parser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help=f"comma-separated, from: {', '.join(TASKS)}")
    parser.add_argument("--samples", type=int, default=4, help="samples per problem, k (avg@k, pass@1..k)")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--max-tokens", type=int, default=4096, help="tokens generated per sample at most")
    parser.add_argument("--limit", type=int, default=0, help="first N problems of each task (0 = all)")
    add_style_arguments(parser)
    parser.add_argument("--data-dir", default=None, help="benchmark folder (default: ../shared/benchmarks)")
    parser.add_argument("--task-file", action="append", default=[], metavar="NAME=PATH",
                        help="read task NAME from PATH (JSONL, .jsonl.gz, JSON list or Parquet); repeatable")
    parser.add_argument("--output", required=True, help="results JSON; samples go next to it")
    parser.add_argument("--overwrite", action="store_true", help="start over instead of resuming an earlier run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")


def paths_for(output: str | Path) -> tuple[Path, Path, Path]:
    out = Path(output)
    return out, out.with_name(out.stem + ".samples.jsonl"), out.with_name(out.stem + ".run.json")


def _task_files(specs: list[str]) -> dict[str, str]:
    files = {}
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not path:
            raise UsageError(f"--task-file must be NAME=PATH, got {s!r}")
        get_task(name)
        files[name] = path
    return files


def read_samples(path: Path) -> list[dict]:
    """The complete lines of a samples file (a torn last line of a killed run is ignored)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "task" in rec and "id" in rec:
            out.append(rec)
    return out


def drop_torn_line(path: Path) -> None:
    """Cut a last line without its newline (a run killed mid-write) so appended lines start clean."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _check_resume(args, settings: dict, samples_path: Path, run_path: Path) -> None:
    if args.overwrite:
        samples_path.unlink(missing_ok=True)
        return
    if not samples_path.exists():
        return
    if not run_path.is_file():
        raise UsageError(f"{samples_path} exists without {run_path.name}; pass --overwrite to start over")
    old = json.loads(run_path.read_text(encoding="utf-8"))
    for k in SETTINGS:
        if old.get(k) != settings[k]:
            raise UsageError(f"{samples_path} was written with {k}={old.get(k)!r}, this run has {settings[k]!r}; "
                             "pass --overwrite to start over, or the same settings to resume")


def summarise_task(task, records: list[dict], lines: list[dict], k: int) -> dict:
    """The results.json entry of one task from its sample lines (the first k samples of each problem)."""
    by_id: dict[str, list[dict]] = {}
    for ln in lines:
        by_id.setdefault(ln["id"], []).append(ln)
    per_problem, groups, flat = [], {}, []
    for i, rec in enumerate(records):
        rid = task.record_id(rec, i)
        got = sorted(by_id.get(rid, []), key=lambda s: s["sample"])[:k]
        if len(got) < k:
            continue
        scores = [float(s["score"]) for s in got]
        per_problem.append(scores)
        flat += got
        for g, v in task.groups(rec).items():
            groups.setdefault(g, {}).setdefault(v, []).append(scores)
    out = summarise(per_problem, k)
    answered = [s for s in flat if not s.get("error")]
    if flat:
        out["failed_requests"] = len(flat) - len(answered)
    if answered:  # response figures over the samples that came back
        out["mean_response_tokens"] = sum(s["tokens"] for s in answered) / len(answered)
        out["truncation_rate"] = sum(s["finish_reason"] == "length" for s in answered) / len(answered)
        out["no_answer_rate"] = sum(s.get("extracted") is None for s in answered) / len(answered)
    if groups:
        out["by"] = {g: {v: summarise(ps, k) for v, ps in sorted(vals.items())} for g, vals in groups.items()}
    return out


def markdown_table(results: dict) -> str:
    rows = ["| task | n | k | avg@k | pass@1 | pass@k | mean tokens | truncated | failed |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results["tasks"].items():
        if not r.get("n"):
            rows.append(f"| {name} | 0 | {r['k']} | - | - | - | - | - | - |")
            continue
        k = r["k"]
        rows.append(f"| {name} | {r['n']} | {k} | {100 * r['avg@k']:.1f} | {100 * r['pass@1']:.1f} | "
                    f"{100 * r[f'pass@{k}']:.1f} | {r.get('mean_response_tokens', 0):.0f} | "
                    f"{100 * r.get('truncation_rate', 0):.1f}% | {r.get('failed_requests', 0)} |")
    return "\n".join(rows)


class _Writer:
    """Appends scored samples to the samples file (any thread) and counts them."""

    def __init__(self, path: Path, bar):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = path.open("a", encoding="utf-8")
        self.lock, self.bar, self.pending = threading.Lock(), bar, []

    def write(self, line: dict) -> None:
        with self.lock:
            self.f.write(json.dumps(line, ensure_ascii=False) + "\n")
            self.f.flush()
            if self.bar is not None:
                self.bar.update(1)

    def close(self) -> None:
        self.f.close()


def evaluate(backend, tasks: dict, args, samples_path: Path, prompt_text=None) -> dict:
    """Generate and score what the samples file lacks; returns timing figures.  ``tasks``: name -> records."""
    from tqdm import tqdm

    k, have = args.samples, {}
    drop_torn_line(samples_path)
    for ln in read_samples(samples_path):
        have[(ln["task"], ln["id"])] = have.get((ln["task"], ln["id"]), 0) + 1
    requests, meta = [], {}
    for name, records in tasks.items():
        task = get_task(name)
        for i, rec in enumerate(records):
            rid = task.record_id(rec, i)
            done = have.get((name, rid), 0)
            if done >= k:
                continue
            prompt = task.messages(rec) if args.style == "chat" else task.prompt(rec, args.style)
            key = f"{name}\t{rid}"
            seed = (args.seed * 1_000_003 + zlib.crc32(key.encode()) + done) & 0x7FFFFFFF
            requests.append(Request(key, prompt, k - done, seed, task.stop(args.style)))
            meta[key] = (name, task, rec, rid, done)
    total = sum(r.n for r in requests)
    bar = None if args.no_progress or not total else tqdm(total=total, desc="eval", unit="sample", file=sys.stderr)
    writer, futures, tokens = _Writer(samples_path, bar), [], [0]

    def on_done(r: Request, samples: list[Sample]) -> None:
        name, task, rec, rid, done = meta[r.key]
        shown = prompt_text(r.prompt) if prompt_text else r.prompt
        for j, s in enumerate(samples):
            line = {"task": name, "id": rid, "sample": done + j, "prompt": shown, "response": s.text,
                    "tokens": s.tokens, "finish_reason": s.finish_reason, "groups": task.groups(rec)}
            if s.error:
                writer.write({**line, "extracted": None, "score": 0.0, "reason": "request failed", "error": s.error})
                continue
            line["extracted"] = task.extract(rec, s.text, args.style)
            fut = task.submit_score(rec, s.text, args.style)
            fut.add_done_callback(lambda f, line=line: writer.write(
                {**line, "score": float(f.result().score), "reason": f.result().reason}))
            futures.append(fut)

    def on_tokens(n: int) -> None:
        tokens[0] += n

    if any(get_task(n).kind == "math" for n in tasks) and requests:
        from openmimo.rewards.math import default_pool

        # the reward pool's workers start while the first prompts generate (they import Math-Verify)
        threading.Thread(target=default_pool, daemon=True).start()
    t0 = time.perf_counter()
    try:
        backend.run(requests, on_done, on_tokens)
        gen_s = time.perf_counter() - t0
        for f in list(futures):
            f.result()
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "generation_s": gen_s, "generated_tokens": tokens[0],
            "tokens_per_s": tokens[0] / gen_s if gen_s > 0 else 0.0, "samples_generated": total}


def build_backend(args):
    """The backend of ``--model`` / ``--endpoint`` and, for the engine, a function showing a prompt as text."""
    if args.endpoint:
        return EndpointBackend(args.endpoint, args.api_model, temperature=args.temperature, top_p=args.top_p,
                               max_tokens=args.max_tokens, concurrency=args.concurrency, retries=args.retries), None
    from openmimo.infer.generate import build_engine

    if args.spec_k is None:
        cfg_file = Path(args.model) / "config.json"
        cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
        args.spec_k = int(cfg.get("num_nextn_predict_layers") or 0)
    engine, tok = build_engine(args)
    if engine.compiled:  # build the compiled decode variants before timing starts (else requests run eagerly)
        engine.warmup(log=lambda line: print(f"[eval] {line}", file=sys.stderr, flush=True))
    backend = EngineBackend(engine, tok, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens)

    def prompt_text(prompt):
        return tok.apply_chat_template(prompt, add_generation_prompt=True) if isinstance(prompt, list) else prompt

    return backend, prompt_text


def run(args) -> int:
    if args.samples < 1 or args.limit < 0 or args.max_tokens < 1:
        raise UsageError("--samples and --max-tokens must be >= 1, --limit >= 0")
    if not 0 < args.top_p <= 1 or args.temperature < 0:
        raise UsageError("--top-p must be in (0, 1] and --temperature >= 0")
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names:
        raise UsageError("--tasks names no task")
    files = _task_files(args.task_file)
    records = {n: get_task(n).load(files.get(n), args.data_dir, args.limit) for n in names}  # errors before work
    out, samples_path, run_path = paths_for(args.output)
    settings = {"source": args.model or args.endpoint, "style": args.style, "samples": args.samples,
                "temperature": args.temperature, "top_p": args.top_p, "max_tokens": args.max_tokens,
                "seed": args.seed}
    _check_resume(args, settings, samples_path, run_path)
    backend, prompt_text = build_backend(args)
    run_path.parent.mkdir(parents=True, exist_ok=True)
    run_path.write_text(json.dumps({**settings, "api_model": getattr(backend, "model", None)}, indent=2) + "\n")
    timing = evaluate(backend, records, args, samples_path, prompt_text)
    lines = read_samples(samples_path)
    results = {"tasks": {}, "config": {**settings, "tasks": names, "limit": args.limit, "backend": backend.name},
               **timing}
    for n in names:
        results["tasks"][n] = summarise_task(get_task(n), records[n], [ln for ln in lines if ln["task"] == n],
                                             args.samples)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(markdown_table(results))
    print(f"{timing['samples_generated']} samples generated in {timing['wall_s']:.1f} s "
          f"({timing['tokens_per_s']:.0f} tokens/s); results: {out}; samples: {samples_path}", file=sys.stderr)
    return 0
