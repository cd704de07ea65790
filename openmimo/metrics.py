"""One metrics sink for every stage: a console progress bar, ``metrics.jsonl``, TensorBoard if installed."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path


class Metrics:
    """Append one JSON line per ``log`` call; only the main rank writes.

    On resume, ``truncate_after(step)`` drops the lines a killed run wrote after its last
    checkpoint, so the file reads as one uninterrupted run.
    """

    def __init__(self, run_dir: str | Path | None, total_steps: int | None = None, enabled: bool = True,
                 console: bool = True, desc: str = "train"):
        self.enabled = enabled
        self.desc = desc
        self.path = Path(run_dir) / "metrics.jsonl" if run_dir is not None else None
        self._bar = None
        self._tb = None
        self._t0 = time.time()
        if not enabled:
            return
        if console:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total_steps, desc=desc, file=sys.stderr, dynamic_ncols=True,
                                 disable=not sys.stderr.isatty())
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self._bar = None
        if run_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except Exception:
                self._tb = None

    def start_clock(self) -> None:
        """The ETA's zero: call where the stage's fixed work starts (after data preparation, validation, resume)."""
        self._t0 = time.time()

    def truncate_after(self, step: int) -> None:
        if not self.enabled or self.path is None or not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if rec.get("step", 0) <= step:
                keep.append(line)
        self.path.write_text("".join(k + "\n" for k in keep))

    def log(self, record: dict, step: int | None = None, progress: float | None = None) -> None:
        """``progress``: the share of the stage's fixed work done (0-1); the console then shows it and the ETA
        (elapsed wall time since this sink opened x what is left / what is done)."""
        if not self.enabled:
            return
        rec = {k: _plain(v) for k, v in record.items()}
        if step is not None:
            rec["step"] = step
        if progress is not None and progress > 0:
            rec["progress"] = min(progress, 1.0)
            rec["eta_s"] = eta_seconds(time.time() - self._t0, progress)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        if self._tb is not None and step is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, step)
        if self._bar is not None:
            if self._bar.total is None and "progress" in rec and step:
                self._bar.total = round(step / rec["progress"])
            self._bar.n = step or self._bar.n
            shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in rec.items()
                     if k in ("loss", "lr", "tok_per_s", "mfu", "grad_norm")}
            self._bar.set_postfix(shown, refresh=True)
        elif step is not None and not sys.stderr.isatty() and "loss" in rec:
            parts = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()
                             if not isinstance(v, (list, dict)) and k not in ("progress", "eta_s"))
            if "progress" in rec:
                parts = f"[{self.desc} {100 * rec['progress']:.0f}% eta {format_eta(rec['eta_s'])}] " + parts
            print(parts, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()


def eta_seconds(elapsed_s: float, progress: float) -> float:
    """Seconds left at a constant rate: elapsed x (1 - progress) / progress."""
    return elapsed_s * (1.0 - min(progress, 1.0)) / progress


def format_eta(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _plain(v):
    if hasattr(v, "item") and getattr(v, "numel", lambda: 1)() == 1:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
