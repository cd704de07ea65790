"""Math problems of the tiny world: four difficulty levels, each with a worked solution ending in \\boxed{}.

- level 1: one operation            "What is 17 + 25?"
- level 2: several operations       "What is 12 + 7 * 3?"  /  "What is (12 + 7) * 3?"  /  "What is 40 - 13 + 8?"
- level 3: linear equations         "Solve for x: 3x + 4 = 19."
- level 4: word problems            "Mia has 12 apples. She buys 3 bags with 4 apples each. ..."

Every generator returns ``(key, problem, solution, answer)``; ``key`` identifies the problem (two
records with the same key are the same problem), which is what the splits are made disjoint on.
Solutions are short and regular (one step per line, always ending ``The answer is \\boxed{N}.``)
so that a tiny model can learn the format.  :func:`math_text` is the pre-training text of a record
and :func:`math_prompt` the matching prompt for evaluating a base model.
"""

from __future__ import annotations

import random
import re

from openmimo.eval.prompts import math_base_prompt

NAMES = ["Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Ines", "Kai", "Sara", "Tom", "Yuki", "Ben", "Nora",
         "Ali", "Emma", "Finn", "Gia", "Hugo"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "coins", "shells", "cards", "stamps", "eggs",
         "balloons"]
CONTAINERS = ["bags", "boxes", "packs", "jars", "baskets", "crates"]
SUBJECTS = {1: "Arithmetic", 2: "Multi-step Arithmetic", 3: "Linear Equations", 4: "Word Problems"}


def _end(answer: int) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def level1(rng: random.Random):
    op = rng.choice("+-*+-")
    if op == "+":
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        r = a + b
    elif op == "-":
        a = rng.randint(0, 99)
        b = rng.randint(0, a)
        r = a - b
    else:
        a, b = rng.randint(2, 99), rng.randint(2, 9)
        r = a * b
    expr = f"{a} {op} {b}"
    steps = column_steps(a, op, b) + [f"{expr} = {r}."]
    return ("L1", a, op, b), f"What is {expr}?", "\n".join(steps + [_end(r)]), r


def column_steps(a: int, op: str, b: int) -> list[str]:
    """Column arithmetic for ``a op b`` (two-digit ``a``; ``b`` two-digit for + and -, one digit for *): the ones
    column, then the tens column with its carry or borrow (for *: the tens digit's product, then the carry added).
    Every step is a one-digit fact or one addition, so a small model learns the operation from its parts instead
    of memorising whole results."""
    (a1, a0), (b1, b0) = divmod(a, 10), divmod(b, 10)
    if op == "+":
        s = a0 + b0
        return [f"Ones: {a0} + {b0} = {s}, write {s % 10} carry {s // 10}.",
                f"Tens: {a1} + {b1} + {s // 10} = {a1 + b1 + s // 10}."]
    if op == "-":
        borrow = int(a0 < b0)
        return [f"Ones: {a0 + 10 * borrow} - {b0} = {a0 + 10 * borrow - b0}, borrow {borrow}.",
                f"Tens: {a1} - {b1} - {borrow} = {a1 - b1 - borrow}."]
    p = a0 * b
    return [f"Ones: {a0} * {b} = {p}, write {p % 10} carry {p // 10}.",
            f"Tens: {a1} * {b} = {a1 * b}, {a1 * b} + {p // 10} = {a1 * b + p // 10}."]


def level2(rng: random.Random):
    form = rng.randrange(3)
    if form == 0:  # a + b * c  (precedence)
        a, b, c = rng.randint(1, 50), rng.randint(2, 9), rng.randint(2, 9)
        op = rng.choice("+-")
        if op == "-":
            a = rng.randint(b * c, b * c + 50)
        p = b * c
        r = a + p if op == "+" else a - p
        expr = f"{a} {op} {b} * {c}"
        steps = [f"First, {b} * {c} = {p}.", f"Then, {a} {op} {p} = {r}."]
    elif form == 1:  # (a + b) * c
        a, b, c = rng.randint(1, 20), rng.randint(1, 20), rng.randint(2, 9)
        s = a + b
        r = s * c
        expr = f"({a} + {b}) * {c}"
        steps = [f"First, {a} + {b} = {s}.", f"Then, {s} * {c} = {r}."]
    else:  # a - b + c  (left to right)
        a = rng.randint(10, 99)
        b, c = rng.randint(0, a), rng.randint(0, 60)
        s = a - b
        r = s + c
        expr = f"{a} - {b} + {c}"
        steps = [f"First, {a} - {b} = {s}.", f"Then, {s} + {c} = {r}."]
    return ("L2", expr), f"What is {expr}?", "\n".join(steps + [_end(r)]), r


def level3(rng: random.Random):
    a, x = rng.randint(2, 12), rng.randint(-10, 20)
    b = rng.randint(1, 40) * rng.choice([1, -1])
    c = a * x + b
    lhs = f"{a}x + {b}" if b > 0 else f"{a}x - {-b}"
    move = f"Subtract {b} from both sides" if b > 0 else f"Add {-b} to both sides"
    steps = [f"{move}: {a}x = {c - b}.", f"Divide both sides by {a}: x = {x}."]
    return ("L3", a, b, c), f"Solve for x: {lhs} = {c}.", "\n".join(steps + [_end(x)]), x


def level4(rng: random.Random):
    name, friend = rng.sample(NAMES, 2)
    item, box = rng.choice(ITEMS), rng.choice(CONTAINERS)
    start, n, k = rng.randint(2, 30), rng.randint(2, 6), rng.randint(2, 9)
    got = n * k
    give = rng.randint(1, start + got - 1)
    r = start + got - give
    problem = (f"{name} has {start} {item}. {name} buys {n} {box} with {k} {item} in each. "
               f"Then {name} gives {give} {item} to {friend}. How many {item} does {name} have now?")
    steps = [f"{name} starts with {start} {item}.",
             f"The {box} hold {n} * {k} = {got} {item}.",
             f"After buying, {name} has {start} + {got} = {start + got} {item}.",
             f"After giving {give} away, {name} has {start + got} - {give} = {r} {item}."]
    return ("L4", name, friend, item, box, start, n, k, give), problem, "\n".join(steps + [_end(r)]), r


LEVELS = {1: level1, 2: level2, 3: level3, 4: level4}


def math_text(rec: dict) -> str:
    """Pre-training text of a math record (the format :func:`math_prompt` asks for)."""
    return f"Problem: {rec['problem']}\nSolution: {rec['solution']}"


math_prompt = math_base_prompt  # the base-model prompt of every math task (openmimo/eval/prompts.py)


def _check_equation(problem: str, x: int) -> str:
    m = re.match(r"Solve for x: (\d+)x ([+-]) (\d+) = (-?\d+)\.", problem)
    a, sign, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
    lhs = a * x + (b if sign == "+" else -b)
    return f"Check: {a} * {x} {sign} {b} = {lhs}, and the right side is {c}, so x = {x} works."


def math_steps_reasoning(rec: dict) -> tuple[str, str]:
    """A short ``(reasoning, answer)`` for a math record: the worked steps as the reasoning, the boxed result as the
    answer -- the solution the pre-training text already teaches, in the chat format (what a model the size of the
    tiny one can learn the format from without having to copy the problem into its trace)."""
    lines = rec["solution"].split("\n")
    return "\n".join(lines[:-1]), lines[-1]


def math_reasoning(rec: dict, rng: random.Random) -> tuple[str, str]:
    """A long synthetic ``(reasoning, answer)`` for a math record: restate, solve step by step, verify."""
    steps = rec["solution"].split("\n")[:-1]
    opener = rng.choice(["Let me work through this carefully.", "I need to solve this step by step.",
                         "Let me read the problem again and plan."])
    lines = [opener, f"The problem: {rec['problem']}"]
    for i, s in enumerate(steps, 1):
        lines.append(f"Step {i}: {s}")
    ans = rec["answer"]
    if rec["level"] == 3:
        check = _check_equation(rec["problem"], int(ans))
    else:
        check = {1: "Let me double-check the arithmetic once more.", 2: "Let me redo the operations in order to be sure.",
                 4: "Let me re-check each quantity in the story."}[rec["level"]]
    lines += [check, f"Everything is consistent, so the result is {ans}."]
    answer = f"{rec['solution']}"
    return "\n".join(lines), answer
