"""`openmimo curate`: RL data curation as MiMo-7B did it -- rule-based cleaning, then difficulty by rollouts.

    openmimo curate --input problems.jsonl --output curated.jsonl [--task auto|NAME]
        [--model PATH | --endpoint URL] [--samples 16] [--keep-unsolved] [--levels 3] [--no-rollouts]

(a) Cleaning, per record (reasons counted): math -- the gold answer Math-Verify cannot parse
    (``gold_unparsable``), proofs (``proof``), multiple choice (``multiple_choice``), multi-part
    questions (``multi_part``); code -- tests the judge cannot use (``bad_tests``), a reference solution
    (where given) that fails its own tests (``reference_fails``).
(b) Difficulty: ``--samples`` rollouts per problem from the model or endpoint through the eval
    harness (the same prompts and scorers); each record gets ``pass_rate``.  Pass rate in (0, 1) is
    training data (``--output``); pass rate 1 goes to the easy pool (``<output stem>.easy.jsonl``);
    pass rate 0 is dropped (``unsolved``) or kept with ``--keep-unsolved``.
(c) Code problems: each test's pass rate over the same rollouts (a samples x tests pass matrix),
    clustered into ``--levels`` difficulty levels (``openmimo calibrate-tests``' logic), written as
    ``test_levels`` and ``test_pass_rates`` (what the strict and soft code rewards read).

Counts of kept / dropped per reason are printed and written to ``<output stem>.counts.json``.  The
rollouts themselves are in ``<output stem>.samples.jsonl`` (a killed run resumes from them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from openmimo.config import UsageError
from openmimo.eval.tasks import get_task
from openmimo.eval.tasks.base import read_records

_PROOF = re.compile(r"\b(prove|proof|show that|demonstrate that|justify your answer)\b", re.I)
_CHOICE_LINES = re.compile(r"(?:^|\n|\s)\(?([A-E])[).:]\s", re.M)
_PART = re.compile(r"(?:^|\s)\((?:a|b|i|ii)\)\s|\bpart\s*\((?:a|b|i|ii)\)|(?:^|\n)\s*(?:a|b)\)\s", re.I)


def add_arguments(parser) -> None:
    from openmimo.eval.run import add_source_arguments, add_style_arguments

    parser.add_argument("--input", required=True, help="problem records (JSONL, .jsonl.gz, JSON list or Parquet)")
    parser.add_argument("--output", required=True, help="curated training records (JSONL)")
    parser.add_argument("--task", default="auto",
                        help="record format: a task name, or auto (world_code when a record has tests, else world_math)")
    add_source_arguments(parser, required=False)
    parser.add_argument("--samples", type=int, default=16, help="rollouts per problem")
    parser.add_argument("--temperature", type=float, default=1.0, help="rollout temperature (RL's)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=1024)
    add_style_arguments(parser)
    parser.add_argument("--keep-unsolved", action="store_true", help="keep pass-rate-0 problems in --output")
    parser.add_argument("--levels", type=int, default=3, help="test difficulty levels for code problems")
    parser.add_argument("--no-rollouts", action="store_true", help="only the rule-based cleaning")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="start the rollouts over")
    parser.add_argument("--no-progress", action="store_true")


def task_of(name: str, rec: dict):
    if name != "auto":
        return get_task(name)
    return get_task("world_code" if "tests" in rec else "world_math")


def clean_reason(task, rec: dict, judge=None) -> str | None:
    """Why a record is dropped by the rules, or None to keep it."""
    if task.kind == "math":
        from openmimo.rewards.math import gold_parses

        text = task.question(rec)
        try:
            gold = task.gold(rec)
        except (KeyError, TypeError, ValueError):
            return "gold_unparsable"
        if isinstance(gold, str) and re.fullmatch(r"\(?[A-E]\)?", gold.strip()):
            return "multiple_choice"
        if len(set(_CHOICE_LINES.findall(text))) >= 3:
            return "multiple_choice"
        if _PROOF.search(text):
            return "proof"
        if _PART.search(text):
            return "multi_part"
        return None if gold_parses(gold) else "gold_unparsable"
    from openmimo.rewards.adapters import tests_from_record

    try:
        tests = tests_from_record(task.tests(rec))
    except (KeyError, TypeError, ValueError, SyntaxError):
        return "bad_tests"
    if not tests:
        return "bad_tests"
    ref = task.reference(rec)
    if ref is not None and task.submit_score(rec, ref, "chat", judge=judge).result().score < 1.0:
        return "reference_fails"
    return None


def calibrate(task, rec: dict, responses: list[str], style: str, levels: int, judge=None) -> dict:
    """``test_pass_rates`` and ``test_levels`` of a code record from its rollouts' pass matrix."""
    from openmimo.rewards.adapters import CALL_PRELUDE, tests_from_record
    from openmimo.rewards.code import cluster_levels, pass_rates
    from openmimo.rewards.sandbox import default_judge

    tests = tests_from_record(task.tests(rec))
    j = judge or default_judge()
    futs = []
    for text in responses:
        code = task.program(rec, text, style)
        if code is not None and any(t.get("fn") for t in tests):
            code = CALL_PRELUDE + code
        futs.append(None if code is None else j.submit(code, tests))
    rows = [[0] * len(tests) if f is None else [int(v.passed) for v in f.result()] for f in futs]
    rates = pass_rates(rows)
    return {"test_pass_rates": [round(float(x), 6) for x in rates], "test_levels": cluster_levels(rates, levels)}


def _write(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)


def run(args) -> int:
    from openmimo.eval.run import build_backend, evaluate, paths_for, read_samples

    if not args.no_rollouts and not (args.model or args.endpoint):
        raise UsageError("rollouts need --model or --endpoint (or pass --no-rollouts for the cleaning alone)")
    if args.samples < 1 or args.levels < 1:
        raise UsageError("--samples and --levels must be >= 1")
    out = Path(args.output)
    _, samples_path, _ = paths_for(out)
    easy_path, counts_path = out.with_name(out.stem + ".easy.jsonl"), out.with_name(out.stem + ".counts.json")
    counts: dict[str, int] = {"read": 0}
    kept: dict[str, list[tuple[int, dict]]] = {}  # task name -> (index in input, record)
    for i, (where, rec) in enumerate(read_records(args.input)):
        counts["read"] += 1
        task = task_of(args.task, rec)
        task.check(rec, where)
        reason = clean_reason(task, rec)
        if reason:
            counts[f"dropped_{reason}"] = counts.get(f"dropped_{reason}", 0) + 1
            continue
        kept.setdefault(task.name, []).append((i, rec))
    counts["clean"] = sum(len(v) for v in kept.values())
    curated, easy = [], []
    if args.no_rollouts:
        curated = [r for _, r in sorted(x for v in kept.values() for x in v)]
    else:
        if args.overwrite:
            samples_path.unlink(missing_ok=True)
        backend, prompt_text = build_backend(args)
        tasks = {name: [r for _, r in recs] for name, recs in kept.items()}
        eargs = SimpleNamespace(samples=args.samples, style=args.style, seed=args.seed, no_progress=args.no_progress)
        evaluate(backend, tasks, eargs, samples_path, prompt_text)
        by_key: dict[tuple, list[dict]] = {}
        for ln in read_samples(samples_path):
            by_key.setdefault((ln["task"], ln["id"]), []).append(ln)
        rows = []
        for name, recs in kept.items():
            task = get_task(name)
            for j, (i, rec) in enumerate(recs):
                got = sorted(by_key.get((name, task.record_id(rec, j)), []), key=lambda s: s["sample"])[:args.samples]
                rate = sum(float(s["score"]) >= 1.0 for s in got) / max(1, len(got))
                rec = {**rec, "pass_rate": rate, "rollouts": len(got)}
                if task.kind == "code" and 0 < rate < 1:
                    rec.update(calibrate(task, rec, [s["response"] for s in got], args.style, args.levels))
                rows.append((i, rate, rec))
        for _, rate, rec in sorted(rows, key=lambda x: x[0]):
            if rate >= 1.0:
                easy.append(rec)
            elif rate > 0.0 or args.keep_unsolved:
                curated.append(rec)
            if rate <= 0.0:
                counts["unsolved_kept" if args.keep_unsolved else "dropped_unsolved"] = \
                    counts.get("unsolved_kept" if args.keep_unsolved else "dropped_unsolved", 0) + 1
        counts["easy_pool"] = len(easy)
    counts["kept"] = len(curated)
    _write(out, curated)
    if not args.no_rollouts:
        _write(easy_path, easy)
    counts_path.write_text(json.dumps(counts, indent=2) + "\n", encoding="utf-8")
    print("curate: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; wrote {out}"
          + ("" if args.no_rollouts else f" and {easy_path}"))
    return 0
