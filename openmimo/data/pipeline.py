"""`openmimo data CONFIG.yaml [key=value ...] [--resume] [--overwrite]`: raw pages and texts -> token shards.

The pipeline is six datatrove executors run one after the other (``executor: local`` — processes on this
machine, the default — ``slurm`` or ``ray``; with Slurm each stage is a job array that depends on the one
before):

====================  ==================  =========================================================
stage                 tasks               what (module)
====================  ==================  =========================================================
prepare               ``tasks``           readers -> docs + dedup keys (pipeline_readers, pipeline_dedup)
group                 ``buckets``         duplicate groups per key bucket (pipeline_dedup)
resolve               1                   URL / exact / near-dup resolution, union-find (pipeline_dedup)
finish                ``tasks``           drop duplicates, decontaminate, tag, bin (pipeline_steps)
tokenizer             1                   copy or train the tokenizer (pipeline_steps)
shards                one per bin         token shards per bin + data card (pipeline_steps, datacard)
====================  ==================  =========================================================

``OUT`` (``out_dir``) ends up holding ``shards/<bin>/`` (the format ``openmimo pretrain`` reads),
``tokenizer/``, ``mixture.yaml`` (``data`` and ``stages`` keys for a pre-training config), ``data_card.md``
/ ``.json``, and ``work/`` + ``logs/`` (intermediate files, datatrove logs and completion markers).
``--resume`` continues a killed run: datatrove skips every task whose completion marker exists and
re-runs the rest from their inputs (tasks write their outputs under temporary names, so a killed task
leaves none).  Without it, a non-empty ``OUT`` is refused unless ``--overwrite`` replaces it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import shutil
from pathlib import Path

from openmimo.config import ConfigError, config_args, load_stage_config, to_dict
from openmimo.data.pipeline_config import DataPipelineConfig

STAGES = ("prepare", "group", "resolve", "finish", "tokenizer", "shards")


def resolve_inputs(cfg: DataPipelineConfig, work: Path) -> dict[str, Path]:
    """Expand each source's paths (globs) into a datatrove paths file; a source matching nothing is an error."""
    out = {}
    for i, s in enumerate(cfg.sources):
        files = []
        for pat in s.paths:
            hits = sorted(glob.glob(pat, recursive=True)) if any(c in pat for c in "*?[") else [pat]
            files += [str(Path(h).resolve()) for h in hits if Path(h).is_file()]
            if not hits or not all(Path(h).is_file() for h in hits):
                raise ConfigError(f"key 'sources[{i}].paths': {pat} matches no file")
        p = work / "inputs" / f"{s.name}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(f.lstrip("/") + "\n" for f in files))
        out[s.name] = p
    return out


def _pipelines(cfg: DataPipelineConfig, out: Path, inputs: dict[str, Path]):
    from openmimo.data.pipeline_dedup import GroupKeys, PrepareDocs, ResolveDuplicates
    from openmimo.data.pipeline_readers import SourceReader
    from openmimo.data.pipeline_steps import FinishDocs, PrepareTokenizer, WriteShards

    work = str(out / "work")
    readers = [SourceReader(s, "/", str(inputs[s.name]), str(out / "work" / "stats" / "read")) for s in cfg.sources]
    return {
        "prepare": ([*readers, PrepareDocs(cfg, work)], cfg.tasks),
        "group": ([GroupKeys(cfg, work)], cfg.buckets),
        "resolve": ([ResolveDuplicates(cfg, work)], 1),
        "finish": ([FinishDocs(cfg, work)], cfg.tasks),
        "tokenizer": ([PrepareTokenizer(cfg, work, str(out))], 1),
        "shards": ([WriteShards(cfg, work, str(out))], len(cfg.bins)),
    }


def _executor(cfg: DataPipelineConfig, name: str, pipeline, tasks: int, logs: Path, depends):
    if cfg.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(pipeline, tasks=tasks, time=cfg.slurm_time, partition=cfg.slurm_partition,
                                     logging_dir=str(logs / name), job_name=f"openmimo-data-{name}", depends=depends)
    if cfg.executor == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor(pipeline, tasks=tasks, workers=cfg.workers, logging_dir=str(logs / name),
                                   depends=depends)
    from datatrove.executor import LocalPipelineExecutor

    return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(cfg.workers, tasks), logging_dir=str(logs / name))


def config_hash(cfg: DataPipelineConfig) -> str:
    d = to_dict(cfg)
    for k in ("out_dir", "workers", "executor", "slurm_partition", "slurm_time"):  # do not change the output
        d.pop(k)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _claim(out: Path, cfg: DataPipelineConfig, resume: bool, overwrite: bool) -> None:
    run_file = out / "run.json"
    h = config_hash(cfg)
    if resume:
        if not run_file.is_file():
            raise ConfigError(f"{out}: --resume, but there is no run here (no run.json)")
        old = json.loads(run_file.read_text()).get("config_hash")
        if old != h:
            raise ConfigError(f"{out}: --resume with another configuration (hash {h}, the run has {old}); "
                              f"use --overwrite to start again")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out}: exists and is not empty (--resume continues it, --overwrite replaces it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({"config_hash": h, "config": to_dict(cfg)}, indent=2) + "\n")


def _quiet_datatrove() -> None:
    import sys

    from datatrove.utils.logging import logger  # loguru

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def main(cfg: DataPipelineConfig, resume: bool = False, overwrite: bool = False, log=print) -> dict:
    """Run the pipeline; returns the data card (dict)."""
    from openmimo.data.datacard import summary, write_card

    out = Path(cfg.out_dir)
    _claim(out, cfg, resume, overwrite)
    inputs = resolve_inputs(cfg, out / "work")
    _quiet_datatrove()
    prev, pending = None, False
    for name, (pipeline, tasks) in _pipelines(cfg, out, inputs).items():
        ex = _executor(cfg, name, pipeline, tasks, out / "logs", prev)
        if cfg.executor == "slurm":
            prev = ex  # launched (with its dependencies) by the last stage's run()
            pending = pending or bool(ex.get_incomplete_ranks(range(tasks)))
            continue
        log(f"[data] {name}: {tasks} task(s)")
        ex.run()
        if ex.get_incomplete_ranks(range(tasks)):
            raise RuntimeError(f"stage {name}: tasks {ex.get_incomplete_ranks(range(tasks))} did not complete "
                               f"(see {out / 'logs' / name}); fix the cause and run again with --resume")
    if pending:  # Slurm, with work left: submit the job arrays (each stage waits for the one before)
        prev.run()
        log("[data] submitted to Slurm; when the jobs finish, run again with --resume to write the data card")
        return {}
    card = write_card(cfg, out)
    log(f"[data] {summary(card)}; card: {out / 'data_card.md'}")
    return card


EXAMPLE = "tasks=4 workers=2 out_dir=runs/data"


def add_arguments(parser) -> None:
    config_args(parser, resume=True, example=EXAMPLE)


def run(args) -> int:
    if args.config is None:
        raise ConfigError("openmimo data needs a CONFIG.yaml (e.g. configs/data_tiny.yaml)")
    cfg = load_stage_config(DataPipelineConfig, args)
    main(cfg, resume=args.resume, overwrite=args.overwrite)
    return 0
