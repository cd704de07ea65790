"""Pre-training data: prepare (the embedded world -> tokenizer -> token shards) and build the mixture loader.

With ``data.world`` and no ``data.sources``, rank 0 writes the tiny world, trains the byte-level
BPE tokenizer on its training text and tokenises each source into shards, all under
``OUT_DIR/data`` (reused on resume: a ``READY`` marker is written last).  Otherwise ``data.sources``
names token-shard folders and ``data.tokenizer`` a tokenizer folder.
"""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from openmimo.config import ConfigError
from openmimo.jsonl import read_jsonl

WORLD_SOURCES = ("web", "math", "arithmetic", "code", "reasoning")
# the tokenizer is trained on these (arithmetic is a subset of math: counting it twice would skew the BPE)
_TOKENIZER_SOURCES = tuple(s for s in WORLD_SOURCES if s != "arithmetic")


def prepare_world(cfg, data_dir: Path) -> None:
    from openmimo.data.shards import tokenize_to_shards
    from openmimo.data.world import make_world
    from openmimo.tokenizer import train_tokenizer

    world = data_dir / "world"
    make_world(world, seed=cfg.train.seed, scale=cfg.data.world_scale, arithmetic=cfg.data.world_arithmetic or None)
    texts = []
    for src in _TOKENIZER_SOURCES:
        texts.extend(r["text"] for r in read_jsonl(world / "text" / f"{src}.train.jsonl"))
    tok = train_tokenizer(texts, vocab_size=cfg.data.tokenizer_vocab)
    tok.save(data_dir / "tokenizer")
    for src in WORLD_SOURCES:
        tokenize_to_shards([world / "text" / f"{src}.train.jsonl"], tok, data_dir / "shards" / src)
    (data_dir / "READY").write_text("ok\n")


def _prepare_world_pipeline(cfg, data_dir: Path) -> None:
    """The world's raw pages and texts through `openmimo data` with ``configs/data_tiny.yaml``: a tagger trained on
    the world's labels, dedup, decontamination, tags and bins named as :data:`WORLD_SOURCES`."""
    import os

    from openmimo.config import load
    from openmimo.data import quality
    from openmimo.data.pipeline import main as run_pipeline
    from openmimo.data.pipeline_config import DataPipelineConfig
    from openmimo.data.world import make_world

    world = data_dir / "world"
    make_world(world, seed=cfg.train.seed, scale=cfg.data.world_scale, arithmetic=cfg.data.world_arithmetic or None)
    tagger, _ = quality.train_tagger(quality.world_labels(world, per_domain=300, seed=cfg.train.seed), epochs=3,
                                     seed=cfg.train.seed, log=lambda *_: None)
    tagger.save(data_dir / "tagger")
    pcfg = load(DataPipelineConfig, Path(__file__).resolve().parents[2] / "configs" / "data_tiny.yaml",
                [f"out_dir={data_dir / 'pipeline'}", f"tagger={data_dir / 'tagger'}", f"decontam.world={world}",
                 f"tokenizer_vocab={cfg.data.tokenizer_vocab}"])
    for s in pcfg.sources:
        s.paths = [p.replace("runs/world", str(world), 1) for p in s.paths]
    run_pipeline(pcfg, overwrite=True, log=lambda *_: None)
    (data_dir / "shards").mkdir(parents=True, exist_ok=True)
    for src in WORLD_SOURCES:
        os.replace(data_dir / "pipeline" / "shards" / src, data_dir / "shards" / src)
    os.replace(data_dir / "pipeline" / "tokenizer", data_dir / "tokenizer")
    (data_dir / "READY").write_text("ok\n")


def prepare_data(cfg, run_dir: Path, rt):
    """Returns (tokenizer, {source: shard folder}, eval data {"math": [...], "texts": [...]})."""
    from openmimo.tokenizer import load_tokenizer

    eval_data: dict = {"math": [], "texts": []}
    if cfg.data.sources:
        if not cfg.data.tokenizer:
            raise ConfigError("key 'data.tokenizer' must name a tokenizer folder when data.sources is set")
        for name, folder in cfg.data.sources.items():
            if not Path(folder).is_dir():
                raise ConfigError(f"key 'data.sources.{name}': shard folder {folder} not found")
        tok = load_tokenizer(cfg.data.tokenizer)
        return tok, dict(cfg.data.sources), eval_data
    data_dir = Path(run_dir) / "data"
    if rt.is_main and not (data_dir / "READY").is_file():
        (_prepare_world_pipeline if cfg.data.world_pipeline else prepare_world)(cfg, data_dir)
    if rt.distributed:
        dist.barrier()
    tok = load_tokenizer(data_dir / "tokenizer")
    world = data_dir / "world"
    eval_data["math"] = read_jsonl(world / "math" / "test.jsonl")
    eval_data["texts"] = [r["text"] for src in ("math", "web") for r in read_jsonl(world / "text" / f"{src}.val.jsonl", 32)]
    needed = {k for s in cfg.stages for k in s.mixture}
    unknown = needed - set(WORLD_SOURCES)
    if unknown:
        raise ConfigError(f"key 'stages.mixture': unknown source '{sorted(unknown)[0]}' "
                          f"(the embedded world has {', '.join(WORLD_SOURCES)})")
    return tok, {s: str(data_dir / "shards" / s) for s in WORLD_SOURCES}, eval_data


def build_loader(cfg, sources: dict[str, str], rt):
    from openmimo.data.mixture_loader import MixtureLoader

    return MixtureLoader(sources, cfg.stages[0].mixture, seed=cfg.train.seed, rank=rt.rank, world_size=rt.world_size)
