"""The slow oracle: generation by full recomputation, no KV cache. Obviously correct, for tests."""

from __future__ import annotations

import torch

from openmimo.infer.sampling import gumbel_sample, process_logits, sample


@torch.no_grad()
def generate_oracle(model, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                    top_p: float = 1.0, top_k: int = 0, stop_ids: tuple[int, ...] = (),
                    generator: torch.Generator | None = None, seed: int | None = None
                    ) -> tuple[list[int], list[float]]:
    """Generate for one prompt, recomputing the whole sequence every step.

    With ``seed``, tokens are drawn with the engine's counter-based sampler
    (``gumbel_sample(logprobs, seed, position)``), so a seeded engine request must give the same
    tokens; otherwise with ``torch.multinomial`` and ``generator``.

    Returns (new token ids, log-probs of those tokens under the *unfiltered* model distribution
    at temperature 1 — what an RL importance ratio needs).
    """
    device = next(model.parameters()).device
    ids = list(prompt_ids)
    out, logps = [], []
    t = torch.tensor([temperature], device=device)
    p = torch.tensor([top_p], device=device)
    k = torch.tensor([top_k], device=device)
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids], device=device), logits_to_keep=1).logits[:, -1]
        lp = process_logits(logits, t, p, k)
        if temperature <= 0:
            tok = int(lp.argmax(-1))
        elif seed is not None:
            tok = int(gumbel_sample(lp, torch.tensor([seed], device=device), torch.tensor([len(ids)], device=device)))
        else:
            tok = int(sample(lp, generator))
        logps.append(float(torch.log_softmax(logits.float(), -1)[0, tok]))
        out.append(tok)
        ids.append(tok)
        if tok in stop_ids:
            break
    return out, logps


@torch.no_grad()
def greedy_batch(model, prompts: list[list[int]], max_new_tokens: int, stop_id: int | None = None,
                 pad_id: int = 0) -> list[list[int]]:
    """Greedy decoding of many prompts at once (left padding, full recompute each step)."""
    device = next(model.parameters()).device
    B = len(prompts)
    seqs = [list(p) for p in prompts]
    done = [False] * B
    outs: list[list[int]] = [[] for _ in range(B)]
    for _ in range(max_new_tokens):
        L = max(len(s) for s in seqs)
        ids = torch.full((B, L), pad_id, dtype=torch.long)
        am = torch.zeros((B, L), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, L - len(s):] = torch.tensor(s)
            am[i, L - len(s):] = 1
        pos = (am.cumsum(-1) - 1).clamp(min=0)
        # Position ids make left-padded rows see positions 0..n-1, as if unpadded; pads never
        # start a document because they are masked keys and only attend to themselves.
        pos = torch.where(am.bool(), pos, torch.ones_like(pos))
        logits = model(ids.to(device), attention_mask=am.to(device), position_ids=pos.to(device),
                       logits_to_keep=1).logits[:, -1]
        nxt = logits.argmax(-1).tolist()
        for i in range(B):
            if done[i]:
                continue
            outs[i].append(nxt[i])
            seqs[i].append(nxt[i])
            if stop_id is not None and nxt[i] == stop_id:
                done[i] = True
        if all(done):
            break
    return outs
