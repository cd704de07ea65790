"""AMC 2023 (``math/amc23_test.jsonl``): id, problem (and the same text as question), answer as a float (27.0)."""

from openmimo.eval.tasks.base import MathTask


class AMC23(MathTask):
    name = "amc23"
    filename = "math/amc23_test.jsonl"
    required = (("problem", "question"), "answer")

    def question(self, rec: dict) -> str:
        return str(rec.get("problem") or rec["question"])


TASK = AMC23()
