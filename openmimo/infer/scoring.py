"""Log-probs of given token sequences (prompt log-probs, ``echo``), batched: what evaluation harnesses ask of
a completions server for loglikelihood and multiple-choice tasks.

:func:`score` runs the sequences through the model in right-padded batches of at most ``max_batch_tokens``
tokens (longest first, so rows of a batch have similar lengths).  Right padding needs no attention mask: a real
token never attends to the padding after it, so every batch is plain causal attention.  The head runs over
``head_rows`` positions at a time and only the chosen token's log-prob and the ``top_n`` best are kept, so the
(tokens x vocabulary) logits of a batch never exist at once.  Log-probs are float32 log-softmax of the raw
logits (temperature 1), the numbers a training forward gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Scored:
    """One sequence's log-probs: entry i is token i's given tokens 0..i-1 (entry 0 has no context: None)."""

    token_logprobs: list = field(default_factory=list)  # [None, lp_1, ..., lp_{n-1}]
    top: list = field(default_factory=list)  # [None, [(id, lp), ...] best first, ...] when top_n > 0, else []


def _batches(order: list[int], lens: list[int], budget: int) -> list[list[int]]:
    """Consecutive groups of ``order`` (longest first) whose padded size (rows x longest) fits ``budget``."""
    groups, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lens[cur[0]] > budget:
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    return groups


@torch.no_grad()
def score(model, sequences: list[list[int]], top_n: int = 0, max_batch_tokens: int = 32768,
          head_rows: int = 4096) -> list[Scored]:
    """Log-probs of every token of every sequence given the tokens before it (see the module docstring)."""
    device = next(model.parameters()).device
    lens = [len(s) for s in sequences]
    if any(n == 0 for n in lens):
        raise ValueError("cannot score an empty sequence")
    out = [Scored() for _ in sequences]
    order = sorted(range(len(sequences)), key=lambda i: -lens[i])
    for group in _batches(order, lens, max_batch_tokens):
        L = lens[group[0]]
        ids = torch.zeros(len(group), L, dtype=torch.long)
        for r, i in enumerate(group):
            ids[r, : lens[i]] = torch.tensor(sequences[i])
        ids = ids.to(device)
        hidden = model(ids, logits_to_keep=1).hidden_states  # (R, L, d); the head runs below, in pieces
        # position t predicts token t+1: the (row, t) pairs that have a real next token
        rows = torch.cat([torch.full((lens[i] - 1,), r, dtype=torch.long) for r, i in enumerate(group)])
        cols = torch.cat([torch.arange(lens[i] - 1) for i in group])
        lp_all, top_lp, top_id = [], [], []
        for s in range(0, len(rows), head_rows):
            rr, cc = rows[s: s + head_rows].to(device), cols[s: s + head_rows].to(device)
            logits = model.lm_head(model.model.norm(hidden[rr, cc])).float()
            lp = torch.log_softmax(logits, -1)
            lp_all.append(lp.gather(-1, ids[rr, cc + 1][:, None])[:, 0])
            if top_n:
                v, k = lp.topk(min(top_n, lp.shape[-1]), -1)
                top_lp.append(v)
                top_id.append(k)
        chosen = torch.cat(lp_all).tolist() if lp_all else []
        tv = torch.cat(top_lp).tolist() if top_lp else []
        ti = torch.cat(top_id).tolist() if top_id else []
        at = 0
        for i in group:
            n = lens[i] - 1
            out[i].token_logprobs = [None] + chosen[at: at + n]
            if top_n:
                out[i].top = [None] + [list(zip(ti[j], tv[j])) for j in range(at, at + n)]
            at += n
    return out
