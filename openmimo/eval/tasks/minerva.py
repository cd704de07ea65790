"""Minerva math (``math/minerva_math_test.jsonl``): idx, problem, solution (the answer is its last ``\\boxed{}``), type."""

from openmimo.eval.tasks.base import MathTask
from openmimo.rewards.math import last_boxed


class Minerva(MathTask):
    name = "minerva"
    filename = "math/minerva_math_test.jsonl"
    required = ("problem", ("answer", "solution"))
    breakdown = ("type",)

    def gold(self, rec: dict):
        if rec.get("answer") is not None:
            return rec["answer"]
        boxed = last_boxed(str(rec["solution"]))
        if boxed is None:
            raise ValueError("the solution has no \\boxed{} answer")
        return boxed


TASK = Minerva()
