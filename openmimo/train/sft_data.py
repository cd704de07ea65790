"""SFT data: chat records -> ``(ids, loss_mask)`` through the checkpoint's own chat template -> decontaminated ->
packed into fixed-length rows.

Records (JSONL, one per line) are either a ``messages`` list (the public chat datasets' field:
``{"role", "content", "reasoning_content"?}``; reasoning may also sit inside the content as a
``<think>...</think>`` block) or a ``prompt`` + ``response`` pair (optional ``reasoning``), which
becomes one user and one assistant turn.  Rendering is :func:`openmimo.chat.render_ids_and_mask`
(loss on assistant tokens only, ``<think>`` blocks included).

Decontamination: a record whose text (every message's content and reasoning) shares an n-gram with
an evaluation item (:class:`openmimo.data.decontam.Decontaminator`) is dropped and counted under
that evaluation set.

Packing: samples are laid into rows of ``seq_len`` tokens in a seeded order per epoch, first-fit over
the most recent rows (:func:`pack`; a sample is never split across rows).  Position ids restart at 0 at each sample, so the model's document mask keeps attention
and every target (main and MTP) inside its sample; the padded tail of a row is a document of its own
with no targets.  Labels are the ids where the loss mask is 1 and ``IGNORE_INDEX`` elsewhere.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from openmimo.chat import format_assistant, render_ids_and_mask, validate_messages
from openmimo.config import ConfigError
from openmimo.data.world_math import math_reasoning, math_steps_reasoning
from openmimo.eval.prompts import math_chat_message
from openmimo.jsonl import iter_jsonl, read_jsonl
from openmimo.model.mimo import IGNORE_INDEX

_REASONING = ("reasoning_content", "thinking", "reasoning")


def record_messages(rec: dict, where: str) -> list[dict]:
    """The conversation of one SFT record (``messages``, or ``prompt`` + ``response``); errors name ``where``."""
    if "messages" in rec:
        msgs = rec["messages"]
        try:
            validate_messages(msgs)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    elif "prompt" in rec and "response" in rec:
        if not isinstance(rec["prompt"], str) or not isinstance(rec["response"], str):
            raise ConfigError(f"{where}: 'prompt' and 'response' must be strings")
        reply = {"role": "assistant", "content": rec["response"]}
        if isinstance(rec.get("reasoning"), str):
            reply["reasoning_content"] = rec["reasoning"]
        msgs = [{"role": "user", "content": rec["prompt"]}, reply]
    else:
        raise ConfigError(f"{where}: an SFT record needs 'messages' or 'prompt' + 'response' (has {sorted(rec)[:8]})")
    if not any(m["role"] == "assistant" for m in msgs):
        raise ConfigError(f"{where}: the conversation has no assistant turn to train on")
    return msgs


def conversation_text(messages: list[dict]) -> str:
    """All the text of a conversation (what decontamination reads)."""
    parts = []
    for m in messages:
        parts += [m[k] for k in _REASONING if isinstance(m.get(k), str)]
        if isinstance(m.get("content"), str):
            parts.append(m["content"])
    return "\n".join(parts)


def load_sft_samples(paths, tokenizer, seq_len: int, decontaminator=None, max_samples: int = 0):
    """Rendered samples ``[(ids, mask), ...]`` and the counts of what was kept and dropped, and why.
    ``max_samples``: the first N records of each file (0 = all)."""
    counts = {"read": 0, "kept": 0, "too_long": 0, "no_target": 0, "contaminated": 0, "contaminated_by": {}}
    convs = []
    for p in [paths] if isinstance(paths, str) else list(paths):
        n = 0
        for ln, rec in iter_jsonl(Path(p), what="SFT data file"):
            convs.append(record_messages(rec, f"{p}:{ln}"))
            n += 1
            if max_samples and n >= max_samples:
                break
    counts["read"] = len(convs)
    if decontaminator is not None and convs:
        hits = decontaminator.hits([conversation_text(m) for m in convs])
        kept = []
        for msgs, tasks in zip(convs, hits):
            if tasks:
                counts["contaminated"] += 1
                for t in tasks:
                    counts["contaminated_by"][t] = counts["contaminated_by"].get(t, 0) + 1
            else:
                kept.append(msgs)
        convs = kept
    samples = []
    for msgs in convs:
        ids, mask = render_ids_and_mask(tokenizer, msgs)
        if len(ids) > seq_len:
            counts["too_long"] += 1
        elif sum(mask[1:]) == 0:  # the first token is never a target
            counts["no_target"] += 1
        else:
            samples.append((ids, mask))
    counts["kept"] = len(samples)
    return samples, counts


def pack(lengths: list[int], order, seq_len: int, open_rows: int = 64) -> list[list[int]]:
    """Rows of sample indices: ``order`` laid first-fit into rows of at most ``seq_len`` tokens.

    Each sample goes into the first of the last ``open_rows`` rows it fits in, or starts a new row (older rows
    are closed), so the row order follows ``order`` and short samples fill the gaps long ones leave."""
    rows: list[list[int]] = []
    used: list[int] = []
    first_open = 0
    for i in order:
        n = lengths[i]
        for r in range(first_open, len(rows)):
            if used[r] + n <= seq_len:
                rows[r].append(int(i))
                used[r] += n
                break
        else:
            rows.append([int(i)])
            used.append(n)
            first_open = max(first_open, len(rows) - open_rows)
    return rows


def row_tensors(samples, rows: list[list[int]], seq_len: int, pad_id: int) -> dict:
    """``input_ids``, ``labels``, ``position_ids`` (B, seq_len) of packed rows (an empty row is all padding)."""
    B = len(rows)
    ids = torch.full((B, seq_len), pad_id, dtype=torch.long)
    labels = torch.full((B, seq_len), IGNORE_INDEX, dtype=torch.long)
    pos = torch.zeros((B, seq_len), dtype=torch.long)
    for b, row in enumerate(rows):
        t = 0
        for i in row:
            s_ids, s_mask = samples[i]
            n = len(s_ids)
            x = torch.tensor(s_ids, dtype=torch.long)
            ids[b, t:t + n] = x
            labels[b, t:t + n] = torch.where(torch.tensor(s_mask, dtype=torch.bool), x, IGNORE_INDEX)
            pos[b, t:t + n] = torch.arange(n)
            t += n
        pos[b, t:] = torch.arange(seq_len - t)  # the padded tail: its own document, no targets
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


class PackedSFTLoader:
    """Packed rows epoch after epoch; a global batch is ``batch_size`` rows, rank r takes its share of them.

    Each epoch packs the samples in the order of a permutation seeded by ``(seed, epoch)``; the state
    (epoch, row cursor) resumes at the exact row.  The last batch of the run may be short: it ends at
    the last epoch's last row (ranks left without a row get a padding row, which has no targets)."""

    def __init__(self, samples, seq_len: int, seed: int = 0, pad_id: int = 0, epochs: int = 1,
                 rank: int = 0, world_size: int = 1):
        if not samples:
            raise ConfigError("SFT has no samples to train on (see the data counts)")
        self.samples, self.seq_len, self.seed, self.pad_id = samples, seq_len, seed, pad_id
        self.epochs, self.rank, self.world_size = epochs, rank, world_size
        self.lengths = [len(s[0]) for s in samples]
        self.epoch, self.cursor = 0, 0
        self._rows_epoch, self._rows = -1, []

    def rows(self, epoch: int) -> list[list[int]]:
        if epoch != self._rows_epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))
            self._rows, self._rows_epoch = pack(self.lengths, order, self.seq_len), epoch
        return self._rows

    def done(self) -> bool:
        return self.epoch >= self.epochs

    def progress(self) -> float:
        if self.done():
            return 1.0
        return (self.epoch + self.cursor / len(self.rows(self.epoch))) / self.epochs

    def next_batch(self, batch_size: int) -> dict:
        """This rank's rows of the next global batch of ``batch_size`` rows (also its sample and token counts)."""
        taken: list[list[int]] = []
        while len(taken) < batch_size and not self.done():
            rows = self.rows(self.epoch)
            k = min(batch_size - len(taken), len(rows) - self.cursor)
            taken += rows[self.cursor:self.cursor + k]
            self.cursor += k
            if self.cursor >= len(rows):
                self.epoch, self.cursor = self.epoch + 1, 0
        per_rank = -(-len(taken) // self.world_size)
        mine = taken[self.rank * per_rank:(self.rank + 1) * per_rank]
        mine += [[]] * (per_rank - len(mine))
        batch = row_tensors(self.samples, mine, self.seq_len, self.pad_id)
        batch["samples"] = sum(len(r) for r in taken)
        batch["tokens"] = sum(self.lengths[i] for r in taken for i in r)
        batch["rows"] = len(taken)
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "num_samples": len(self.samples)}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed or state["num_samples"] != len(self.samples):
            raise ValueError(f"SFT data state does not match this loader (seed {state['seed']} vs {self.seed}, "
                             f"{state['num_samples']} vs {len(self.samples)} samples)")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


def world_traces(world_dir, limit: int = 0, levels=(), seed: int = 0, style: str = "long") -> tuple[list[dict], dict]:
    """SFT records for the embedded world's training math problems: the problem as the chat user turn and a
    ``<think>`` trace before the answer, kept only when the math reward verifies its answer against the gold one.
    ``style`` "long": the problem restated, each step numbered, a check, then the worked solution
    (:func:`openmimo.data.world_math.math_reasoning`); "steps": the worked steps as the trace and the boxed result
    as the answer (:func:`openmimo.data.world_math.math_steps_reasoning`).  Returns (records, counts)."""
    from openmimo.rewards.math import math_rewards  # lazy: Math-Verify and the reward pool only when traces are made

    if style not in ("long", "steps"):
        raise ValueError(f"world trace style must be long or steps, got {style!r}")
    recs = [r for r in read_jsonl(Path(world_dir) / "math" / "train.jsonl") if not levels or r["level"] in levels]
    rng = random.Random(seed)
    if limit:
        recs = rng.sample(recs, min(limit, len(recs)))
    out = []
    for r in recs:
        reasoning, answer = math_reasoning(r, rng) if style == "long" else math_steps_reasoning(r)
        out.append({"id": r.get("unique_id"), "level": r["level"], "messages": [
            {"role": "user", "content": math_chat_message(r["problem"])},
            {"role": "assistant", "reasoning_content": reasoning, "content": answer}]})
    scores = math_rewards([format_assistant(o["messages"][1]["content"], o["messages"][1]["reasoning_content"])
                           for o in out], [r["answer"] for r in recs])
    kept = [o for o, s in zip(out, scores) if s.score == 1.0]
    rejected: dict[str, int] = {}
    for s in scores:
        if s.score != 1.0:
            rejected[s.reason or "wrong"] = rejected.get(s.reason or "wrong", 0) + 1
    return kept, {"problems": len(recs), "verified": len(kept), "rejected": rejected}
