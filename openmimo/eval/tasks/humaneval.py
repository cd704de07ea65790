"""HumanEval (``code/HumanEval.jsonl.gz``): task_id, prompt (signature + docstring), canonical_solution,
test (``def check(candidate): ...``), entry_point.  The check runs as ``check(entry_point)``.

Chat: the model writes the whole function in a fenced block; the prompt's imports are put in
front of it (a fenced body without the ``def`` gets the prompt itself in front).  Base: the
prompt is the raw function header, the completion its body, cut at the first top-level
``def``/``class``/``if``/``print`` or fence.
"""

import re

from openmimo.eval.tasks.base import CodeTask

_STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n```", "\nassert "]
_IMPORT = re.compile(r"^(?:from\s+\S+\s+import\s+.+|import\s+.+)$", re.M)


class HumanEval(CodeTask):
    name = "humaneval"
    filename = "code/HumanEval.jsonl.gz"
    required = ("task_id", "prompt", "test", "entry_point")

    def question(self, rec: dict) -> str:
        return str(rec["prompt"])

    def chat_content(self, rec: dict) -> str:
        return ("Complete the following Python function. Write the whole function, with any imports it needs, "
                f"in one ```python code block.\n\n```python\n{rec['prompt'].rstrip()}\n```")

    def base_prompt(self, rec: dict) -> str:
        return str(rec["prompt"])

    def stop(self, style: str) -> list[str]:
        return list(_STOPS) if style != "chat" else []

    def program(self, rec: dict, response: str, style: str = "chat") -> str | None:
        if style != "chat":
            body = response
            for s in _STOPS:
                cut = body.find(s)
                if cut >= 0:
                    body = body[:cut]
            return rec["prompt"] + body
        from openmimo.rewards.adapters import extract_code

        code = extract_code(response)
        if code is None:
            return None
        if not re.search(rf"^\s*def\s+{re.escape(rec['entry_point'])}\s*\(", code, re.M):
            return rec["prompt"] + code  # only the body was written
        imports = "\n".join(_IMPORT.findall(rec["prompt"]))
        return f"{imports}\n{code}" if imports else code

    def tests(self, rec: dict):
        return {"test": rec["test"], "entry_point": rec["entry_point"]}

    def solution(self, rec: dict) -> str | None:
        sol = rec.get("canonical_solution")
        return None if sol is None else rec["prompt"] + sol

    def texts(self, rec: dict) -> list[str]:
        return [self.question(rec)] + ([rec["canonical_solution"]] if rec.get("canonical_solution") else [])


TASK = HumanEval()
