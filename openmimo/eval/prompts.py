"""Prompt formats shared by the tasks, the tiny world's generators and RL (text only; no imports of the rest).

Math (every math task):

* chat: ``{problem}\\nPlease reason step by step, and put your final answer within \\boxed{}.``
  (the instruction of the Qwen2.5-Math / DeepSeek-R1 / MiMo evaluations) as the user turn;
* base: ``Problem: {problem}\\nSolution:`` (the format of the tiny world's pre-training text);
* few-shot: four worked examples in the base format, each ending ``The answer is \\boxed{N}.``,
  then the base prompt.

Code: a LiveCodeBench-style statement (:func:`lcb_prompt`) for chat models; for base models the
statement followed by ``Solution:`` and an opened ``python`` fence (:func:`code_base_prompt`), so a
completion is the program itself (:data:`CODE_OPEN` is put back before the judge reads it).
"""

from __future__ import annotations

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_OPEN = "```python\n"  # the fence that opens the program in code_base_prompt's completions

MATH_FEWSHOT = (
    ("What is 23 + 48?", "23 + 48 = 71.\nThe answer is \\boxed{71}."),
    ("Solve for x: 4x - 7 = 13.", "Add 7 to both sides: 4x = 20.\nDivide both sides by 4: x = 5.\n"
                                  "The answer is \\boxed{5}."),
    ("What is the value of $\\frac{3}{4} + \\frac{1}{6}$?",
     "The common denominator is 12: $\\frac{9}{12} + \\frac{2}{12} = \\frac{11}{12}$.\n"
     "The answer is \\boxed{\\frac{11}{12}}."),
    ("A shop sells pens at 3 dollars each. Ana buys 7 pens and pays with a 50-dollar bill. How much change does she get?",
     "The pens cost 7 * 3 = 21 dollars.\nThe change is 50 - 21 = 29 dollars.\nThe answer is \\boxed{29}."),
)

LCB_PREAMBLE = ("You are an expert Python programmer. You will be given a question (problem specification) and will "
                "generate a correct Python program that matches the specification and passes all tests. You will NOT "
                "return anything except for the program.\n### Question:\n")
LCB_FORMAT_STDIN = ("\n\n### Format: Read the inputs from stdin solve the problem and write the answer to stdout (do not "
                    "directly test on the sample inputs). Enclose your code within delimiters as follows.\n```python\n"
                    "# YOUR CODE HERE\n```\n\n### Answer: (use the provided format with backticks)\n\n")
LCB_FORMAT_CALL = ("\n\n### Format: You will use the following starter code to write the solution to the problem and "
                   "enclose your code within delimiters.\n```python\n{starter}\n```\n\n### Answer: (use the provided "
                   "format with backticks)\n\n")


def math_chat_message(problem: str) -> str:
    """The user turn of a math problem for a chat model."""
    return f"{problem}\n{MATH_INSTRUCTION}"


def math_base_prompt(problem: str) -> str:
    """Prompt for a base model: it continues with the solution and ``\\boxed{answer}``."""
    return f"Problem: {problem}\nSolution:"


def math_fewshot_prompt(problem: str) -> str:
    """Four worked examples (:data:`MATH_FEWSHOT`) in the base format, then the base prompt."""
    shots = "".join(f"{math_base_prompt(q)} {s}\n\n" for q, s in MATH_FEWSHOT)
    return shots + math_base_prompt(problem)


def lcb_prompt(content: str, starter_code: str = "") -> str:
    """LiveCodeBench's prompt: stdin format without starter code, call format (starter shown) with it."""
    fmt = LCB_FORMAT_CALL.format(starter=starter_code) if starter_code else LCB_FORMAT_STDIN
    return LCB_PREAMBLE + content + fmt


def code_base_prompt(statement: str) -> str:
    """Prompt for a base model: the statement, ``Solution:`` and an opened fence (:data:`CODE_OPEN`), so the
    completion is the program; the scorer puts the fence back before the judge reads it."""
    return f"{statement}\n\nSolution:\n{CODE_OPEN}"
