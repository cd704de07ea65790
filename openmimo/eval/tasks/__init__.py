"""The tasks: one module per benchmark record format, one registry (what eval, RL, curation, SFT and
decontamination read).

``get_task(name)`` -> a :class:`~openmimo.eval.tasks.base.Task` with ``load(path=None, data_dir=None,
limit=0)``, ``prompt(record, style)``, ``messages(record)``, ``submit_score(record, response, style)``
/ ``score(...)``, ``extract``, ``reference``, ``texts``.  :func:`iter_texts` yields every record's own
text (for decontamination n-grams).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from openmimo.config import UsageError
from openmimo.eval.tasks import (aime, amc23, codecontests, gsm8k, humaneval, livecodebench, math500, mbpp, minerva,
                                 world_code, world_math)
from openmimo.eval.tasks.base import STYLES, CodeTask, MathTask, Task, default_data_dir, read_records

__all__ = ["TASKS", "MATH_TASKS", "CODE_TASKS", "get_task", "iter_texts", "Task", "MathTask", "CodeTask", "STYLES",
           "default_data_dir", "read_records"]

TASKS: dict[str, Task] = {t.name: t for t in [
    math500.TASK, *aime.TASKS, amc23.TASK, gsm8k.TASK, minerva.TASK,
    humaneval.TASK, *mbpp.TASKS, livecodebench.TASK, codecontests.TASK,
    world_math.TASK, world_code.TASK,
]}
MATH_TASKS = [n for n, t in TASKS.items() if t.kind == "math"]
CODE_TASKS = [n for n, t in TASKS.items() if t.kind == "code"]


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is a usage error listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise UsageError(f"unknown task {name!r} (choose from {', '.join(TASKS)})") from None


def iter_texts(name: str, path: str | Path | None = None, data_dir: str | Path | None = None) -> Iterator[str]:
    """Every text of every record of a task (question, and solution / tests where given): the strings a
    training corpus must not contain n-grams of."""
    task = get_task(name)
    for rec in task.load(path, data_dir):
        yield from (t for t in task.texts(rec) if t)
