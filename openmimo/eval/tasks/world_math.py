"""The tiny world's math records (``make-world OUT/math/test.jsonl``): problem, solution, answer, level, subject."""

from openmimo.eval.tasks.base import MathTask


class WorldMath(MathTask):
    name = "world_math"
    filename = "math/test.jsonl"  # under a world folder (openmimo make-world OUT): --data-dir OUT
    breakdown = ("level", "subject")


TASK = WorldMath()
