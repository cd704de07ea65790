"""The tiny world's code records (``make-world OUT/code/test.jsonl``): LiveCodeBench fields + graded ``tests``."""

from openmimo.eval.tasks.base import CodeTask


class WorldCode(CodeTask):
    name = "world_code"
    filename = "code/test.jsonl"  # under a world folder (openmimo make-world OUT): --data-dir OUT
    required = (("question_content", "statement", "problem"), "tests")
    breakdown = ("difficulty", "testtype")

    def question(self, rec: dict) -> str:
        return str(rec.get("question_content") or rec.get("statement") or rec.get("problem"))

    def chat_content(self, rec: dict) -> str:
        return str(rec.get("prompt") or self.question(rec))

    def tests(self, rec: dict):
        return {k: rec[k] for k in ("tests", "fn_name", "metadata") if k in rec}

    def solution(self, rec: dict) -> str | None:
        return rec.get("solution")


TASK = WorldCode()
