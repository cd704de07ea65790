"""A training run's outer loop, the one every training stage uses (pretrain, mtp-extend, SFT, RL).

:class:`RunConfig` is the ``train:`` section every stage shares.  :class:`Run` owns what is not a stage's
own: the run folder and its identity (:func:`openmimo.runs.open_run_folder`), the metrics sink, resume,
the stop rules (the stage's budget, ``max_steps``, the time limit counted across resumes), the
log / eval / checkpoint cadence, progress with ETA and the last checkpoint.  A stage supplies only its
data and objective, as an object with these methods:

- ``done() -> bool``: the stage's own budget (tokens, data, steps) is spent;
- ``progress() -> float``: the share of that budget done, 0-1 (for the ETA);
- ``train_step() -> dict``: one optimizer step; returns its metrics record;
- ``evaluate() -> dict``: the record logged every ``eval_every`` steps (``{}`` logs nothing);
- ``state_dict() -> dict`` / ``load_state_dict(state)``: what a checkpoint must hold beyond model,
  optimizer and RNG (data position, counters) so that ``--resume`` continues bitwise.

Within a step the order is: train, log, evaluate, checkpoint, so a checkpoint holds the state after
everything its step did and a run killed at any moment (kill -9 included) resumes from its last
complete checkpoint to the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class RunConfig:
    out_dir: str = "runs/run"  # run folder: run.json, config.yaml, metrics.jsonl, checkpoints/, final/
    seed: int = 0  # seeds model init, data order and sampling
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # autocast dtype: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16
    max_steps: int = 0  # stop after this many optimizer steps (0 = the stage's own budget: its tokens or data)
    time_limit_s: float = 0.0  # stop (and save) after this much wall time, counted across resumes (0 = none)
    log_every: int = 1  # steps between metrics lines (step 1 is always logged)
    eval_every: int = 0  # steps between evaluations (0 = only at the end)
    ckpt_every: int = 50  # steps between checkpoints (0 = only the last one)
    keep_checkpoints: int = 2  # complete checkpoints kept on disk

    def check(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"key 'dtype': unknown dtype {self.dtype!r} (one of {', '.join(DTYPES)})")
        if self.log_every <= 0 or self.ckpt_every < 0 or self.keep_checkpoints <= 0 or self.eval_every < 0:
            raise ValueError("key 'log_every'/'eval_every'/'ckpt_every'/'keep_checkpoints' out of range")
        if self.max_steps < 0 or self.time_limit_s < 0:
            raise ValueError("key 'max_steps'/'time_limit_s' must be >= 0")


class Run:
    """One training run in one folder; see the module docstring.

    ``config``: the stage's whole resolved config (recorded in run.json); ``compatible_keys``: its keys
    that a ``--resume`` must find unchanged.  Call :meth:`begin` once model and optimizer exist, then
    :meth:`train`."""

    def __init__(self, cfg: RunConfig, config: dict, *, stage: str, rt, resume: bool = False,
                 overwrite: bool = False, compatible_keys: tuple[str, ...] = (), total_steps: int | None = None):
        from openmimo.metrics import Metrics
        from openmimo.runs import open_run_folder

        self.cfg, self.rt, self.stage_name, self.resume = cfg, rt, stage, resume
        self.run_dir: Path = open_run_folder(cfg.out_dir, config, resume=resume, overwrite=overwrite,
                                             compatible_keys=compatible_keys, stage=stage, write=rt.is_main)
        self.metrics = Metrics(self.run_dir, total_steps=total_steps or cfg.max_steps or None,
                               enabled=rt.is_main, desc=stage)
        self.step = 0
        self.elapsed_s = 0.0  # wall time of the run so far, across resumes: what the time limit reads
        self.last_ckpt_step = 0
        self.model = self.optimizer = None

    def print(self, msg: str) -> None:
        if self.rt.is_main:
            print(f"[{self.stage_name}] {msg}", flush=True)

    def begin(self, model, optimizer) -> dict | None:
        """With ``--resume``: restore the newest complete checkpoint into ``model`` and ``optimizer`` (and the RNG)
        and return the stage's saved state; None on a fresh start (whose folder then has no old metrics)."""
        from openmimo.checkpoint import load_latest_checkpoint

        self.model, self.optimizer = model, optimizer
        if self.resume:
            loaded = load_latest_checkpoint(self.run_dir, model, optimizer)
            if loaded is not None:
                ckpt, state = loaded
                self.step = self.last_ckpt_step = state.pop("step")
                self.elapsed_s = state.pop("elapsed_s", 0.0)
                self.metrics.truncate_after(self.step)
                self.print(f"resumed from {ckpt} at step {self.step}")
                return state
        elif self.rt.is_main and (self.run_dir / "metrics.jsonl").exists():
            (self.run_dir / "metrics.jsonl").unlink()
        return None

    def save(self, state: dict) -> Path:
        """A checkpoint of model, optimizer, RNG, the run's counters and the stage's ``state`` (collective)."""
        from openmimo.checkpoint import save_checkpoint

        path = save_checkpoint(self.run_dir, self.step, self.model, self.optimizer,
                               {**state, "elapsed_s": self.elapsed_s}, keep=self.cfg.keep_checkpoints)
        self.last_ckpt_step = self.step
        return path

    def budget_spent(self, stage) -> bool:
        return stage.done() or bool(self.cfg.max_steps and self.step >= self.cfg.max_steps)

    def _progress(self, stage) -> float:
        p = stage.progress()
        if self.cfg.max_steps:
            p = max(p, self.step / self.cfg.max_steps)
        return min(p, 1.0)

    def _time_is_up(self) -> bool:
        up = bool(self.cfg.time_limit_s and self.elapsed_s > self.cfg.time_limit_s)
        if self.rt.distributed and self.cfg.time_limit_s:  # every rank stops at the same step
            flag = torch.tensor([float(up)], device=self.rt.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            up = bool(flag.item())
        return up

    def train(self, stage) -> dict:
        """Steps until the budget, ``max_steps`` or the time limit; the last step is always checkpointed.
        Returns ``{"steps", "stopped" (budget | time_limit), "time_s" (this process's training time)}``."""
        cfg = self.cfg
        t0, elapsed0 = time.time(), self.elapsed_s
        p0 = self._progress(stage)  # the ETA counts this process's work (a resumed run starts part-way)
        self.metrics.start_clock()
        stopped = "budget"
        while not self.budget_spent(stage):
            self.elapsed_s = elapsed0 + time.time() - t0
            if self._time_is_up():
                self.print(f"time limit reached at step {self.step}")
                stopped = "time_limit"
                break
            rec = stage.train_step()
            self.step += 1
            self.elapsed_s = elapsed0 + time.time() - t0
            if self.step % cfg.log_every == 0 or self.step == 1:
                p = (self._progress(stage) - p0) / max(1.0 - p0, 1e-12)
                self.metrics.log(rec, step=self.step, progress=p)
            # the evaluation at the budget's end is the stage's final one
            if cfg.eval_every and self.step % cfg.eval_every == 0 and not self.budget_spent(stage):
                ev = stage.evaluate()  # every rank: FSDP forwards are collective
                if ev:
                    self.metrics.log(ev, step=self.step)
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                self.save(stage.state_dict())
        if self.step != self.last_ckpt_step:
            self.save(stage.state_dict())
        return {"steps": self.step, "stopped": stopped, "time_s": time.time() - t0}

    def close(self) -> None:
        self.metrics.close()
