"""Code problems of the tiny world, in the LiveCodeBench record format, with graded tests.

Each *family* is one task (a description, a typed signature, a reference function).  A family gives
two problems: a call-based one (LeetCode style, ``class Solution`` + ``fn_name``, one JSON value per
argument line) and a stdin/stdout one (the program parses the arguments line by line and prints).
The reference function is executed here to compute every expected output, so the reference
solution passes its own tests by construction.  Tests are graded: ``basic`` (small random cases,
the first two are public), ``edge`` (empty or minimal inputs, extreme values), ``large`` (long inputs).

Argument types: int, list[int], str, list[str] (words without spaces).  Return types: int, bool,
str, list[int].  stdin encoding: one line per int/str; a list is a line with its length, then one
line of space-separated items.  stdout: bool as YES/NO, list as space-separated items.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from openmimo.eval.prompts import CODE_OPEN, LCB_FORMAT_CALL, LCB_FORMAT_STDIN, LCB_PREAMBLE, code_base_prompt

_PY = {"int": "int", "list[int]": "List[int]", "str": "str", "list[str]": "List[str]", "bool": "bool"}


@dataclass
class Family:
    fn: str
    args: list[tuple[str, str]]  # (name, type)
    ret: str
    desc: str
    src: str  # `def {fn}(...)` source, the reference solution
    difficulty: str = "easy"
    lo: int = -100  # value range of list items / int args
    hi: int = 100
    min_len: int = 0
    alphabet: str = "abcde"
    extra: dict = field(default_factory=dict)  # per-argument (lo, hi) overrides


FAMILIES = [
    Family("countDivisible", [("nums", "list[int]"), ("k", "int")], "int",
           "Given an integer array nums and a positive integer k, return how many elements of nums are divisible by k.",
           "def countDivisible(nums, k):\n    return sum(1 for x in nums if x % k == 0)\n", extra={"k": (1, 12)}),
    Family("sumOfSquares", [("nums", "list[int]")], "int", "Return the sum of the squares of the elements of nums.",
           "def sumOfSquares(nums):\n    return sum(x * x for x in nums)\n"),
    Family("maxMinusMin", [("nums", "list[int]")], "int",
           "Given a non-empty integer array nums, return the difference between its largest and smallest element.",
           "def maxMinusMin(nums):\n    return max(nums) - min(nums)\n", min_len=1),
    Family("countVowels", [("s", "str")], "int", "Return the number of vowels (a, e, i, o, u) in the lowercase string s.",
           "def countVowels(s):\n    return sum(1 for ch in s if ch in 'aeiou')\n", alphabet="abcdeiouxyz"),
    Family("reverseWords", [("words", "list[str]")], "str",
           "Given a list of words, return one string with the words in reverse order separated by single spaces.",
           "def reverseWords(words):\n    return ' '.join(reversed(words))\n"),
    Family("isPalindrome", [("s", "str")], "bool", "Return true if the string s reads the same forwards and backwards.",
           "def isPalindrome(s):\n    return s == s[::-1]\n", alphabet="ab"),
    Family("secondLargest", [("nums", "list[int]")], "int",
           "Return the second largest distinct value in nums, or -1 if nums has fewer than two distinct values.",
           "def secondLargest(nums):\n    vals = sorted(set(nums))\n    return vals[-2] if len(vals) >= 2 else -1\n",
           lo=0, hi=50, difficulty="medium"),
    Family("prefixSums", [("nums", "list[int]")], "list[int]",
           "Return the array of running totals of nums: element i is nums[0] + nums[1] + ... + nums[i].",
           "def prefixSums(nums):\n    out, total = [], 0\n    for x in nums:\n        total += x\n        out.append(total)\n"
           "    return out\n"),
    Family("countPairsWithSum", [("nums", "list[int]"), ("k", "int")], "int",
           "Return the number of index pairs (i, j) with i < j and nums[i] + nums[j] == k.",
           "def countPairsWithSum(nums, k):\n    seen, count = {}, 0\n    for x in nums:\n        count += seen.get(k - x, 0)\n"
           "        seen[x] = seen.get(x, 0) + 1\n    return count\n", lo=-10, hi=10, difficulty="medium",
           extra={"k": (-10, 10)}),
    Family("longestIncreasingRun", [("nums", "list[int]")], "int",
           "Return the length of the longest contiguous strictly increasing run in nums (0 for an empty array).",
           "def longestIncreasingRun(nums):\n    best = cur = 0\n    for i, x in enumerate(nums):\n"
           "        cur = cur + 1 if i and x > nums[i - 1] else 1\n        best = max(best, cur)\n    return best\n",
           lo=0, hi=9, difficulty="medium"),
    Family("digitSum", [("n", "int")], "int", "Given a non-negative integer n, return the sum of its decimal digits.",
           "def digitSum(n):\n    return sum(int(d) for d in str(n))\n", extra={"n": (0, 10 ** 9)}),
    Family("countLongWords", [("words", "list[str]"), ("k", "int")], "int",
           "Return how many of the given words have more than k letters.",
           "def countLongWords(words, k):\n    return sum(1 for w in words if len(w) > k)\n", extra={"k": (0, 6)}),
    Family("mostFrequent", [("nums", "list[int]")], "int",
           "Return the value that occurs most often in the non-empty array nums; on a tie return the smallest such value.",
           "def mostFrequent(nums):\n    counts = {}\n    for x in nums:\n        counts[x] = counts.get(x, 0) + 1\n"
           "    return min(counts, key=lambda v: (-counts[v], v))\n", lo=0, hi=9, min_len=1, difficulty="medium"),
    Family("rotateLeft", [("nums", "list[int]"), ("k", "int")], "list[int]",
           "Rotate the array nums to the left by k positions and return it (k may exceed the length).",
           "def rotateLeft(nums, k):\n    if not nums:\n        return []\n    k %= len(nums)\n    return nums[k:] + nums[:k]\n",
           extra={"k": (0, 30)}),
    Family("maxSubarraySum", [("nums", "list[int]")], "int",
           "Return the largest sum of a non-empty contiguous subarray of nums.",
           "def maxSubarraySum(nums):\n    best = cur = nums[0]\n    for x in nums[1:]:\n        cur = max(x, cur + x)\n"
           "        best = max(best, cur)\n    return best\n", min_len=1, difficulty="hard"),
    Family("countDistinct", [("nums", "list[int]")], "int", "Return the number of distinct values in nums.",
           "def countDistinct(nums):\n    return len(set(nums))\n", lo=0, hi=20),
    Family("fizzCount", [("n", "int")], "int", "Return how many integers from 1 to n are divisible by 3 or by 5.",
           "def fizzCount(n):\n    return n // 3 + n // 5 - n // 15\n", extra={"n": (0, 10 ** 9)}),
    Family("gcdOfList", [("nums", "list[int]")], "int",
           "Return the greatest common divisor of all the positive integers in the non-empty array nums.",
           "def gcdOfList(nums):\n    from math import gcd\n    g = 0\n    for x in nums:\n        g = gcd(g, x)\n    return g\n",
           lo=1, hi=60, min_len=1, difficulty="medium"),
    Family("evenIndexSum", [("nums", "list[int]")], "int", "Return the sum of the elements of nums at even indices 0, 2, 4, ...",
           "def evenIndexSum(nums):\n    return sum(nums[::2])\n"),
    Family("longestWord", [("words", "list[str]")], "str",
           "Return the longest word in the non-empty list words; if several are longest, return the first of them.",
           "def longestWord(words):\n    best = words[0]\n    for w in words:\n        if len(w) > len(best):\n"
           "            best = w\n    return best\n", min_len=1),
    Family("isBalanced", [("s", "str")], "bool",
           "A string s consists of the characters '(' and ')'. Return true if its parentheses are balanced.",
           "def isBalanced(s):\n    depth = 0\n    for ch in s:\n        depth += 1 if ch == '(' else -1\n        if depth < 0:\n"
           "            return False\n    return depth == 0\n", alphabet="()", difficulty="medium"),
    Family("countRuns", [("s", "str")], "int", "Return the number of maximal blocks of equal adjacent characters in s.",
           "def countRuns(s):\n    return sum(1 for i, ch in enumerate(s) if i == 0 or ch != s[i - 1])\n", alphabet="ab"),
    Family("countPowersOfTwo", [("nums", "list[int]")], "int",
           "Return how many elements of nums are powers of two (1, 2, 4, 8, ...).",
           "def countPowersOfTwo(nums):\n    return sum(1 for x in nums if x > 0 and x & (x - 1) == 0)\n", lo=0, hi=70),
    Family("minAbsDiff", [("nums", "list[int]")], "int",
           "Given an array nums with at least two elements, return the minimum absolute difference between two of them.",
           "def minAbsDiff(nums):\n    vals = sorted(nums)\n    return min(b - a for a, b in zip(vals, vals[1:]))\n",
           lo=-1000, hi=1000, min_len=2, difficulty="medium"),
    Family("sumBetween", [("a", "int"), ("b", "int")], "int",
           "Return the sum of all integers between a and b inclusive (a may be larger than b).",
           "def sumBetween(a, b):\n    lo, hi = min(a, b), max(a, b)\n    return (lo + hi) * (hi - lo + 1) // 2\n",
           lo=-10 ** 6, hi=10 ** 6),
    Family("countUpper", [("words", "list[str]")], "int", "Return how many of the given words start with an uppercase letter.",
           "def countUpper(words):\n    return sum(1 for w in words if w[0].isupper())\n", alphabet="aAbBcz"),
]


def _gen_value(rng, fam: Family, name: str, typ: str, grade: str, large_n: int):
    lo, hi = fam.extra.get(name, (fam.lo, fam.hi))
    if typ == "int":
        return rng.choice([lo, hi]) if grade == "edge" else rng.randint(lo, hi)
    n = {"basic": rng.randint(max(fam.min_len, 1), 8), "edge": fam.min_len + rng.randint(0, 1), "large": large_n}[grade]
    if typ == "list[int]":
        if grade == "edge":
            v = rng.choice([lo, hi])
            return [v] * n
        return [rng.randint(lo, hi) for _ in range(n)]
    if typ == "str":
        return "".join(rng.choice(fam.alphabet) for _ in range(n))
    return ["".join(rng.choice(fam.alphabet) for _ in range(rng.randint(1, 7))) for _ in range(n)]  # list[str]


def _stdin_encode(args, fam: Family) -> str:
    lines = []
    for (_, typ), v in zip(fam.args, args):
        if typ in ("int", "str"):
            lines.append(str(v))
        else:
            lines += [str(len(v)), " ".join(map(str, v))]
    return "\n".join(lines) + "\n"


def _stdout_encode(v, ret: str) -> str:
    if ret == "bool":
        return ("YES" if v else "NO") + "\n"
    if ret == "list[int]":
        return " ".join(map(str, v)) + "\n"
    return f"{v}\n"


def _stdin_program(fam: Family) -> str:
    reads = []
    for name, typ in fam.args:
        if typ == "int":
            reads.append(f"    {name} = int(lines.pop(0))")
        elif typ == "str":
            reads.append(f"    {name} = lines.pop(0)")
        else:
            conv = "int(t)" if typ == "list[int]" else "t"
            reads.append(f"    n = int(lines.pop(0))\n    {name} = [{conv} for t in lines.pop(0).split()][:n]")
    call = f"{fam.fn}({', '.join(n for n, _ in fam.args)})"
    out = {"bool": f"'YES' if {call} else 'NO'", "list[int]": f"' '.join(map(str, {call}))"}.get(fam.ret, call)
    return (f"import sys\n\n\n{fam.src}\n\ndef main():\n    lines = sys.stdin.read().split('\\n')\n" + "\n".join(reads)
            + f"\n    print({out})\n\n\nmain()\n")


def _call_program(fam: Family) -> str:
    params = ", ".join(n for n, _ in fam.args)
    body = fam.src.replace(f"def {fam.fn}({params}):", f"def {fam.fn}(self, {params}):", 1)
    return "from typing import List\n\n\nclass Solution:\n" + "".join("    " + ln if ln else ln for ln in body.splitlines(True))


def _starter(fam: Family) -> str:
    sig = ", ".join(f"{n}: {_PY[t]}" for n, t in fam.args)
    return f"class Solution:\n    def {fam.fn}(self, {sig}) -> {_PY[fam.ret]}:\n        "


def _reference(fam: Family):
    scope: dict = {}
    exec(fam.src, scope)  # our own, trusted reference source
    return scope[fam.fn]


def make_problems(fam: Family, rng: random.Random, split: str, index: int, large_n: int = 1000) -> list[dict]:
    """The two LiveCodeBench-format records (functional, stdin) of one family."""
    ref = _reference(fam)
    cases = []
    for grade, count in (("basic", 5), ("edge", 3), ("large", 2)):
        for _ in range(count):
            args = [_gen_value(rng, fam, n, t, grade, large_n) for n, t in fam.args]
            cases.append((grade, args, ref(*[list(a) if isinstance(a, list) else a for a in args])))
    records = []
    for testtype in ("functional", "stdin"):
        tests = []
        for grade, args, out in cases:
            if testtype == "functional":
                inp = "\n".join(json.dumps(a) for a in args)
                res = json.dumps(out)
            else:
                inp, res = _stdin_encode(args, fam), _stdout_encode(out, fam.ret)
            tests.append({"input": inp, "output": res, "testtype": testtype, "difficulty": grade})
        lcb = [{k: t[k] for k in ("input", "output", "testtype")} for t in tests]  # LCB's own test-case fields
        public, private = lcb[:2], lcb[2:]
        ex = public[0]
        if testtype == "functional":
            shown = ", ".join(f"{n} = {json.dumps(a)}" for (n, _), a in zip(fam.args, cases[0][1]))
            content = (f"{fam.desc}\n\nExample 1:\n\nInput: {shown}\nOutput: {ex['output']}\n\n"
                       f"Constraints:\n\nInputs have at most {large_n} elements.")
            starter, solution = _starter(fam), _call_program(fam)
            prompt = LCB_PREAMBLE + content + LCB_FORMAT_CALL.format(starter=starter)
        else:
            fmt = "\n".join(f"- {n}: " + ("an integer on one line" if t == "int" else "a string on one line" if t == "str"
                                          else "its length on one line, then its items separated by spaces")
                            for n, t in fam.args)
            outfmt = {"bool": "Print YES or NO.", "list[int]": "Print the items separated by spaces."}.get(fam.ret,
                                                                                                        "Print the answer.")
            content = (f"{fam.desc}\n\nInput\n\nThe input gives, in order:\n{fmt}\n\nOutput\n\n{outfmt}"
                       f"\n\nSample Input 1:\n\n{ex['input']}\n\nSample Output 1:\n\n{ex['output']}\n")
            starter, solution = "", _stdin_program(fam)
            prompt = LCB_PREAMBLE + content + LCB_FORMAT_STDIN
        qid = f"world-{split}-{index:03d}-{'call' if testtype == 'functional' else 'io'}"
        records.append({
            # LiveCodeBench (HF dataset) fields
            "question_title": fam.fn, "question_content": content, "platform": "openmimo-world",
            "question_id": qid, "contest_id": f"world-{split}", "contest_date": "2025-01-01T00:00:00",
            "starter_code": starter, "difficulty": fam.difficulty,
            "public_test_cases": json.dumps(public), "private_test_cases": json.dumps(private),
            "metadata": json.dumps({"func_name": fam.fn if testtype == "functional" else None,
                                    "difficulty": fam.difficulty}),
            # fields of ../shared/benchmarks/code/lcb_v1_samples_decoded.jsonl
            "task_id": f"openmimo-world/{qid}", "testtype": testtype,
            "fn_name": fam.fn if testtype == "functional" else None, "prompt": prompt,
            "inputs": [t["input"] for t in tests], "outputs": [t["output"] for t in tests],
            # openmimo extras
            "tests": tests, "solution": solution, "family": fam.fn, "split": split,
        })
    return records


def code_text(rec: dict) -> str:
    """Pre-training text of a code record: statement, then the reference program."""
    return f"{rec['question_content']}\n\nSolution:\n{CODE_OPEN}{rec['solution']}```\n"


code_prompt = code_base_prompt  # the base-model prompt of every code task (openmimo/eval/prompts.py)


def code_reasoning(rec: dict, rng: random.Random) -> tuple[str, str]:
    """A synthetic ``(reasoning, answer)`` for a code record: understand, plan, edge cases, trace an example."""
    t0 = rec["tests"][0]
    edge = next(t for t in rec["tests"] if t["difficulty"] == "edge")
    io = "read the arguments from standard input and print the result" if rec["testtype"] == "stdin" else \
        f"implement the method {rec['fn_name']} of class Solution"
    lines = [
        rng.choice(["Let me understand the task first.", "I will restate the problem before coding."]),
        rec["question_content"].split("\n\n")[0],
        f"I need to {io}.",
        "Plan: compute the answer in a single pass where possible, so that large inputs stay fast.",
        f"Edge cases: an input like {edge['input'].strip()!r} must give {edge['output'].strip()!r}.",
        f"Trace the first example: input {t0['input'].strip()!r} should give {t0['output'].strip()!r}.",
        "The reference logic handles these, so I can write the final program.",
    ]
    return "\n".join(lines), f"```python\n{rec['solution']}```"
