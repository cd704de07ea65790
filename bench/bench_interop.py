"""Interoperability targets of issue 20, at the real MiMo-7B shape with random weights (one GPU).

    python bench/bench_interop.py export [--layers N] [--out DIR]
    python bench/bench_interop.py logprobs [--layers N] [--prompts 64] [--tokens 512] [--repeats 3]

``export``: builds the model from ``../shared/reference/mimo-7b/config.json`` (bf16, random weights, MTP layer
included), saves it with ``save_pretrained``, loads the folder with
``transformers.AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`` and compares main and MTP
logits on 2 x 256 random tokens: prints the largest absolute difference, the largest relative to the logits'
scale, and the arg-max agreement (target: bf16 tolerance).

``logprobs``: serves the same model (``create_app`` on uvicorn in this process) and times one
``/v1/completions`` request carrying ``--prompts`` token-id prompts of ``--tokens`` tokens with ``echo``,
``logprobs: 1``, ``max_tokens: 0`` (lm-evaluation-harness's loglikelihood shape, best of ``--repeats``), against
the anchor: one batched forward of the engine's model over the same tokens followed by the log-softmax gather of
each token's log-prob (best of ``--repeats``).  Target: the request within 1.3x of the anchor.

``--config`` names another config.json; ``--layers`` shrinks the main model's depth (default: the reference's 36) for a quick check.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU runs a smoke check of the script only
REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "mimo-7b" / "config.json"


def reference_model(args):
    cfg = MiMoConfig.from_file(args.config)
    layers = args.layers
    if layers:
        cfg.num_hidden_layers = layers
    model = build_model(cfg, device=DEVICE, dtype=torch.bfloat16 if DEVICE == "cuda" else torch.float32, seed=0).eval()
    return cfg, model


@torch.no_grad()
def export(args) -> dict:
    import transformers

    cfg, model = reference_model(args)
    out = Path(args.out or tempfile.mkdtemp(prefix="mimo7b-export-")) / "ckpt"
    t0 = time.perf_counter()
    model.save_pretrained(out)
    t_save = time.perf_counter() - t0
    t0 = time.perf_counter()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=True, dtype=next(model.parameters()).dtype
                                                           ).to(DEVICE).eval()
    t_load = time.perf_counter() - t0
    ids = torch.randint(0, cfg.vocab_size, (2, 256), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    ours = model(ids, labels=ids)
    theirs = hf(input_ids=ids, output_mtp_logits=True)
    h, mtp = ours.hidden_states, []
    for k in range(1, cfg.num_nextn_predict_layers + 1):
        h, lk = model.mtp_forward(k, h, torch.nn.functional.pad(ids[:, k:], (0, k)),
                                  torch.arange(256, device=DEVICE)[None].expand(2, 256))
        mtp.append(lk)
    rows = {}
    for name, a, b in [("main", ours.logits, theirs.logits)] + [
            (f"mtp{k + 1}", mtp[k], theirs.mtp_logits[k]) for k in range(len(mtp))]:
        a, b = a.float(), b.float()
        diff = (a - b).abs()
        rows[name] = {"max_abs_diff": diff.max().item(), "max_diff_over_logit_std": (diff.max() / a.std()).item(),
                      "argmax_agreement": (a.argmax(-1) == b.argmax(-1)).float().mean().item()}
    return {"bench": "export", "layers": cfg.num_hidden_layers, "save_s": round(t_save, 1),
            "load_s": round(t_load, 1), "compare": rows}


def logprobs(args) -> dict:
    import httpx

    from openmimo.infer.async_engine import AsyncEngine
    from openmimo.infer.engine import Engine
    from openmimo.infer.server import create_app, start_in_thread
    from openmimo.tokenizer import train_tokenizer

    cfg, model = reference_model(args)
    tok = train_tokenizer(["the cat sat on the mat", "two plus two is four"] * 20, vocab_size=300)
    g = torch.Generator().manual_seed(2)
    prompts = torch.randint(0, tok.vocab_size, (args.prompts, args.tokens), generator=g)
    ids = prompts.to(DEVICE)

    @torch.no_grad()
    def anchor():
        lp = torch.log_softmax(model(ids).logits.float(), -1)
        return lp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0].tolist()

    def sync():
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    def best(fn):
        times = []
        for _ in range(args.repeats + 1):  # the first is a warm-up
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    t_anchor = best(anchor)
    aengine = AsyncEngine(Engine(model, max_slots=2, max_len=args.tokens + 8, compile=False))
    server, url = start_in_thread(create_app(aengine, tok, "mimo"))
    body = {"model": "mimo", "prompt": prompts.tolist(), "max_tokens": 0, "echo": True, "logprobs": 1,
            "temperature": 0}
    client = httpx.Client(timeout=600)
    reply = {}

    def request():
        reply["r"] = client.post(url + "/v1/completions", json=body).json()

    try:
        t_server = best(request)
    finally:
        server.should_exit = True
        aengine.shutdown()
    got = [c["logprobs"]["token_logprobs"][1:] for c in sorted(reply["r"]["choices"], key=lambda c: c["index"])]
    want = anchor()
    worst = max(abs(a - b) for ga, wa in zip(got, want) for a, b in zip(ga, wa))
    return {"bench": "logprobs", "layers": cfg.num_hidden_layers, "prompts": args.prompts, "tokens": args.tokens,
            "anchor_forward_s": round(t_anchor, 3), "server_request_s": round(t_server, 3),
            "ratio": round(t_server / t_anchor, 2), "target_ratio": 1.3,
            "max_abs_logprob_diff_vs_anchor": worst}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["export", "logprobs"])
    p.add_argument("--config", default=str(REFERENCE), help="the model shape (default: the MiMo-7B reference config)")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--tokens", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(json.dumps(export(args) if args.what == "export" else logprobs(args), indent=2))


if __name__ == "__main__":
    main()
