"""CodeContests (stdin/stdout problems) in two layouts:

* SandboxFusion's samples (``code/code_contests_samples_sandboxfusion.jsonl``): id, content (statement),
  test (JSON list of ``{"input": {"stdin"}, "output": {"stdout"}}``), labels (JSON: difficulty, name, source);
* deepmind/code_contests: description, public_tests / private_tests / generated_tests as
  ``{"input": [...], "output": [...]}``, solutions.
"""

import json

from openmimo.eval.prompts import lcb_prompt
from openmimo.eval.tasks.base import CodeTask


class CodeContests(CodeTask):
    name = "codecontests"
    filename = "code/code_contests_samples_sandboxfusion.jsonl"
    required = (("content", "description"), ("test", "public_tests"))

    def question(self, rec: dict) -> str:
        return str(rec.get("content") or rec["description"])

    def chat_content(self, rec: dict) -> str:
        return lcb_prompt(self.question(rec))

    def groups(self, rec: dict) -> dict[str, str]:
        labels = rec.get("labels")
        if isinstance(labels, str):
            try:
                labels = json.loads(labels)
            except json.JSONDecodeError:
                labels = None
        return {"difficulty": str(labels["difficulty"])} if isinstance(labels, dict) and "difficulty" in labels else {}

    def tests(self, rec: dict):
        if rec.get("test") is not None:
            return rec["test"]
        ins, outs = [], []
        for field in ("public_tests", "private_tests", "generated_tests"):
            t = rec.get(field) or {}
            ins += list(t.get("input", []))
            outs += list(t.get("output", []))
        return {"inputs": ins, "outputs": outs}


TASK = CodeContests()
