"""GSM8K (``math/gsm8k_test.jsonl``): question, answer = worked solution ending ``#### N`` (N may have commas)."""

from openmimo.eval.tasks.base import MathTask


class GSM8K(MathTask):
    name = "gsm8k"
    filename = "math/gsm8k_test.jsonl"
    required = ("question", "answer")

    def question(self, rec: dict) -> str:
        return str(rec["question"])

    def gold(self, rec: dict):
        text = str(rec["answer"])
        if "####" not in text:
            raise ValueError("a GSM8K answer ends with '#### N'")
        return text.rsplit("####", 1)[1].strip().replace(",", "")

    def texts(self, rec: dict) -> list[str]:
        return [self.question(rec), str(rec["answer"])]


TASK = GSM8K()
