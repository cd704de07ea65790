"""The embedded tiny reasoning world: a seeded, offline corpus for running the whole recipe on a CPU.

``make_world(out_dir, seed=0, scale=1.0)`` (CLI: ``openmimo make-world OUT_DIR [--seed N] [--scale X]``)
writes, byte-identically for the same seed and scale::

    OUT_DIR/
      text/web.{train,val}.jsonl         prose articles                       {"id", "text"}
      text/math.{train,val}.jsonl        "Problem: ...\\nSolution: ..."         {"id", "text", "level"}
      text/arithmetic.{train,val}.jsonl  the level-1 records of text/math        {"id", "text", "level"}
      text/code.{train,val}.jsonl        statement + reference program         {"id", "text"}
      text/reasoning.{train,val}.jsonl   chat-format text with <think> blocks   {"id", "text", "messages", "kind"}
      math/{train,val,test}.jsonl        {"problem", "solution", "answer", "level", "subject", "unique_id"}
                                         (the MATH-500 fields; answer is a string, solution ends in \\boxed{})
      code/{train,val,test}.jsonl        LiveCodeBench records (see world_code.py) + "tests" with a difficulty each
      html/pages.jsonl                   {"url", "html", "kind", "main_text", "duplicate_of", ...} (see world_web.py)
      manifest.json                      seed, scale, counts per file, bytes, decontamination drops

At scale 1.0 that is about 6 MB (1.3M tokens with a 2k BPE) of training text, most of it short arithmetic (levels 1-2) in one
regular format, which a ~1-5M-parameter model learns in minutes.  The ``text/`` files are the
pre-training sources (``tokenize_to_shards`` reads their ``text`` field); math/ and code/ serve
SFT, RL and evaluation; html/ is input for the data pipeline.

Splits are disjoint at the problem level: math problems are drawn without repeating a problem
(same numbers and operation = same problem), code splits are whole task families.  On top of
that, no training text (any file under text/ with ``.train``, math/train, code/train, the pages)
contains a 16-gram (lower-cased whitespace tokens) of a validation or test problem — see
:func:`eval_ngram_text` for what counts as a problem's text; colliding training items are dropped
and regenerated, and the manifest counts them.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Iterable

from openmimo.config import UsageError
from openmimo.data import world_code, world_math, world_web
from openmimo.data.decontam import Decontaminator
from openmimo.eval.prompts import math_chat_message
from openmimo.tokenizer import format_chat

NGRAM = 16
# problems per level at scale 1.0 (train is scaled; val/test are scaled with a floor)
MATH_TRAIN = {1: 7000, 2: 5000, 3: 1500, 4: 1000}
# level 1 has about 15.8k distinct problems (10k sums, 5k differences, 784 products); the share of them seen in
# training decides how soon a tiny model generalises to the held-out ones (docs/tiny_tuning.md)
LEVEL1_SPACE = 100 * 100 + 100 * 101 // 2 + 98 * 8
MATH_VAL, MATH_TEST = 50, 125
CODE_TEST_FAMILIES, CODE_VAL_FAMILIES = 5, 3
WEB_TRAIN, WEB_VAL = 1500, 100
REASONING_MATH = 1500
PAGES = 400


def eval_ngram_text(rec: dict) -> str:
    """A problem's own text, whose 16-grams must not appear in training: math problem + solution;
    for code, the task description (first paragraph of the statement) + the reference function (the
    shared Input/Output boilerplate and the stdin wrapper are not the problem's own text)."""
    if "problem" in rec:
        return rec["problem"] + "\n" + rec["solution"]
    fam = next(f for f in world_code.FAMILIES if f.fn == rec["family"])
    return rec["question_content"].split("\n\n")[0] + "\n" + fam.src


def heldout_decontaminator(eval_records: Iterable[dict]) -> Decontaminator:
    """The world's rule: no 16-gram of lower-cased whitespace tokens shared with a held-out problem's text."""
    return Decontaminator({"heldout": [eval_ngram_text(r) for r in eval_records]}, ngram=NGRAM, mode="whitespace",
                          min_exact_words=None)


def _n(base: int, scale: float, floor: int = 1) -> int:
    return max(floor, round(base * scale))


def _math_record(level: int, item, split: str, i: int) -> dict:
    _key, problem, solution, answer = item
    return {"problem": problem, "solution": solution, "answer": str(answer), "level": level,
            "subject": world_math.SUBJECTS[level], "unique_id": f"world/{split}/math/{level}/{i:05d}"}


def _reasoning_record(rec: dict, kind: str, rng: random.Random, idx: str) -> dict:
    if kind == "math":
        reasoning, answer = world_math.math_reasoning(rec, rng)
        user = math_chat_message(rec["problem"])  # the chat prompt of every math task
    else:
        reasoning, answer = world_code.code_reasoning(rec, rng)
        user = rec["prompt"]
    messages = [{"role": "user", "content": user},
                {"role": "assistant", "reasoning_content": reasoning, "content": answer}]
    return {"id": idx, "kind": kind, "messages": messages, "text": format_chat(messages)}


def generate(seed: int = 0, scale: float = 1.0, arithmetic: int | None = None) -> dict:
    """The whole world in memory: ``{"files": {relative path: [records]}, "dropped": {...}}``.

    ``arithmetic``: level-1 training problems (default ``MATH_TRAIN[1]`` x scale), at most what the level's
    problem space leaves after the val/test draws."""
    if not scale > 0:
        raise UsageError(f"--scale must be positive, got {scale}")
    train_counts = {lv: _n(base, scale, 20) for lv, base in MATH_TRAIN.items()}
    if arithmetic is not None:
        cap = LEVEL1_SPACE - _n(MATH_TEST, scale, 10) - _n(MATH_VAL, scale, 5)
        if not 20 <= arithmetic <= cap:
            raise UsageError(f"--arithmetic must be between 20 and {cap} (level 1's distinct problems less val/test), "
                             f"got {arithmetic}")
        train_counts[1] = arithmetic
    files: dict[str, list[dict]] = {}
    rng = lambda name: random.Random(f"openmimo-world:{seed}:{name}")  # noqa: E731  (str seeds are stable)

    # -- evaluation problems first: the training data is then filtered against them ------------
    math_split = {s: [] for s in ("train", "val", "test")}
    draws = {}
    for level, gen in world_math.LEVELS.items():
        r, seen = rng(f"math{level}"), set()
        need = {"test": _n(MATH_TEST, scale, 10), "val": _n(MATH_VAL, scale, 5)}
        for split, count in need.items():
            while count:
                item = gen(r)
                if item[0] not in seen:
                    seen.add(item[0])
                    math_split[split].append(_math_record(level, item, split, len(math_split[split])))
                    count -= 1
        draws[level] = (r, seen)
    fams = list(world_code.FAMILIES)
    rng("families").shuffle(fams)
    code_fams = {"test": fams[:CODE_TEST_FAMILIES], "val": fams[CODE_TEST_FAMILIES:CODE_TEST_FAMILIES + CODE_VAL_FAMILIES],
                 "train": fams[CODE_TEST_FAMILIES + CODE_VAL_FAMILIES:]}
    large_n = _n(1000, min(scale, 1.0), 50)
    code_split = {s: [] for s in code_fams}
    for split, fs in code_fams.items():
        r = rng(f"code-{split}")
        for i, fam in enumerate(fs):
            code_split[split] += world_code.make_problems(fam, r, split, i, large_n)
    dec = heldout_decontaminator(math_split["val"] + math_split["test"] + code_split["val"] + code_split["test"])

    # -- training math: unique problems, not seen in val/test, decontaminated ------------------
    for level, count in train_counts.items():
        r, seen = draws[level]
        attempts = 0
        while count and attempts < 50 * MATH_TRAIN[level] + 200 * count:
            attempts += 1
            item = gen_item = world_math.LEVELS[level](r)
            if gen_item[0] in seen:
                continue
            seen.add(item[0])
            rec = _math_record(level, item, "train", len(math_split["train"]))
            if dec.clean(world_math.math_text(rec), "math"):
                math_split["train"].append(rec)
                count -= 1
    code_split["train"] = [c for c in code_split["train"] if dec.clean(world_code.code_text(c), "code")]
    files.update({f"math/{s}.jsonl": v for s, v in math_split.items()})
    files.update({f"code/{s}.jsonl": v for s, v in code_split.items()})

    # -- text corpora -------------------------------------------------------------------------
    for split in ("train", "val"):
        mrecs, crecs = math_split[split], code_split[split]
        files[f"text/math.{split}.jsonl"] = [{"id": r["unique_id"], "text": world_math.math_text(r), "level": r["level"]}
                                             for r in mrecs]
        # the level-1 subset as a source of its own, so a mixture can weight easy arithmetic (a curriculum)
        files[f"text/arithmetic.{split}.jsonl"] = [x for x in files[f"text/math.{split}.jsonl"] if x["level"] == 1]
        files[f"text/code.{split}.jsonl"] = [{"id": c["question_id"], "text": world_code.code_text(c)} for c in crecs]
        r = rng(f"web-{split}")
        web = []
        while len(web) < _n(WEB_TRAIN if split == "train" else WEB_VAL, scale, 5):
            title, text = world_web.prose(r)
            doc = f"{title}\n\n{text}"
            if split == "val" or dec.clean(doc, "web"):
                web.append({"id": f"world/{split}/web/{len(web):05d}", "text": doc})
        files[f"text/web.{split}.jsonl"] = web
        r = rng(f"reasoning-{split}")
        pool = [m for m in mrecs if m["level"] >= 2] or mrecs
        picks = r.sample(pool, min(len(pool), _n(REASONING_MATH, scale, 5))) if split == "train" else mrecs
        reasoning = [_reasoning_record(m, "math", r, f"world/{split}/reasoning/math/{i:05d}") for i, m in enumerate(picks)]
        reasoning += [_reasoning_record(c, "code", r, f"world/{split}/reasoning/code/{i:05d}") for i, c in enumerate(crecs)]
        if split == "train":
            reasoning = [x for x in reasoning if dec.clean(x["text"], "reasoning")]
        files[f"text/reasoning.{split}.jsonl"] = reasoning

    files["html/pages.jsonl"] = _pages(rng("pages"), math_split["train"], code_split["train"], _n(PAGES, scale, 20), dec)
    return {"files": files, "dropped": dict(sorted(dec.dropped.items()))}


def _pages(r: random.Random, maths: list[dict], codes: list[dict], n: int, dec: Decontaminator) -> list[dict]:
    pages: list[dict] = []
    markups = ["mathjax", "katex", "mathml"]
    while len(pages) < n:
        site = r.choice(world_web.SITES)
        url = f"https://{site}/{r.choice(['post', 'q', 'article', 'p'])}/{len(pages):05d}-{r.randint(100, 999)}"
        roll = r.random()
        if pages and roll < 0.08:  # exact duplicate of an earlier page, at another URL
            src = r.choice([p for p in pages if p["duplicate_of"] is None])
            pages.append({**src, "url": url, "duplicate_of": src["url"], "near_duplicate_of": None})
            continue
        if pages and roll < 0.16:
            src = r.choice([p for p in pages if p["kind"] != "spam" and p["duplicate_of"] is None])
            pages.append({**src, "url": url, "html": world_web.near_duplicate(src["html"], r, site),
                          "duplicate_of": None, "near_duplicate_of": src["url"]})
            continue
        markup = None
        has_code = False
        if roll < 0.26:
            kind, (title, body, text) = "spam", world_web.spam_page(r)
        elif roll < 0.40:
            kind, markup = "forum", r.choice(markups)
            title, body, text = world_web.forum_page(r.choice(maths), r, markup)
        elif roll < 0.65:
            kind, markup = "article", r.choice(markups)
            title, body, text = world_web.math_page(r.choice(maths), r, markup)
        elif roll < 0.80 and codes:
            kind, has_code = "article", True
            title, body, text = world_web.code_page(r.choice(codes), r)
        else:
            kind, (title, body, text) = "article", world_web.prose_page(r)
        if kind != "spam" and not dec.clean(text, "pages"):
            continue
        doc = world_web.render_page(title, body, r, site, markup == "mathjax", markup == "katex")
        pages.append({"url": url, "html": doc, "kind": kind, "main_text": text, "title": title,
                      "has_math": markup is not None, "math_markup": markup, "has_code": has_code,
                      "duplicate_of": None, "near_duplicate_of": None})
    return pages


def _write_jsonl(path: Path, records: list[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path.stat().st_size


def make_world(out_dir: str | os.PathLike, seed: int = 0, scale: float = 1.0, arithmetic: int | None = None) -> dict:
    """Write the world to ``out_dir`` (layout in the module docstring); returns the manifest dict."""
    out = Path(out_dir)
    world = generate(seed, scale, arithmetic)
    counts, sizes = {}, {}
    for rel, records in sorted(world["files"].items()):
        sizes[rel] = _write_jsonl(out / rel, records)
        counts[rel] = len(records)
    manifest = {
        "seed": seed, "scale": scale, "arithmetic": arithmetic, "ngram": NGRAM, "counts": counts, "bytes": sizes,
        "train_text_bytes": sum(v for k, v in sizes.items() if k.startswith("text/") and ".train." in k),
        "decontamination_dropped": world["dropped"],
        "code_families": {s: sorted({c["family"] for c in world["files"][f"code/{s}.jsonl"]}) for s in ("train", "val", "test")},
    }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / "manifest.json")
    return manifest


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", help="folder to write the world into (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives byte-identical files")
    parser.add_argument("--scale", type=float, default=1.0, help="size multiplier (1.0 is about 6 MB of training text)")
    parser.add_argument("--arithmetic", type=int, default=None,
                        help=f"level-1 training problems (default {MATH_TRAIN[1]} x scale)")


def run(args) -> int:
    m = make_world(args.out_dir, seed=args.seed, scale=args.scale, arithmetic=args.arithmetic)
    print(f"wrote {sum(m['counts'].values())} records ({m['train_text_bytes'] / 1e6:.1f} MB training text) to {args.out_dir}")
    for rel, c in m["counts"].items():
        print(f"  {rel:32s} {c:6d} records {m['bytes'][rel] / 1e6:7.2f} MB")
    if m["decontamination_dropped"]:
        print(f"  dropped for 16-gram overlap with val/test: {m['decontamination_dropped']}")
    return 0
