"""RL's training batches: finished groups -> one record per sample -> right-padded tensors.

A record holds the prompt + response ids, the response mask (1 on the response's tokens), the old
log-probs (0 on the prompt) and the sample's advantage; :func:`collate` pads a list of them into the
micro-batch :class:`openmimo.rl.loss.RLObjective` reads.
"""

from __future__ import annotations

import torch

from openmimo.rl.loss import token_logprobs_and_entropy


def build_sequences(groups, advantages, pad_id: int) -> list[dict]:
    """One record per sample: prompt + response ids, response mask, old log-probs, advantage."""
    seqs = []
    for g, adv in zip(groups, advantages):
        for s, a in zip(g.samples, adv.tolist()):
            ids = list(g.prompt_ids) + list(s.token_ids)
            P = len(g.prompt_ids)
            mask = [0] * P + [1] * len(s.token_ids)
            old = [0.0] * P + [float(x) for x in s.logprobs]
            seqs.append({"ids": ids, "mask": mask, "old": old, "adv": float(a)})
    return seqs


def collate(seqs: list[dict], pad_id: int) -> dict:
    """Records -> ``input_ids`` (right-padded with ``pad_id``), ``response_mask``, ``old_logprobs``, ``advantages``."""
    T = max(len(s["ids"]) for s in seqs)
    B = len(seqs)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask, old = torch.zeros(B, T), torch.zeros(B, T)
    for i, s in enumerate(seqs):
        n = len(s["ids"])
        ids[i, :n] = torch.tensor(s["ids"])
        mask[i, :n] = torch.tensor(s["mask"], dtype=torch.float32)
        old[i, :n] = torch.tensor(s["old"])
    return {"input_ids": ids, "response_mask": mask, "old_logprobs": old,
            "advantages": torch.tensor([s["adv"] for s in seqs])}


@torch.no_grad()
def response_logprobs(model, mb: dict) -> torch.Tensor:
    """``model``'s log-prob of each response token of a collated micro-batch, aligned with ``old_logprobs``
    (0 on the prompt and the padding)."""
    ids = mb["input_ids"]
    lp, _ = token_logprobs_and_entropy(model(ids[:, :-1]).logits, ids[:, 1:])
    out = torch.zeros_like(mb["old_logprobs"])
    out[:, 1:] = lp.cpu() * mb["response_mask"][:, 1:]
    return out
