"""`openmimo generate --model PATH --input prompts.jsonl --output out.jsonl`: batch generation with the engine.

Input: JSONL, one record per line (a file, or stdin when ``--input`` is omitted or ``-``), each with
one of ``prompt`` (text), ``prompt_ids`` (token ids) or ``messages`` (a chat, rendered with the
generation prompt); optional ``id`` and per-record overrides of ``max_new_tokens``, ``temperature``,
``top_p``, ``top_k``, ``n``, ``seed``, ``stop_ids``.  Output: JSONL (a file, or stdout), one record per
sample, in input order: ``id``, ``index``, ``text``, ``tokens``, ``logprobs`` (temperature-1 model
log-probs), ``sampling_logprobs``, ``finish_reason``.  A progress bar goes to stderr.

Results are appended and flushed as prompts finish (each prompt once it and all earlier prompts are
done), so an interrupted run keeps what it produced.  The output file's folder is created before
any work.  An output file that already holds results is refused unless ``--resume`` (skip the
prompts whose samples are all in it, by ``id``; an incomplete last prompt is dropped and redone)
or ``--overwrite`` (start over) is given.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

from openmimo.config import UsageError
from openmimo.infer.engine import Completion, Engine, SamplingParams
from openmimo.tokenizer import ENDOFTEXT

_OVERRIDES = {"max_new_tokens": int, "temperature": float, "top_p": float, "top_k": int, "n": int, "seed": int}


def add_engine_arguments(parser) -> None:
    """Engine options shared by `generate` and `serve`."""
    g = parser.add_argument_group("engine")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="default: bf16 on GPU, float32 on CPU")
    g.add_argument("--max-slots", type=int, default=None, help="concurrent sequences (default: from --kv-budget-gb on GPU, 8 on CPU)")
    g.add_argument("--max-len", type=int, default=None, help="context length per sequence (default: the model's)")
    g.add_argument("--kv-budget-gb", type=float, default=None, help="KV-cache memory budget (default on GPU: 80%% of free memory)")
    g.add_argument("--spec-k", type=int, default=0, help="MTP draft tokens per step (0 = no speculative decoding)")
    g.add_argument("--no-compile", action="store_true", help="do not compile the decode step on GPU")
    g.add_argument("--compile-scope", choices=["step", "block"], default="block",
                   help="what torch.compile compiles on GPU: regions shared by every layer with each step captured "
                        "as one CUDA graph (block, the default: seconds of warm-up), or each decode variant whole "
                        "(step: minutes of warm-up; docs/benchmarks.md)")


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="Hugging-Face-layout checkpoint folder (with tokenizer files)")
    parser.add_argument("--input", default=None, help="prompts JSONL (default: stdin)")
    parser.add_argument("--output", default=None,
                        help="output JSONL (default: stdout); its folder is created; results are appended as prompts finish")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run: skip the prompts (by id) whose results --output already holds")
    parser.add_argument("--overwrite", action="store_true", help="replace an --output file that already holds results")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--n", type=int, default=1, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=None, help="base seed; record i uses seed + i")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_arguments(parser)


def build_engine(args, **engine_kw):
    """Load the checkpoint, its tokenizer and an Engine from the shared command-line options (``engine_kw``:
    further Engine arguments)."""
    import torch

    from openmimo import load_model, load_tokenizer
    from openmimo.runtime import check_device

    if args.device:
        check_device(args.device, "--device")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if str(device).startswith("cuda") else "float32")
    try:
        model = load_model(args.model, dtype=dtype, device=device)
        tokenizer = load_tokenizer(args.model)
    except Exception as e:  # a missing/broken folder is a usage error naming it
        if type(e).__name__ in ("CheckpointError", "ConfigError", "FileNotFoundError"):
            raise UsageError(str(e)) from None
        raise
    budget = int(args.kv_budget_gb * 2**30) if args.kv_budget_gb else None
    try:
        engine = Engine(model, max_slots=args.max_slots, max_len=args.max_len, kv_budget_bytes=budget,
                        spec_k=args.spec_k, compile=False if args.no_compile else None,
                        compile_scope=args.compile_scope, **engine_kw)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return engine, tokenizer


def read_prompts(lines, source: str, tokenizer, base: SamplingParams) -> list[tuple[str, list[int], SamplingParams]]:
    """Parse prompt records; a bad line raises UsageError (or ConfigError for bad JSON / UTF-8) naming
    ``source:line`` and the key."""
    from openmimo.jsonl import parse_jsonl_lines

    out = []
    for ln, rec in parse_jsonl_lines(lines, source):  # bad JSON: ConfigError naming source:line (exit 2)
        where = f"{source}:{ln}"
        if "prompt_ids" in rec:
            ids = rec["prompt_ids"]
            if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise UsageError(f"{where}: 'prompt_ids' must be a list of integers")
        elif "prompt" in rec:
            if not isinstance(rec["prompt"], str):
                raise UsageError(f"{where}: 'prompt' must be a string, got {type(rec['prompt']).__name__}")
            ids = tokenizer.encode(rec["prompt"])
        elif "messages" in rec:
            msgs = rec["messages"]
            if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                                 for m in msgs):
                raise UsageError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
            try:
                ids, _ = tokenizer.render_chat(msgs, add_generation_prompt=True)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise UsageError(f"{where}: 'messages': {e}") from None
        else:
            raise UsageError(f"{where}: needs 'prompt' (text), 'prompt_ids' or 'messages'")
        kw = {}
        for k, kind in _OVERRIDES.items():
            if k in rec:
                v = rec[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise UsageError(f"{where}: '{k}' must be a finite number, got {v!r}")
                if kind is int and not float(v).is_integer():
                    raise UsageError(f"{where}: '{k}' must be an integer, got {v!r}")
                kw[k] = kind(v)
        if "stop_ids" in rec:
            sid = rec["stop_ids"]
            if not isinstance(sid, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in sid):
                raise UsageError(f"{where}: 'stop_ids' must be a list of integer token ids, got {sid!r}")
            kw["stop_ids"] = tuple(sid)
        if base.seed is not None and "seed" not in kw:
            kw["seed"] = base.seed + len(out)
        params = replace(base, **kw)
        try:
            _check_params(params)
        except ValueError as e:
            raise UsageError(f"{where}: {e}") from None
        out.append((str(rec.get("id", len(out))), ids, params))
    return out


def _check_params(params: SamplingParams) -> None:
    """SamplingParams.check plus finiteness (NaN passes every comparison)."""
    for k in ("temperature", "top_p"):
        if not math.isfinite(getattr(params, k)):
            raise ValueError(f"{k} must be a finite number, got {getattr(params, k)}")
    params.check()


def _read_input(args) -> tuple[list, str]:
    if args.input and args.input != "-":
        try:
            with open(args.input, "rb") as f:
                return f.readlines(), args.input
        except OSError as e:
            raise UsageError(f"{args.input}: cannot read ({e.strerror})") from None
    return (sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin).readlines(), "<stdin>"


def _done_ids(path: Path, want: dict[str, int]) -> set[str]:
    """Ids whose samples are all in ``path`` (``want``: id -> samples).  The file is rewritten without the
    lines of incomplete prompts (an interrupted write), so that appending continues it cleanly."""
    from openmimo.jsonl import parse_jsonl_lines

    with path.open("rb") as f:
        lines = f.readlines()
    n_lines = len(lines)
    if lines and not lines[-1].endswith(b"\n"):
        lines = lines[:-1]  # a line cut off mid-write
    seen: dict[str, set] = {}
    for ln, rec in parse_jsonl_lines(lines, str(path)):
        rid = str(rec.get("id"))
        if rid not in want:
            raise UsageError(f"{path}:{ln}: id {rid!r} is not in the input; is this another run's output? "
                             "(--overwrite replaces it)")
        seen.setdefault(rid, set()).add(rec.get("index"))
    done = {rid for rid, idx in seen.items() if len(idx) >= want[rid]}
    keep = [line for line in lines if line.strip() and str(json.loads(line).get("id")) in done]
    if len(keep) != n_lines:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(b"".join(keep))
        os.replace(tmp, path)
    return done


def _open_output(args, records):
    """Open --output for appending before any work (creating its folder); returns (file, ids already done)."""
    if not args.output:
        return sys.stdout, set()
    path = Path(args.output)
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        has_results = path.is_file() and path.stat().st_size > 0
        done: set[str] = set()
        if has_results and args.resume:
            want = {}
            for rid, _, p in records:
                if rid in want:
                    raise UsageError(f"--resume needs unique ids; {rid!r} occurs twice in the input")
                want[rid] = p.n
            done = _done_ids(path, want)
        elif has_results and not args.overwrite:
            raise UsageError(f"{path} already holds results; pass --resume to skip the prompts it has, "
                             "or --overwrite to replace it")
        out = path.open("a" if args.resume else "w", encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{path}: cannot write ({e.strerror})") from None
    return out, done


def run(args) -> int:
    lines, source = _read_input(args)
    engine, tok = build_engine(args)
    stops = tuple(t for t in {tok.eos_id, tok.token_to_id(ENDOFTEXT), engine.cfg.eos_token_id} if t is not None)
    base = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, n=args.n, seed=args.seed, stop_ids=stops)
    try:
        _check_params(base)
    except ValueError as e:
        raise UsageError(str(e)) from None
    records = read_prompts(lines, source, tok, base)
    for rid, ids, p in records:
        if not ids or len(ids) >= engine.max_len:
            raise UsageError(f"{source}: record '{rid}' has a prompt of {len(ids)} tokens (context {engine.max_len})")
        if any(not 0 <= t < engine.cfg.vocab_size for t in ids):
            raise UsageError(f"{source}: record '{rid}': 'prompt_ids' outside the vocabulary [0, {engine.cfg.vocab_size})")
        if p.n > engine.slots:
            raise UsageError(f"{source}: record '{rid}': n={p.n} exceeds the engine's {engine.slots} slots")
    out, done = _open_output(args, records)
    todo = [r for r in records if r[0] not in done]
    if done:
        print(f"openmimo generate: resuming; {len(records) - len(todo)} of {len(records)} prompts are already in "
              f"{args.output}", file=sys.stderr)
    from tqdm import tqdm

    bar = tqdm(total=sum(p.n for _, _, p in todo), desc="generate", unit="sample", disable=args.no_progress,
               file=sys.stderr)
    try:
        _generate_into(engine, tok, todo, out, bar)
    finally:
        bar.close()
        if out is not sys.stdout:
            out.close()
    m = engine.metrics()
    print(f"openmimo generate: {len(todo)} prompts, {m['generated_tokens']} tokens, "
          f"{m['decode_tokens_per_second']:.1f} decode tokens/s", file=sys.stderr)
    return 0


def _generate_into(engine: Engine, tok, records, out, bar) -> None:
    """Run ``records`` on the engine; each prompt's lines are written and flushed once it and every earlier
    prompt are done (input order)."""
    rids, acc, left = [], {}, {}
    for _, ids, p in records:
        rid = engine.add_request(ids, p)
        rids.append(rid)
        acc[rid] = [Completion(rid, i, list(ids)) for i in range(p.n)]
        left[rid] = p.n
    names = {rid: name for rid, (name, _, _) in zip(rids, records)}
    head = 0  # the first prompt not written yet
    while engine.has_unfinished():
        finished = 0
        for o in engine.step():
            if o.request_id not in acc:
                continue
            if acc[o.request_id][o.index].extend(o):
                left[o.request_id] -= 1
                finished += 1
        if finished:
            bar.update(finished)
        while head < len(rids) and left[rids[head]] == 0:
            rid = rids[head]
            for c in acc.pop(rid):
                out.write(json.dumps({"id": names[rid], "index": c.index,
                                      "text": tok.decode(c.token_ids, skip_special_tokens=True),
                                      "tokens": c.token_ids, "logprobs": c.logprobs,
                                      "sampling_logprobs": c.sampling_logprobs,
                                      "finish_reason": c.finish_reason}, ensure_ascii=False) + "\n")
            out.flush()
            head += 1
