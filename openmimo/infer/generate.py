"""`openmimo generate --model PATH --input prompts.jsonl --output out.jsonl`: batch generation with the engine.

Input: JSONL, one record per line (a file, or stdin when ``--input`` is omitted or ``-``), each with
one of ``prompt`` (text), ``prompt_ids`` (token ids) or ``messages`` (a chat, rendered with the
generation prompt); optional ``id`` and per-record overrides of ``max_new_tokens``, ``temperature``,
``top_p``, ``top_k``, ``n``, ``seed``, ``stop_ids``.  Output: JSONL (a file, or stdout), one record per
sample, in input order: ``id``, ``index``, ``text``, ``tokens``, ``logprobs`` (temperature-1 model
log-probs), ``sampling_logprobs``, ``finish_reason``.  A progress bar goes to stderr.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from openmimo.cli import UsageError
from openmimo.infer.engine import Engine, SamplingParams
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


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="Hugging-Face-layout checkpoint folder (with tokenizer files)")
    parser.add_argument("--input", default=None, help="prompts JSONL (default: stdin)")
    parser.add_argument("--output", default=None, help="output JSONL (default: stdout)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--n", type=int, default=1, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=None, help="base seed; record i uses seed + i")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_arguments(parser)


def build_engine(args):
    """Load the checkpoint, its tokenizer and an Engine from the shared command-line options."""
    import torch

    from openmimo import load_model, load_tokenizer

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
                        spec_k=args.spec_k, compile=False if args.no_compile else None)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return engine, tokenizer


def read_prompts(lines, source: str, tokenizer, base: SamplingParams) -> list[tuple[str, list[int], SamplingParams]]:
    """Parse prompt records; a bad line raises UsageError (or ConfigError for bad JSON) naming ``source:line``."""
    from openmimo.jsonl import parse_jsonl_lines

    out = []
    for ln, rec in parse_jsonl_lines(lines, source):  # bad JSON: ConfigError naming source:line (exit 2)
        where = f"{source}:{ln}"
        if "prompt_ids" in rec:
            ids = rec["prompt_ids"]
            if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
                raise UsageError(f"{where}: 'prompt_ids' must be a list of integers")
        elif isinstance(rec.get("prompt"), str):
            ids = tokenizer.encode(rec["prompt"])
        elif isinstance(rec.get("messages"), list):
            ids, _ = tokenizer.render_chat(rec["messages"], add_generation_prompt=True)
        else:
            raise UsageError(f"{where}: needs 'prompt' (text), 'prompt_ids' or 'messages'")
        kw = {}
        for k, kind in _OVERRIDES.items():
            if k in rec:
                if not isinstance(rec[k], (int, float)) or isinstance(rec[k], bool):
                    raise UsageError(f"{where}: '{k}' must be a number")
                kw[k] = kind(rec[k])
        if "stop_ids" in rec:
            kw["stop_ids"] = tuple(rec["stop_ids"])
        if base.seed is not None and "seed" not in kw:
            kw["seed"] = base.seed + len(out)
        params = replace(base, **kw)
        try:
            params.check()
        except ValueError as e:
            raise UsageError(f"{where}: {e}") from None
        out.append((str(rec.get("id", len(out))), ids, params))
    return out


def run(args) -> int:
    if args.input and args.input != "-":
        try:
            with open(args.input, encoding="utf-8") as f:
                lines = f.readlines()
        except OSError as e:
            raise UsageError(f"{args.input}: cannot read ({e.strerror})") from None
        source = args.input
    else:
        lines, source = sys.stdin.readlines(), "<stdin>"
    engine, tok = build_engine(args)
    stops = tuple(t for t in {tok.eos_id, tok.token_to_id(ENDOFTEXT), engine.cfg.eos_token_id} if t is not None)
    base = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, n=args.n, seed=args.seed, stop_ids=stops)
    try:
        base.check()
    except ValueError as e:
        raise UsageError(str(e)) from None
    records = read_prompts(lines, source, tok, base)
    for rid, ids, _ in records:
        if not ids or len(ids) >= engine.max_len:
            raise UsageError(f"{source}: record '{rid}' has a prompt of {len(ids)} tokens (context {engine.max_len})")
    from tqdm import tqdm

    bar = tqdm(total=sum(p.n for _, _, p in records), desc="generate", unit="sample", disable=args.no_progress,
               file=sys.stderr)
    try:
        results = engine.generate([ids for _, ids, _ in records], [p for _, _, p in records], progress=bar.update)
    except ValueError as e:
        raise UsageError(str(e)) from None
    finally:
        bar.close()
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for (rid, _, _), comps in zip(records, results):
            for c in comps:
                out.write(json.dumps({"id": rid, "index": c.index, "text": tok.decode(c.token_ids, skip_special_tokens=True),
                                      "tokens": c.token_ids, "logprobs": c.logprobs,
                                      "sampling_logprobs": c.sampling_logprobs,
                                      "finish_reason": c.finish_reason}, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    m = engine.metrics()
    print(f"openmimo generate: {len(records)} prompts, {m['generated_tokens']} tokens, "
          f"{m['decode_tokens_per_second']:.1f} decode tokens/s", file=sys.stderr)
    return 0
