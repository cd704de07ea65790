"""Held-out evaluation of a pre-trained base model: math answer accuracy and per-depth MTP accuracy.

Math: greedy completion of the world-math task's base prompts (``Problem: ...\nSolution:``, the
format of the pre-training text), scored by the task (Math-Verify on the last balanced
``\boxed{}``, in the reward pool).  MTP: on held-out text, the share of positions where depth k's
arg-max equals token t+1+k (depth 0 is the main head's next-token accuracy).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def math_accuracy(model, tokenizer, problems: list[dict], max_new_tokens: int = 80, batch_size: int = 32,
                  prompt_fn=None) -> tuple[float, int]:
    """Share of ``problems`` (problem, answer) whose greedy completion the world-math task scores 1;
    ``prompt_fn(problem_text)`` replaces the task's base prompt."""
    from openmimo.eval.tasks import get_task
    from openmimo.infer.oracle import greedy_batch

    task = get_task("world_math")
    if not problems:
        return 0.0, 0
    futures = []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        prompts = [tokenizer.encode(prompt_fn(p["problem"]) if prompt_fn else task.prompt(p, style="base"))
                   for p in chunk]
        outs = greedy_batch(model, prompts, max_new_tokens, stop_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
        for p, o in zip(chunk, outs):
            futures.append(task.submit_score(p, tokenizer.decode(o, skip_special_tokens=True), style="base"))
    correct = sum(f.result().score >= 1.0 for f in futures)
    return correct / len(problems), len(problems)


@torch.no_grad()
def mtp_accuracy(model, tokenizer, texts: list[str], seq_len: int = 256, device="cpu") -> list[float]:
    """[main next-token acc, depth-1 acc, ...] on ``texts`` (each truncated to ``seq_len``)."""
    n_depth = 1 + model.config.num_nextn_predict_layers
    correct = [0] * n_depth
    total = [0] * n_depth
    for t in texts:
        ids = tokenizer.encode(t)[:seq_len]
        if len(ids) < 2 + n_depth:
            continue
        x = torch.tensor([ids], device=device)
        out = model(x, labels=x)
        for d in range(n_depth):
            correct[d] += int(out.num_correct[d])
            total[d] += int(out.num_targets[d])
    return [c / max(n, 1) for c, n in zip(correct, total)]


def evaluate_pretrained(model, tokenizer, eval_data: dict, cfg, rt) -> dict:
    """Rank-0 evaluation on the unsharded-equivalent model (call on every rank under FSDP)."""
    was_training = model.training
    model.eval()
    with rt.autocast():
        acc, n = math_accuracy(model, tokenizer, eval_data.get("math", [])[: cfg.train.eval_problems])
        accs = mtp_accuracy(model, tokenizer, eval_data.get("texts", []), seq_len=cfg.stages[-1].seq_len,
                            device=rt.device)
    model.train(was_training)
    return {"math_acc": acc, "math_n": n, "main_acc": accs[0], "mtp_acc": accs[1:]}
