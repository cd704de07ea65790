"""MBPP in three record formats, one task each:

* ``mbpp``: DeepSeek-Coder's test split (``code/mbpp_test_deepseek.jsonl``, 500 problems): prompt,
  test (a list of assert lines), code, task_id;
* ``mbpp_original``: the original file (``code/mbpp.jsonl``): text, code, task_id, test_setup_code,
  test_list, challenge_test_list -- its test split, task ids 11-510 (the same 500 problems);
* ``mbpp_sandboxfusion``: SandboxFusion's samples: content, canonical_solution, test_list, labels.

The prompt is the original MBPP one (Austin et al.): the task and its tests, so the function name is known.
"""

from openmimo.eval.tasks.base import CodeTask

TEST_IDS = range(11, 511)


def mbpp_prompt(text: str, tests: list[str]) -> str:
    return (f"You are an expert Python programmer, and here is your task: {text} Your code should pass these "
            "tests:\n\n" + "\n".join(t.strip() for t in tests))


class MBPPDeepSeek(CodeTask):
    name = "mbpp"
    filename = "code/mbpp_test_deepseek.jsonl"
    required = ("prompt", "test")
    text_field, tests_field, code_field = "prompt", "test", "code"

    def _asserts(self, rec: dict) -> list[str]:
        t = rec[self.tests_field]
        lines = [ln for ln in t.splitlines() if ln.strip()] if isinstance(t, str) else list(t)
        if not lines or not all(isinstance(x, str) and x.lstrip().startswith("assert") for x in lines):
            raise ValueError(f"MBPP tests must be a non-empty list of assert lines, got {str(t)[:80]!r}")
        return lines

    def question(self, rec: dict) -> str:
        return mbpp_prompt(str(rec[self.text_field]), self._asserts(rec))

    def chat_content(self, rec: dict) -> str:
        return self.question(rec) + "\n\nWrite the code in one ```python code block."

    def tests(self, rec: dict):
        labels = rec["labels"] if isinstance(rec.get("labels"), dict) else {}
        setup = rec.get("test_setup_code") or labels.get("test_setup_code") or ""
        return {"test_list": self._asserts(rec), "test_setup_code": setup}

    def solution(self, rec: dict) -> str | None:
        return rec.get(self.code_field)

    def texts(self, rec: dict) -> list[str]:
        return [str(rec[self.text_field])] + self._asserts(rec) + ([rec[self.code_field]] if rec.get(self.code_field) else [])


class MBPPOriginal(MBPPDeepSeek):
    name = "mbpp_original"
    filename = "code/mbpp.jsonl"
    required = ("text", "test_list", "task_id")
    text_field, tests_field, code_field = "text", "test_list", "code"

    def keep(self, rec: dict) -> bool:
        return rec.get("task_id") in TEST_IDS


class MBPPSandboxFusion(MBPPDeepSeek):
    name = "mbpp_sandboxfusion"
    filename = "code/mbpp_samples_sandboxfusion.jsonl"
    required = ("content", "test_list")
    text_field, tests_field, code_field = "content", "test_list", "canonical_solution"


TASKS = [MBPPDeepSeek(), MBPPOriginal(), MBPPSandboxFusion()]
