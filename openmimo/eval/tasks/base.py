"""A task = a record format: ``load(path) -> records``, ``prompt(record, style)``, ``score(record, response)``.

Styles: ``chat`` (the user turn rendered by the checkpoint's own chat template, see
:mod:`openmimo.chat`; through an OpenAI-compatible endpoint the messages themselves are sent),
``base`` (a plain completion prompt) and ``fewshot`` (worked examples, then the base prompt; a
task without examples uses its base prompt).

Scoring goes through the project's rewards and never raises: math through Math-Verify
(:mod:`openmimo.rewards.math`, the balanced last ``\\boxed{}`` after the reasoning block), code
through the isolated judge (:mod:`openmimo.rewards.adapters`); a record the judge cannot use
scores 0 with the reason.  Every score is a ``Future[RewardResult]`` from :meth:`Task.submit_score`
so evaluation and RL keep generating while rewards are computed.
"""

from __future__ import annotations

import gzip
import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Iterator, Sequence

from openmimo import chat
from openmimo.config import ConfigError
from openmimo.eval import prompts
from openmimo.jsonl import parse_jsonl_lines
from openmimo.rewards.pool import RewardResult

STYLES = ("chat", "base", "fewshot")
# the public benchmark files: ../shared/benchmarks from the working directory, else from the project root
_PROJECT_DATA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "benchmarks"


def default_data_dir() -> Path:
    here = Path("../shared/benchmarks")
    return here if here.is_dir() else _PROJECT_DATA_DIR


def _done(result: RewardResult) -> Future:
    f: Future = Future()
    f.set_result(result)
    return f


def read_records(path: str | Path) -> Iterator[tuple[str, dict]]:
    """``(where, record)`` for each record of a JSONL (optionally ``.gz``), JSON-list or Parquet file;
    ``where`` is ``file:line`` (``file:row N`` for Parquet).  Bad input raises ConfigError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"task file not found: {p}")
    name = p.name.lower()
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq  # optional: only Parquet input needs it
        except ImportError:
            raise ConfigError(f"{p}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        for i, rec in enumerate(pq.read_table(p).to_pylist(), start=1):
            yield f"{p}:row {i}", rec
        return
    if name.endswith(".json"):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ConfigError(f"{p}: expected a JSON list of objects")
        for i, rec in enumerate(data, start=1):
            yield f"{p}:item {i}", rec
        return
    opener = gzip.open if name.endswith(".gz") else open
    with opener(p, "rb") as f:
        for n, rec in parse_jsonl_lines(f, str(p)):
            yield f"{p}:{n}", rec


class Task:
    """One benchmark format.  Subclasses set the class attributes and override the hooks."""

    name = ""
    kind = "math"  # math | code
    filename = ""  # default file, relative to the benchmark data folder
    required: tuple = ()  # fields every record needs; a tuple entry lists alternatives
    id_fields: tuple[str, ...] = ("unique_id", "task_id", "id", "idx", "question_id")
    breakdown: tuple[str, ...] = ()  # fields the results are also broken down by (level, subject, ...)

    # -- records ----------------------------------------------------------------------------
    def default_path(self, data_dir: str | Path | None = None) -> Path:
        return Path(data_dir or default_data_dir()) / self.filename

    def load(self, path: str | Path | None = None, data_dir: str | Path | None = None, limit: int = 0) -> list[dict]:
        """The records of ``path`` (default: this task's file under ``data_dir``), checked for the
        required fields; at most ``limit`` (0 = all)."""
        target = Path(path) if path else self.default_path(data_dir)
        if not path and not target.is_file():
            raise ConfigError(f"{self.name}: its default file {target} is missing (point --data-dir at the folder "
                              f"that holds {self.filename}, or give the file: --task-file {self.name}=PATH)")
        out = []
        for where, rec in read_records(target):
            self.check(rec, where)
            if not self.keep(rec):
                continue
            out.append(rec)
            if limit and len(out) >= limit:
                break
        return out

    def check(self, rec: dict, where: str) -> None:
        """Raise ConfigError naming ``where`` (file:line) and the first required field ``rec`` lacks."""
        for field in self.required:
            options = field if isinstance(field, tuple) else (field,)
            if not any(rec.get(o) is not None for o in options):
                raise ConfigError(f"{where}: a {self.name} record needs the field {' or '.join(map(repr, options))}")

    def keep(self, rec: dict) -> bool:
        """Whether a loaded record belongs to the task's split (MBPP's test ids, for example)."""
        return True

    def record_id(self, rec: dict, index: int) -> str:
        for f in self.id_fields:
            if rec.get(f) is not None:
                return f"{self.name}/{rec[f]}"
        return f"{self.name}/{index}"

    def groups(self, rec: dict) -> dict[str, str]:
        """The record's breakdown values, e.g. ``{"level": "3", "subject": "Algebra"}``."""
        return {f: str(rec[f]) for f in self.breakdown if rec.get(f) is not None}

    # -- prompts ----------------------------------------------------------------------------
    def question(self, rec: dict) -> str:
        raise NotImplementedError

    def chat_content(self, rec: dict) -> str:
        return self.question(rec)

    def base_prompt(self, rec: dict) -> str:
        raise NotImplementedError

    def fewshot_prompt(self, rec: dict) -> str:
        return self.base_prompt(rec)

    def messages(self, rec: dict) -> list[dict]:
        """The chat conversation to send (one user turn; the template adds any default system prompt)."""
        return [{"role": "user", "content": self.chat_content(rec)}]

    def prompt(self, rec: dict, style: str = "chat", template: str | None = None,
               special_tokens: dict | None = None) -> str:
        """The prompt text: ``chat`` renders :meth:`messages` with ``template`` (the checkpoint's own)
        and the generation prompt; ``base`` / ``fewshot`` are completion prompts."""
        if style == "chat":
            return chat.render(self.messages(rec), template, add_generation_prompt=True, special_tokens=special_tokens)
        if style == "base":
            return self.base_prompt(rec)
        if style == "fewshot":
            return self.fewshot_prompt(rec)
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")

    def stop(self, style: str) -> list[str]:
        """Strings that end a completion in this style (the next few-shot problem, for base prompts)."""
        return []

    # -- scoring ----------------------------------------------------------------------------
    def extract(self, rec: dict, response: str, style: str = "chat") -> str | None:
        """What the scorer reads from the response (the answer, or the program), for the audit trail."""
        raise NotImplementedError

    def submit_score(self, rec: dict, response: str, style: str = "chat", **kw: Any) -> Future:
        raise NotImplementedError

    def score(self, rec: dict, response: str, style: str = "chat", **kw: Any) -> RewardResult:
        return self.submit_score(rec, response, style, **kw).result()

    def reference(self, rec: dict) -> str | None:
        """A correct chat-style response (the gold answer boxed, or the reference program fenced), or None."""
        return None

    def texts(self, rec: dict) -> list[str]:
        """The record's own text (question, and solution where given): what decontamination must not train on."""
        return [self.question(rec)]


class MathTask(Task):
    kind = "math"
    required = ("problem", "answer")

    def question(self, rec: dict) -> str:
        return str(rec["problem"])

    def gold(self, rec: dict):
        return rec["answer"]

    def chat_content(self, rec: dict) -> str:
        return prompts.math_chat_message(self.question(rec))

    def base_prompt(self, rec: dict) -> str:
        return prompts.math_base_prompt(self.question(rec))

    def fewshot_prompt(self, rec: dict) -> str:
        return prompts.math_fewshot_prompt(self.question(rec))

    def stop(self, style: str) -> list[str]:
        return ["\nProblem:"] if style != "chat" else []

    def extract(self, rec: dict, response: str, style: str = "chat") -> str | None:
        from openmimo.rewards.math import extract_answer

        return extract_answer(response)

    def submit_score(self, rec: dict, response: str, style: str = "chat", *, pool=None, timeout: float = 10.0,
                     **_: Any) -> Future:
        """Math-Verify on the balanced last ``\\boxed{}`` after the reasoning block, in the reward pool."""
        from openmimo.rewards.math import submit_math_reward

        try:
            gold = self.gold(rec)
        except (KeyError, TypeError, ValueError) as e:
            return _done(RewardResult(0.0, f"no usable gold answer: {e}"[:200]))
        try:
            return submit_math_reward(response, gold, pool=pool, timeout=timeout)
        except (TypeError, ValueError) as e:  # e.g. a bool gold
            return _done(RewardResult(0.0, f"bad gold answer: {e}"[:200]))

    def reference(self, rec: dict) -> str | None:
        from openmimo.rewards.math import normalise_gold

        return f"The answer is \\boxed{{{normalise_gold(self.gold(rec))}}}."

    def texts(self, rec: dict) -> list[str]:
        return [self.question(rec)] + ([str(rec["solution"])] if rec.get("solution") else [])


class CodeTask(Task):
    kind = "code"

    def tests(self, rec: dict):
        """The record's tests in any format :func:`~openmimo.rewards.adapters.tests_from_record` reads."""
        raise NotImplementedError

    def solution(self, rec: dict) -> str | None:
        """The reference program, where the record has one."""
        return None

    def base_prompt(self, rec: dict) -> str:
        return prompts.code_base_prompt(self.question(rec))

    def program(self, rec: dict, response: str, style: str = "chat") -> str | None:
        """The program to judge: the last fenced Python block after the reasoning block (a base-style
        completion continues the fence its prompt opened, which is put back first)."""
        from openmimo.rewards.adapters import extract_code

        return extract_code(prompts.CODE_OPEN + response if style != "chat" else response)

    def extract(self, rec: dict, response: str, style: str = "chat") -> str | None:
        return self.program(rec, response, style)

    def submit_score(self, rec: dict, response: str, style: str = "chat", *, scheme: str = "binary",
                     levels: Sequence[int] | None = None, judge=None, limits=None, **_: Any) -> Future:
        """The judge on :meth:`program` with :meth:`tests`; ``binary`` (all tests pass) for evaluation,
        ``strict`` / ``soft`` with test levels for RL."""
        from openmimo.rewards.adapters import submit_program_reward

        code = self.program(rec, response, style)
        if code is None:
            return _done(RewardResult(0.0, "no fenced Python code block after the reasoning block"))
        try:
            tests = self.tests(rec)
        except (KeyError, TypeError, ValueError) as e:
            return _done(RewardResult(0.0, f"bad tests: {e}"[:200]))
        if levels is None:
            levels = rec.get("test_levels")
        return submit_program_reward(code, tests, levels=levels, scheme=scheme, judge=judge, limits=limits)

    def reference(self, rec: dict) -> str | None:
        sol = self.solution(rec)
        return None if sol is None else f"```python\n{sol.rstrip()}\n```"

    def texts(self, rec: dict) -> list[str]:
        sol = self.solution(rec)
        return [self.question(rec)] + ([sol] if sol else [])
