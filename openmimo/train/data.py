"""Pre-training data: prepare (the embedded world -> tokenizer -> token shards) and build the mixture loader.

With ``data.world`` and no ``data.sources``, rank 0 writes the tiny world, trains the byte-level
BPE tokenizer on its training text and tokenises each source into shards, all under
``OUT_DIR/data`` (reused while the config would make the same data: a ``READY`` marker holding the data's spec is
written last, and a folder prepared under another spec, e.g. another seed, is rebuilt; :class:`WorldRunData` names
its folders).  Otherwise ``data.sources``
names token-shard folders and ``data.tokenizer`` a tokenizer folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist

from openmimo.config import ConfigError, load
from openmimo.data.mixture_loader import MixtureLoader
from openmimo.data.shards import tokenize_to_shards
from openmimo.data.world import make_world
from openmimo.jsonl import read_jsonl
from openmimo.tokenizer import load_tokenizer, train_tokenizer

WORLD_SOURCES = ("web", "math", "arithmetic", "code", "reasoning")
# the tokenizer is trained on these (arithmetic is a subset of math: counting it twice would skew the BPE)
_TOKENIZER_SOURCES = tuple(s for s in WORLD_SOURCES if s != "arithmetic")


@dataclass(frozen=True)
class WorldRunData:
    """The folders of a pre-training run's data on the embedded world, ``RUN_DIR/data``::

        world/              the world (openmimo.data.world's layout: text/<source>.<split>.jsonl, math/<split>.jsonl,
                            code/<split>.jsonl, ...)
        tokenizer/          the byte-level BPE trained on the world's training text
        shards/<source>/    token shards of each of WORLD_SOURCES
        tagger/, pipeline/  with data.world_pipeline: the quality tagger and the `openmimo data` run
        READY               written last: the folder is complete; holds :func:`data_spec` of the config

    Later stages find the world through the checkpoint they start from (:meth:`of_checkpoint`): mtp-extend reads
    the shards and held-out texts, the quickstart's RL the math and code splits."""

    root: Path  # RUN_DIR/data

    @classmethod
    def of_run(cls, run_dir: str | Path) -> "WorldRunData":
        return cls(Path(run_dir) / "data")

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> "WorldRunData":
        """The data of the run whose checkpoint is ``checkpoint`` (a folder inside the run folder: RUN_DIR/final)."""
        return cls.of_run(Path(checkpoint).parent)

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def ready(self) -> Path:
        return self.root / "READY"

    def shards(self, source: str | None = None) -> Path:
        """The folder of ``source``'s token shards (None: the folder holding them all)."""
        return self.root / "shards" if source is None else self.root / "shards" / source

    def text(self, source: str, split: str) -> Path:
        """The world's pre-training text of ``source`` (web, math, arithmetic, code, reasoning) and ``split``."""
        return self.world / "text" / f"{source}.{split}.jsonl"

    def records(self, kind: str, split: str) -> Path:
        """The world's task records: ``kind`` math or code, ``split`` train, val or test."""
        return self.world / kind / f"{split}.jsonl"


def data_spec(cfg) -> str:
    """What the embedded world's prepared data depends on (JSON): the world's seed, size and arithmetic share, the
    tokenizer's vocabulary and the pipeline switch."""
    d = cfg.data
    return json.dumps({"world_seed": cfg.train.seed, "world_scale": d.world_scale, "world_arithmetic": d.world_arithmetic,
                       "tokenizer_vocab": d.tokenizer_vocab, "world_pipeline": d.world_pipeline}, sort_keys=True) + "\n"


def _spec_difference(held: str, spec: str) -> str:
    try:
        old = json.loads(held)
    except ValueError:
        return "no spec recorded"
    new = json.loads(spec)
    key = next((k for k in sorted(new) if old.get(k) != new[k]), None)
    return f"{key}: {old.get(key)!r}, now {new[key]!r}" if key else "same spec"


def prepare_world(cfg, data_dir: Path) -> None:

    d = WorldRunData(Path(data_dir))
    make_world(d.world, seed=cfg.train.seed, scale=cfg.data.world_scale, arithmetic=cfg.data.world_arithmetic or None)
    texts = []
    for src in _TOKENIZER_SOURCES:
        texts.extend(r["text"] for r in read_jsonl(d.text(src, "train")))
    tok = train_tokenizer(texts, vocab_size=cfg.data.tokenizer_vocab)
    tok.save(d.tokenizer)
    for src in WORLD_SOURCES:
        tokenize_to_shards([d.text(src, "train")], tok, d.shards(src))
    d.ready.write_text(data_spec(cfg))


def _prepare_world_pipeline(cfg, data_dir: Path) -> None:
    """The world's raw pages and texts through `openmimo data` with ``configs/data_tiny.yaml``: a tagger trained on
    the world's labels, dedup, decontamination, tags and bins named as :data:`WORLD_SOURCES`."""
    # datatrove and the tagger load only for this path (data.world_pipeline), not for every pre-training run
    import importlib.util

    if importlib.util.find_spec("datatrove") is None:
        raise ConfigError("key 'data.world_pipeline': the world's data goes through `openmimo data`, which needs the "
                          "data extra (scripts/setup.sh installs it; or pip install -e '.[data]'); "
                          "data.world_pipeline=false trains on the generator's clean text instead")
    from openmimo.data import quality
    from openmimo.data.datacard import summary
    from openmimo.data.pipeline import main as run_pipeline
    from openmimo.data.pipeline_config import DataPipelineConfig

    d = WorldRunData(Path(data_dir))
    world, tagger_dir, pipeline_dir = d.world, d.root / "tagger", d.root / "pipeline"
    make_world(world, seed=cfg.train.seed, scale=cfg.data.world_scale, arithmetic=cfg.data.world_arithmetic or None)
    tagger, _ = quality.train_tagger(quality.world_labels(world, per_domain=300, seed=cfg.train.seed), epochs=3,
                                     seed=cfg.train.seed, log=lambda *_: None)
    tagger.save(tagger_dir)
    pcfg = load(DataPipelineConfig, Path(__file__).resolve().parents[2] / "configs" / "data_tiny.yaml",
                [f"out_dir={pipeline_dir}", f"tagger={tagger_dir}", f"decontam.world={world}",
                 f"tokenizer_vocab={cfg.data.tokenizer_vocab}"])
    for s in pcfg.sources:
        s.paths = [p.replace("runs/world", str(world), 1) for p in s.paths]
    # datatrove logs each task's progress to stderr at INFO: into d.root/pipeline.log here, not the run's output
    with open(d.root / "pipeline.log", "w") as logfile, contextlib.redirect_stderr(logfile):
        card = run_pipeline(pcfg, overwrite=True, log=lambda *_: None)
    print(f"[data] the world through `openmimo data`: {summary(card)}; {pipeline_dir / 'data_card.md'}", flush=True)
    d.shards().mkdir(parents=True, exist_ok=True)
    for src in WORLD_SOURCES:
        os.replace(pipeline_dir / "shards" / src, d.shards(src))
    os.replace(pipeline_dir / "tokenizer", d.tokenizer)
    d.ready.write_text(data_spec(cfg))


def prepare_data(cfg, run_dir: Path, rt):
    """Returns (tokenizer, {source: shard folder}, eval data {"math": [...], "texts": [...]})."""

    eval_data: dict = {"math": [], "texts": []}
    if cfg.data.sources:
        if not cfg.data.tokenizer:
            raise ConfigError("key 'data.tokenizer' must name a tokenizer folder when data.sources is set")
        for name, folder in cfg.data.sources.items():
            if not Path(folder).is_dir():
                raise ConfigError(f"key 'data.sources.{name}': shard folder {folder} not found")
        tok = load_tokenizer(cfg.data.tokenizer)
        return tok, dict(cfg.data.sources), eval_data
    d = WorldRunData.of_run(run_dir)
    if rt.is_main:
        spec = data_spec(cfg)
        held = d.ready.read_text() if d.ready.is_file() else None
        if held is not None and held != spec:
            print(f"[data] {d.root} was prepared for another config ({_spec_difference(held, spec)}): rebuilding it",
                  flush=True)
            shutil.rmtree(d.root)
        if held != spec:
            (_prepare_world_pipeline if cfg.data.world_pipeline else prepare_world)(cfg, d.root)
    if rt.distributed:
        dist.barrier()
    tok = load_tokenizer(d.tokenizer)
    eval_data["math"] = read_jsonl(d.records("math", "test"))
    eval_data["texts"] = [r["text"] for src in ("math", "web") for r in read_jsonl(d.text(src, "val"), 32)]
    needed = {k for s in cfg.stages for k in s.mixture}
    unknown = needed - set(WORLD_SOURCES)
    if unknown:
        raise ConfigError(f"key 'stages.mixture': unknown source '{sorted(unknown)[0]}' "
                          f"(the embedded world has {', '.join(WORLD_SOURCES)})")
    return tok, {s: str(d.shards(s)) for s in WORLD_SOURCES}, eval_data


def build_loader(cfg, sources: dict[str, str], rt):

    return MixtureLoader(sources, cfg.stages[0].mixture, seed=cfg.train.seed, rank=rt.rank, world_size=rt.world_size)
