"""`openmimo report RUN_DIR... --output DIR`: one self-contained report.html (and its PNGs) from what stages wrote.

It only reads: each run folder's ``metrics.jsonl`` (pre-training, RL, SFT: one JSON record per log
call, nested dicts allowed) and any eval results JSON (``openmimo eval``'s ``{"tasks": {...}}``) in
the folder or given directly.  Figures, one line per run (and per series):

* pre-training loss; MTP accuracy per depth (``mtp_acc[i]``, and the main head's ``main_acc``);
* RL reward / pass rate, validation pass@1, response length, clip fraction, entropy;
* the rollout engine's GPU-idle and sample-waste ratios;
* the eval table: every benchmark side by side across runs (avg@k and pass@1), and a bar chart of pass@1.

A panel whose series no run has is left out.  The PNGs are written next to report.html and embedded in it
(base64), so the HTML file alone is the whole report.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path

from openmimo.config import UsageError

PANELS = [  # (file stem, title, regex on the flattened key's last part or whole key)
    ("pretrain_loss", "Pre-training loss", r"^(loss|lm_loss|mtp_loss(\[\d+\])?)$"),
    ("mtp_accuracy", "MTP accuracy per depth", r"(^|\.)(main_acc|mtp_acc\[\d+\])$"),
    ("rl_reward", "RL reward / pass rate", r"(^|\.)(reward|reward_mean|mean_reward|pass_rate)$"),
    ("val_pass1", "Validation pass@1", r"^(val|val_final|eval)(\.[a-z]+)?\.pass@1$"),
    ("response_length", "Response length (tokens)", r"(^|\.)(response_len\w*|mean_len\w*|mean_response_tokens)$"),
    ("clip_fraction", "Clip fraction", r"(^|\.)clip_frac(_low|_high)?$"),
    ("entropy", "Entropy", r"(^|\.)entropy$"),
    ("rollout_efficiency", "Rollout engine: GPU idle and sample waste", r"(^|\.)(gpu_idle_ratio|sample_waste_ratio)$"),
]


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", help="run folders (metrics.jsonl, eval results JSON) or eval results files")
    parser.add_argument("--output", default="report", help="folder for report.html and the PNGs")


def flatten(rec, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested record: ``{"eval": {"mtp_acc": [0.5, 0.2]}}`` -> ``eval.mtp_acc[0]`` etc."""
    out = {}
    if isinstance(rec, dict):
        for k, v in rec.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(rec, list):
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in rec):
            for i, x in enumerate(rec):
                out[f"{prefix}[{i}]"] = float(x)
    elif isinstance(rec, (int, float)) and not isinstance(rec, bool) and math.isfinite(rec):
        out[prefix] = float(rec)
    return out


def read_series(metrics_path: Path) -> dict[str, list[tuple[float, float]]]:
    """key -> [(step, value), ...] from a metrics.jsonl (torn lines skipped)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        step = rec.get("step")
        if not isinstance(step, (int, float)):
            continue
        for k, v in flatten({k: v for k, v in rec.items() if k not in ("step", "progress", "eta_s")}).items():
            series.setdefault(k, []).append((float(step), v))
    return series


def _is_results(obj) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("tasks"), dict) and \
        all(isinstance(v, dict) and "k" in v for v in obj["tasks"].values())


def collect(paths: list[str]) -> list[dict]:
    """One entry per run: name, series (from every metrics.jsonl under it), eval results."""
    runs = []
    for p in map(Path, paths):
        if not p.exists():
            raise UsageError(f"report: {p} not found")
        run = {"name": p.stem if p.is_file() else p.name, "series": {}, "results": {}}
        files = [p] if p.is_file() else sorted(p.rglob("*.json")) + sorted(p.rglob("metrics.jsonl"))
        for f in files:
            if f.name == "metrics.jsonl":
                sub = f.parent.relative_to(p).as_posix() if p.is_dir() and f.parent != p else ""
                for k, v in read_series(f).items():
                    run["series"][f"{sub}/{k}" if sub else k] = v
            elif f.suffix == ".json":
                try:
                    obj = json.loads(f.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if _is_results(obj):
                    for task, r in obj["tasks"].items():
                        run["results"][task] = r
        runs.append(run)
    return runs


def _png(fig, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return base64.b64encode(path.read_bytes()).decode()


def plot_panels(runs: list[dict], out: Path) -> list[tuple[str, str, str]]:
    """(title, png file name, base64) of each panel some run has data for."""
    import matplotlib  # optional: the report extra (pip install openmimo[report])

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for stem, title, pattern in PANELS:
        rx = re.compile(pattern)
        lines = [(run["name"], k, pts) for run in runs for k, pts in sorted(run["series"].items())
                 if rx.search(k.rsplit("/", 1)[-1]) and len(pts) >= 1]
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for name, key, pts in lines:
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, ys, marker="o" if len(pts) < 20 else None, markersize=3, label=f"{name}: {key}")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        made.append((title, f"{stem}.png", _png(fig, out / f"{stem}.png")))
        plt.close(fig)
    tasks = sorted({t for run in runs for t in run["results"]})
    if tasks:
        fig, ax = plt.subplots(figsize=(max(6.4, 0.8 * len(tasks) * max(1, len(runs))), 3.6))
        width = 0.8 / len(runs)
        for i, run in enumerate(runs):
            ys = [100 * run["results"].get(t, {}).get("pass@1", float("nan")) for t in tasks]
            ax.bar([j + i * width for j in range(len(tasks))], ys, width, label=run["name"])
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks, rotation=30, ha="right")
        ax.set_ylabel("pass@1 (%)")
        ax.set_title("Evaluation: pass@1 per benchmark")
        ax.legend(fontsize=7)
        made.append(("Evaluation", "eval_pass1.png", _png(fig, out / "eval_pass1.png")))
        plt.close(fig)
    return made


def eval_table(runs: list[dict]) -> str:
    """HTML table: one row per benchmark, avg@k and pass@1 per run."""
    tasks = sorted({t for run in runs for t in run["results"]})
    if not tasks:
        return "<p>No evaluation results found.</p>"
    head = "".join(f"<th>{html.escape(r['name'])} avg@k</th><th>{html.escape(r['name'])} pass@1</th>" for r in runs)
    rows = []
    for t in tasks:
        cells = []
        for run in runs:
            r = run["results"].get(t)
            if not r or not r.get("n"):
                cells.append("<td>-</td><td>-</td>")
                continue
            cells.append(f"<td>{100 * r['avg@k']:.1f} (k={r['k']}, n={r['n']})</td><td>{100 * r['pass@1']:.1f}</td>")
        rows.append(f"<tr><td>{html.escape(t)}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>benchmark</th>{head}</tr>{''.join(rows)}</table>"


def render(runs: list[dict], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    figures = plot_panels(runs, out)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>openmimo report</title><style>",
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}",
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}",
             "img{max-width:100%}</style></head><body><h1>openmimo report</h1>",
             "<p>Runs: " + ", ".join(html.escape(r["name"]) for r in runs) + "</p>",
             "<h2>Evaluation</h2>", eval_table(runs)]
    for title, name, b64 in figures:
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>")
    if not figures:
        parts.append("<p>No metrics found in these folders.</p>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def run(args) -> int:
    runs = collect(args.runs)
    path = render(runs, Path(args.output))
    n_series = sum(len(r["series"]) for r in runs)
    print(f"report: {len(runs)} runs, {n_series} metric series, "
          f"{sum(len(r['results']) for r in runs)} eval results -> {path}")
    return 0
