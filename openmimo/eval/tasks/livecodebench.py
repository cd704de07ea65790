"""LiveCodeBench, stdin and functional (LeetCode-style ``class Solution``) problems, in two layouts:

* the decoded samples (``code/lcb_v1_samples_decoded.jsonl``): task_id, platform, difficulty, testtype
  ("stdin" / "functional"), fn_name ("None" for stdin), prompt (LiveCodeBench's full prompt), inputs and
  outputs (one entry per test; functional inputs are JSON values, one argument per line);
* the Hugging Face release fields (question_content, starter_code, public_test_cases and
  private_test_cases as JSON lists of {input, output, testtype}, metadata with func_name) -- the
  world's code records use them too.  The compressed (base64/zlib/pickle) private tests of the
  later releases are not read: decode them to JSON first.
"""

import json

from openmimo.eval.prompts import lcb_prompt
from openmimo.eval.tasks.base import CodeTask


class LiveCodeBench(CodeTask):
    name = "livecodebench"
    filename = "code/lcb_v1_samples_decoded.jsonl"
    required = (("prompt", "question_content"), ("inputs", "public_test_cases"))
    breakdown = ("platform", "difficulty", "testtype")

    def question(self, rec: dict) -> str:
        if rec.get("question_content"):
            return str(rec["question_content"])
        text = str(rec["prompt"])
        start = text.find("### Question:\n")
        end = text.find("\n\n### Format:")
        return text[start + len("### Question:\n") if start >= 0 else 0: end if end >= 0 else None]

    def chat_content(self, rec: dict) -> str:
        if rec.get("prompt"):
            return str(rec["prompt"])
        return lcb_prompt(str(rec["question_content"]), rec.get("starter_code") or "")

    def tests(self, rec: dict):
        if "inputs" in rec:
            return {"inputs": rec["inputs"], "outputs": rec["outputs"], "fn_name": rec.get("fn_name")}
        cases = []
        for field in ("public_test_cases", "private_test_cases"):
            value = rec.get(field) or "[]"
            try:
                cases += json.loads(value) if isinstance(value, str) else list(value)
            except json.JSONDecodeError:
                raise ValueError(f"{field} is not JSON (decode the compressed release format first)") from None
        meta = rec.get("metadata") or {}
        meta = json.loads(meta) if isinstance(meta, str) else meta
        return {"tests": cases, "fn_name": rec.get("fn_name") or meta.get("func_name")}


TASK = LiveCodeBench()
