"""RL's problems: JSONL records of the tiny world's math and code formats, read through their task
(:mod:`openmimo.eval.tasks`), filtered by level and prompt length, and tokenised with the base-model prompt or,
for a chat (SFT) model, the tokenizer's own chat template.

Every record keeps its fields and gains ``prompt_ids`` (the prompt's token ids) and ``reward_kind``
(``math`` or ``code``: the task that scores it, see :data:`RL_TASKS`).  What was dropped is counted, per reason.
"""

from __future__ import annotations

from pathlib import Path

from openmimo.config import ConfigError
from openmimo.eval.tasks import get_task
from openmimo.jsonl import iter_jsonl

# the task (record format, base-model prompt, scorer) of each reward kind: the tiny world's formats
RL_TASKS = {"math": "world_math", "code": "world_code"}


def as_paths(value) -> list[str]:
    """A config value that is one path or a list of them, as a list."""
    return [value] if isinstance(value, str) else list(value)


def load_problems(path, kind: str, tokenizer, max_prompt_tokens: int, limit: int = 0,
                  levels=(), style: str = "base") -> tuple[list, dict]:
    """JSONL file(s) -> problem dicts with ``prompt_ids`` and ``reward_kind``; returns (problems,
    counts of kept/dropped and why, per kind).  ``limit`` applies to each file.

    ``kind`` "auto" decides per record: code when it has ``tests``, math otherwise.  ``levels``
    keeps only records whose ``level`` is listed (difficulty filtering, as MiMo curated its RL
    problems to those the starting model can sometimes solve); records without a level are kept.  ``style``:
    "base" (the pre-training text's prompt) or "chat" (the task's user turn through the tokenizer's chat template,
    with the generation prompt)."""
    out, counts = [], {"kept": 0, "too_long": 0, "other_level": 0, "math": 0, "code": 0}
    for p in as_paths(path):
        out += _load_file(Path(p), kind, tokenizer, max_prompt_tokens, limit, levels, counts, style)
    if not out:
        raise ConfigError(f"{', '.join(map(str, as_paths(path)))}: no usable problems ({counts})")
    return out, counts


def prompt_text(task, rec: dict, tokenizer, style: str) -> str:
    """The prompt of ``rec`` in ``style``: base (a code prompt opens the code fence, as the pre-training text
    does) or chat (the tokenizer's chat template)."""
    if style == "chat":
        return tokenizer.apply_chat_template(task.messages(rec), add_generation_prompt=True)
    return task.prompt(rec, style="base")


def _load_file(p: Path, kind: str, tokenizer, max_prompt_tokens: int, limit: int, levels, counts: dict,
               style: str) -> list:
    out = []
    for ln, rec in iter_jsonl(p, what="problem file"):
        if levels and "level" in rec and rec["level"] not in levels:
            counts["other_level"] += 1
            continue
        rkind = kind if kind != "auto" else ("code" if "tests" in rec else "math")
        task = get_task(RL_TASKS[rkind])
        task.check(rec, f"{p}:{ln}")
        ids = tokenizer.encode(prompt_text(task, rec, tokenizer, style))
        if len(ids) > max_prompt_tokens:
            counts["too_long"] += 1
            continue
        out.append({**rec, "prompt_ids": ids, "reward_kind": rkind})
        counts["kept"] += 1
        counts[rkind] += 1
        if limit and len(out) >= limit:
            break
    return out
