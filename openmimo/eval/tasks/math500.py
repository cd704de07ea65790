"""MATH-500 (``math/math_500_test.jsonl``): problem, solution, answer (LaTeX), subject, level, unique_id."""

from openmimo.eval.tasks.base import MathTask


class Math500(MathTask):
    name = "math500"
    filename = "math/math_500_test.jsonl"
    breakdown = ("level", "subject")


TASK = Math500()
