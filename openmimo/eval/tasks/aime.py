"""AIME 2024 (answers are strings, may carry leading zeros: "025") and AIME 2025 (answers are integers)."""

from openmimo.eval.tasks.base import MathTask


class AIME24(MathTask):
    name = "aime24"
    filename = "math/aime24_test.jsonl"

    def gold(self, rec: dict):
        return str(rec["answer"]).strip().lstrip("0") or "0"  # "025" is 25


class AIME25(AIME24):
    name = "aime25"
    filename = "math/aime25_test.jsonl"


TASKS = [AIME24(), AIME25()]
