"""The data card of `openmimo data` (``data_card.json`` + ``data_card.md``) and the stage mixture (``mixture.yaml``).

The card gathers the stages' counts: per source the records read and refused (and why), documents and
characters prepared, removed as URL / exact / near duplicates, contaminated, below every bin's quality
bar, kept, and their tokens; duplicate-cluster sizes; contamination hits per evaluation task; tag
distributions; per bin its documents and tokens; per stage the requested and the effective weights.

Epoch caps: a stage weight that would repeat a bin's tokens more than ``bins[].epochs`` times over the
whole schedule is lowered to the cap and the other bins of the stage take up the rest in proportion
(:func:`cap_weights`); a stage that cannot be filled within the caps keeps its weights and is flagged.
The card holds no paths or timings, so runs with other task or worker counts give the same card.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import yaml

from openmimo.data.pipeline_config import DataPipelineConfig
from openmimo.data.pipeline_readers import write_json_atomic


def cap_weights(weights: dict[str, float], tokens: int, budget: dict[str, float]) -> tuple[dict[str, float], bool]:
    """Weights summing to 1 with ``w[b] * tokens <= budget[b]`` where possible; ``(weights, ok)``."""
    fixed: dict[str, float] = {}
    while True:
        free = {b: w for b, w in weights.items() if b not in fixed and w > 0}
        rest = 1.0 - sum(fixed.values())
        total = sum(free.values())
        if total <= 0:
            return dict(weights), False
        scaled = {b: rest * w / total for b, w in free.items()}
        over = [b for b, w in scaled.items() if w * tokens > budget.get(b, 0.0) + 1e-9]
        if not over:
            out = {b: 0.0 for b in weights} | fixed | scaled
            return {b: round(w, 8) for b, w in out.items()}, True
        for b in over:
            fixed[b] = max(0.0, budget.get(b, 0.0)) / tokens


def _merge(files) -> Counter:
    c: Counter = Counter()
    for f in files:
        c.update(json.loads(Path(f).read_text()))
    return c


def build_card(cfg: DataPipelineConfig, work: Path) -> dict:
    names = [s.name for s in cfg.sources]
    read = {n: dict(_merge(sorted((work / "stats" / "read").glob(f"{n}.*.json")))) for n in names}
    prep = _merge(sorted((work / "stats" / "prepare").glob("*.json")))
    dedup = json.loads((work / "stats" / "dedup.json").read_text())
    fin: Counter = Counter()
    contamination: Counter = Counter()
    tags: Counter = Counter()
    eval_tasks: dict = {}
    for f in sorted((work / "stats" / "finish").glob("*.json")):
        s = json.loads(f.read_text())
        fin.update(s["counts"])
        contamination.update(s["contamination"])
        tags.update(s["tags"])
        eval_tasks = s.get("eval_tasks", eval_tasks)
    shards = {b.name: json.loads((work / "stats" / "shards" / f"{b.name}.json").read_text()) for b in cfg.bins}
    tokens_per_source: Counter = Counter()
    for s in shards.values():
        tokens_per_source.update({k.split(":")[0]: v for k, v in s["per_source"].items() if k.endswith(":tokens")})
    sources = {}
    for n in names:
        row = {"read": read[n].get("read", 0), "refused": {k: v for k, v in sorted(read[n].items()) if k != "read"},
               "docs": prep.get(f"{n}:docs", 0), "chars": prep.get(f"{n}:chars", 0),
               "duplicate_id": prep.get(f"{n}:duplicate_id", 0)}
        for reason in ("url_duplicate", "exact_duplicate", "near_duplicate"):
            row[reason] = dedup["removed"].get(f"{n}:{reason}", 0)
        for k in ("contaminated", "below_quality", "kept", "kept_chars"):
            row[k] = fin.get(f"{n}:{k}", 0)
        row["tokens"] = tokens_per_source.get(n, 0)
        row["tags"] = {k.split(":", 1)[1]: v for k, v in sorted(tags.items()) if k.startswith(f"{n}:")}
        sources[n] = row
    bins = {b: {"docs": s["docs"], "tokens": s["tokens"],
                "per_source": {k.split(":")[0]: v for k, v in s["per_source"].items() if k.endswith(":docs")}}
            for b, s in shards.items()}
    used = Counter()
    stages = []
    caps = {b.name: b.epochs for b in cfg.bins}
    for st in cfg.stages:
        budget = {b: caps[b] * bins[b]["tokens"] - used[b] for b in bins}
        eff, ok = cap_weights(st.weights, st.tokens, budget)
        for b, w in eff.items():
            used[b] += w * st.tokens
        stages.append({"name": st.name, "tokens": st.tokens, "requested": dict(st.weights), "weights": eff,
                       "within_epoch_caps": ok})
    epochs = {b: round(used[b] / bins[b]["tokens"], 3) if bins[b]["tokens"] else None for b in bins}
    return {"sources": sources, "cluster_sizes": dedup["cluster_sizes"],
            "contamination": {"eval_tasks": eval_tasks, "hits": dict(sorted(contamination.items()))},
            "bins": bins, "stages": stages, "epochs_per_bin": epochs,
            "settings": {"dedup": vars(cfg.dedup), "decontam": {k: v for k, v in vars(cfg.decontam).items()
                                                                 if k not in ("benchmarks", "world")},
                         "minhash": {s.name: vars(s.minhash) for s in cfg.sources},
                         "bins": [vars(b) for b in cfg.bins]}}


def _md(card: dict) -> str:
    lines = ["# Data card", "", "## Sources", "",
             "| source | read | refused | docs | url dup | exact dup | near dup | contaminated | below quality | kept | tokens |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in card["sources"].items():
        refused = ", ".join(f"{k} {v}" for k, v in r["refused"].items()) or "0"
        lines.append(f"| {n} | {r['read']} | {refused} | {r['docs']} | {r['url_duplicate']} | {r['exact_duplicate']} | "
                     f"{r['near_duplicate']} | {r['contaminated']} | {r['below_quality']} | {r['kept']} | {r['tokens']} |")
    lines += ["", "## Duplicate clusters (size: count)", ""]
    for kind, sizes in card["cluster_sizes"].items():
        lines.append(f"- {kind}: " + (", ".join(f"{k}: {v}" for k, v in sizes.items()) or "none"))
    c = card["contamination"]
    lines += ["", "## Contamination hits per evaluation task", ""]
    if not c["eval_tasks"]:
        lines.append("No evaluation items were found (benchmarks folder absent, no world): nothing was checked.")
    for task, items in sorted(c["eval_tasks"].items()):
        lines.append(f"- {task} ({items} items): {c['hits'].get(task, 0)} documents dropped")
    lines += ["", "## Tags", ""]
    for n, r in card["sources"].items():
        if r["tags"]:
            lines.append(f"- {n}: " + ", ".join(f"{k} {v}" for k, v in r["tags"].items()))
    lines += ["", "## Bins", "", "| bin | docs | tokens | epochs over the schedule |", "|---|---|---|---|"]
    for b, r in card["bins"].items():
        lines.append(f"| {b} | {r['docs']} | {r['tokens']} | {card['epochs_per_bin'][b]} |")
    lines += ["", "## Stages", ""]
    for s in card["stages"]:
        flag = "" if s["within_epoch_caps"] else " (cannot be filled within the epoch caps)"
        lines.append(f"- {s['name']}: {s['tokens']} tokens, weights {s['weights']} (requested {s['requested']}){flag}")
    return "\n".join(lines) + "\n"


def summary(card: dict) -> str:
    """One line of the card: documents kept of those read, what dropped them, the tokens and bins written."""
    src = card["sources"].values()
    dups = sum(r["url_duplicate"] + r["exact_duplicate"] + r["near_duplicate"] for r in src)
    return (f"kept {sum(r['kept'] for r in src):,} of {sum(r['read'] for r in src):,} documents ({dups:,} duplicates, "
            f"{sum(r['contaminated'] for r in src):,} contaminated, {sum(r['below_quality'] for r in src):,} below "
            f"quality), {sum(b['tokens'] for b in card['bins'].values()):,} tokens in {len(card['bins'])} bin(s)")


def write_card(cfg: DataPipelineConfig, out: Path) -> dict:
    card = build_card(cfg, out / "work")
    write_json_atomic(out / "data_card.json", card)
    (out / "data_card.md").write_text(_md(card), encoding="utf-8")
    mixture = {"data": {"world": False, "tokenizer": str((out / "tokenizer").resolve()),
                        "sources": {b: str((out / "shards" / b).resolve()) for b, r in card["bins"].items() if r["tokens"]}},
               "stages": [{"name": s["name"], "tokens": s["tokens"],
                           "mixture": {b: w for b, w in s["weights"].items() if w > 0}} for s in card["stages"]]}
    (out / "mixture.yaml").write_text(yaml.safe_dump(mixture, sort_keys=False), encoding="utf-8")
    return card
