"""Quality and domain tagging with a small trained encoder; `openmimo tag-train`.

:class:`Tagger` is a compact text encoder with three heads:

- ``domain``: one of :data:`DOMAINS` (softmax);
- ``edu``: educational / reasoning value on a 0-5 scale (regression, clipped to [0, 5]);
- ``junk``: probability that the text is spam or boilerplate (sigmoid).

The encoder reads hashed words (``openmimo.data.texthash``: lower-cased, punctuation dropped, digits kept;
word hash mod ``buckets``): the first ``max_words`` word ids get embeddings plus learned positions, go
through ``layers`` transformer encoder layers and are mean-pooled; the pooled vector adds a bag of hashed
word bigrams (fastText's trick).  ``layers: 0`` is a pure fastText-style bag of words and bigrams.

Training data is labelled JSONL: ``{"text": ..., "domain": ..., "edu": ..., "junk": ...}``, any label may be
missing (its loss is masked).  Labels come from a stronger LLM (``openmimo tag-label``,
:mod:`openmimo.data.quality_label`), from a user's file, or from the embedded world, whose sources and pages
have known kinds and planted spam (:func:`world_labels`).  :func:`train_tagger` holds out a split and
reports each head against its majority-class (or mean) baseline.  A saved tagger is a folder:
``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from openmimo.config import ConfigError
from openmimo.data.texthash import combine, word_hashes
from openmimo.jsonl import iter_jsonl, read_jsonl

DOMAINS = ("math", "code", "science", "general", "other")
EDU_MAX = 5.0


@dataclass
class TaggerConfig:
    buckets: int = 1 << 16  # hashed vocabulary size (words and bigrams share it)
    dim: int = 64  # embedding / model width
    layers: int = 0  # transformer encoder layers (0 = bag of words and bigrams, fastText-style: the fast default)
    heads: int = 4  # attention heads per layer
    max_words: int = 128  # words read per document (its start)

    def check(self):
        if self.buckets < 16 or self.dim < 4 or self.layers < 0 or self.max_words < 1:
            raise ConfigError(f"tagger config out of range: {self}")
        if self.layers and self.dim % self.heads:
            raise ConfigError(f"tagger dim {self.dim} must be a multiple of heads {self.heads}")


def featurize(texts: Sequence[str], cfg: TaggerConfig) -> dict[str, torch.Tensor]:
    """Word ids ``(B, L)`` (0 = padding), a padding mask, and the bigram bag (flat ids + offsets)."""
    w, off = word_hashes(texts, "alnum")
    n = len(texts)
    lens = np.minimum(np.diff(off), cfg.max_words)
    ids = np.zeros((n, max(1, int(lens.max()) if n else 1)), dtype=np.int64)
    trunc_off = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    idx = np.concatenate([np.arange(off[i], off[i] + lens[i]) for i in range(n)]) if n else np.zeros(0, np.int64)
    wid = (w[idx] % np.uint64(cfg.buckets - 1)).astype(np.int64) + 1 if idx.size else np.zeros(0, np.int64)
    rows = np.repeat(np.arange(n), lens)
    cols = np.arange(idx.size) - np.repeat(trunc_off[:-1], lens)
    ids[rows, cols] = wid
    bg, bg_off = combine(w[idx], trunc_off, 2)
    bid = (bg % np.uint64(cfg.buckets - 1)).astype(np.int64) + 1
    return {"ids": torch.from_numpy(ids), "mask": torch.from_numpy(ids > 0),
            "bigrams": torch.from_numpy(bid), "bigram_offsets": torch.from_numpy(bg_off[:-1].copy())}


class Tagger(nn.Module):
    def __init__(self, cfg: TaggerConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        # sparse gradients: a step updates only the rows of the words in the batch (SparseAdam)
        self.embed = nn.Embedding(cfg.buckets, cfg.dim, padding_idx=0, sparse=True)
        self.pos = nn.Parameter(torch.zeros(cfg.max_words, cfg.dim))
        self.bigram = nn.EmbeddingBag(cfg.buckets, cfg.dim, mode="mean", padding_idx=0, sparse=True)
        self.encoder = nn.ModuleList(
            nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 2 * cfg.dim, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.domain = nn.Linear(cfg.dim, len(DOMAINS))
        self.edu = nn.Linear(cfg.dim, 1)
        self.junk = nn.Linear(cfg.dim, 1)
        nn.init.normal_(self.embed.weight, std=0.1)
        nn.init.normal_(self.bigram.weight, std=0.1)

    def forward(self, ids, mask, bigrams, bigram_offsets) -> dict[str, torch.Tensor]:
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        for layer in self.encoder:
            x = layer(x, src_key_padding_mask=~mask)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1.0)
        h = self.norm(pooled + self.bigram(bigrams, bigram_offsets))
        return {"domain": self.domain(h), "edu": self.edu(h).squeeze(-1), "junk": self.junk(h).squeeze(-1)}

    @torch.no_grad()
    def predict(self, texts: Sequence[str], batch_size: int = 256) -> list[dict]:
        """``{"domain", "domain_p", "edu", "junk"}`` per text (edu in [0, 5], junk a probability)."""
        self.eval()
        out = []
        dev = self.embed.weight.device
        for i in range(0, len(texts), batch_size):
            x = {k: v.to(dev, non_blocking=True) for k, v in featurize(texts[i:i + batch_size], self.cfg).items()}
            with torch.autocast("cuda", torch.bfloat16, enabled=dev.type == "cuda"):
                y = {k: v.float() for k, v in self(**x).items()}
            p = y["domain"].softmax(-1)
            conf, cls = p.max(-1)
            edu = y["edu"].clamp(0, EDU_MAX)
            junk = y["junk"].sigmoid()
            out += [{"domain": DOMAINS[c], "domain_p": round(float(q), 4), "edu": round(float(e), 3),
                     "junk": round(float(j), 4)} for c, q, e, j in zip(cls.tolist(), conf.tolist(), edu.tolist(), junk.tolist())]
        return out

    def save(self, path: str | os.PathLike) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(p / "model.safetensors"))
        (p / "config.json").write_text(json.dumps({"tagger": asdict(self.cfg), "domains": list(DOMAINS)}, indent=2))


def load_tagger(path: str | os.PathLike) -> Tagger:
    p = Path(path)
    if not (p / "config.json").is_file() or not (p / "model.safetensors").is_file():
        raise ConfigError(f"{p}: not a tagger folder (config.json + model.safetensors)")
    meta = json.loads((p / "config.json").read_text())
    if tuple(meta.get("domains", ())) != DOMAINS:
        raise ConfigError(f"{p}/config.json: domains {meta.get('domains')} differ from {list(DOMAINS)}")
    model = Tagger(TaggerConfig(**meta["tagger"]))
    model.load_state_dict(load_file(str(p / "model.safetensors")))
    return model.eval()


# ---- labels ---------------------------------------------------------------------------------------------
def check_label(rec: dict, where: str) -> dict:
    """A labelled record with its labels validated (missing labels are None); bad values raise ConfigError."""
    text = rec.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: a labelled record needs a non-empty string 'text'")
    dom, edu, junk = rec.get("domain"), rec.get("edu"), rec.get("junk")
    if dom is not None and dom not in DOMAINS:
        raise ConfigError(f"{where}: domain {dom!r} is not one of {', '.join(DOMAINS)}")
    if edu is not None and not (isinstance(edu, (int, float)) and 0 <= edu <= EDU_MAX):
        raise ConfigError(f"{where}: edu must be a number in [0, 5], got {edu!r}")
    if junk is not None and not (isinstance(junk, (bool, int, float)) and 0 <= float(junk) <= 1):
        raise ConfigError(f"{where}: junk must be 0/1 (or a probability), got {junk!r}")
    if dom is None and edu is None and junk is None:
        raise ConfigError(f"{where}: the record has none of the labels domain, edu, junk")
    return {"text": text, "domain": dom, "edu": None if edu is None else float(edu),
            "junk": None if junk is None else float(junk)}


def read_labels(paths: Sequence[str | os.PathLike]) -> list[dict]:
    return [check_label(rec, f"{p}:{n}") for p in paths for n, rec in iter_jsonl(p, "label file")]


def world_labels(world_dir: str | os.PathLike, extract=None, per_domain: int = 0, seed: int = 0) -> list[dict]:
    """Labels the embedded world knows: its text sources by kind, and its HTML pages (text from ``extract``,
    default the page's ``main_text`` or, for spam, its visible words) by kind, math and code markers.
    ``per_domain`` > 0 keeps at most that many records of each domain (a seeded sample; the world is
    mostly arithmetic)."""
    root = Path(world_dir)
    kinds = {"web": ("general", 1.0), "math": ("math", 4.0), "code": ("code", 4.0)}
    out = []
    for src, (dom, edu) in kinds.items():
        out += [{"text": r["text"], "domain": dom, "edu": edu, "junk": 0.0}
                for r in read_jsonl(root / "text" / f"{src}.train.jsonl")]
    for r in read_jsonl(root / "text" / "reasoning.train.jsonl"):
        out.append({"text": r["text"], "domain": r["kind"], "edu": 5.0, "junk": 0.0})
    for p in read_jsonl(root / "html" / "pages.jsonl"):
        if p["duplicate_of"] or p["near_duplicate_of"]:
            continue
        text = extract(p) if extract else p["main_text"]
        if p["kind"] == "spam":
            out.append({"text": text or _visible_words(p["html"]), "domain": "other", "edu": 0.0, "junk": 1.0})
        elif text.strip():
            dom = "code" if p["has_code"] else "math" if p["has_math"] else "general"
            out.append({"text": text, "domain": dom, "edu": 3.0 if dom != "general" else 1.0, "junk": 0.0})
    if per_domain > 0:
        rng = random.Random(seed)
        by: dict[str, list] = {}
        for r in out:
            by.setdefault(r["domain"], []).append(r)
        out = [r for d in sorted(by) for r in (rng.sample(by[d], per_domain) if len(by[d]) > per_domain else by[d])]
    return out


def _visible_words(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


# ---- training -------------------------------------------------------------------------------------------
def _targets(recs: list[dict]) -> dict[str, torch.Tensor]:
    dom = torch.tensor([DOMAINS.index(r["domain"]) if r["domain"] else -100 for r in recs])
    edu = torch.tensor([r["edu"] if r["edu"] is not None else math.nan for r in recs], dtype=torch.float32)
    junk = torch.tensor([r["junk"] if r["junk"] is not None else math.nan for r in recs], dtype=torch.float32)
    return {"domain": dom, "edu": edu, "junk": junk}


def _loss(y: dict, t: dict) -> torch.Tensor:
    loss = y["domain"].new_zeros(())
    if (t["domain"] >= 0).any():
        loss = loss + F.cross_entropy(y["domain"], t["domain"], ignore_index=-100)
    for k, fn in (("edu", lambda a, b: F.mse_loss(a, b) / 4.0), ("junk", F.binary_cross_entropy_with_logits)):
        ok = ~torch.isnan(t[k])
        if ok.any():
            loss = loss + fn(y[k][ok], t[k][ok])
    return loss


def evaluate(model: Tagger, recs: list[dict], train: list[dict]) -> dict:
    """Per head: the tagger's score and the baseline that always predicts the training majority (or mean)."""
    preds = model.predict([r["text"] for r in recs])
    out: dict = {"docs": len(recs)}
    d = [(p["domain"], r["domain"]) for p, r in zip(preds, recs) if r["domain"]]
    if d:
        major = max(DOMAINS, key=[r["domain"] for r in train].count)
        out["domain_acc"] = sum(a == b for a, b in d) / len(d)
        out["domain_majority_acc"] = sum(b == major for _, b in d) / len(d)
    e = [(p["edu"], r["edu"]) for p, r in zip(preds, recs) if r["edu"] is not None]
    if e:
        mean = float(np.mean([r["edu"] for r in train if r["edu"] is not None]))
        out["edu_mae"] = float(np.mean([abs(a - b) for a, b in e]))
        out["edu_mean_mae"] = float(np.mean([abs(mean - b) for _, b in e]))
    j = [(p["junk"] >= 0.5, r["junk"] >= 0.5) for p, r in zip(preds, recs) if r["junk"] is not None]
    if j:
        major = np.mean([r["junk"] >= 0.5 for r in train if r["junk"] is not None]) >= 0.5
        out["junk_acc"] = sum(a == b for a, b in j) / len(j)
        out["junk_majority_acc"] = sum(b == major for _, b in j) / len(j)
        pos = [a for a, b in j if b]
        out["junk_recall"] = sum(pos) / len(pos) if pos else None
    return out


def train_tagger(recs: list[dict], cfg: TaggerConfig | None = None, epochs: int = 3, batch_size: int = 32,
                 lr: float = 3e-3, holdout: float = 0.1, seed: int = 0, log=print) -> tuple[Tagger, dict]:
    """Train on ``recs`` (checked labelled records) less a held-out ``holdout`` share; returns the model and
    ``{"train_docs", "heldout": evaluate(...), "seconds"}``."""
    if len(recs) < 10:
        raise ConfigError(f"tagger training needs at least 10 labelled records, got {len(recs)}")
    cfg = cfg or TaggerConfig()
    torch.manual_seed(seed)
    order = list(range(len(recs)))
    random.Random(seed).shuffle(order)
    n_hold = max(1, int(len(recs) * holdout))
    held, train = [recs[i] for i in order[:n_hold]], [recs[i] for i in order[n_hold:]]
    model = Tagger(cfg)
    sparse = [model.embed.weight, model.bigram.weight]
    dense = [p for p in model.parameters() if all(p is not q for q in sparse)]
    opts = [torch.optim.SparseAdam(sparse, lr=lr), torch.optim.AdamW(dense, lr=lr, weight_decay=0.01)]
    steps = epochs * math.ceil(len(train) / batch_size)
    scheds = [torch.optim.lr_scheduler.OneCycleLR(o, max_lr=lr, total_steps=steps, pct_start=0.1,
                                                  cycle_momentum=False) for o in opts]
    t0, step = time.time(), 0
    rng = random.Random(seed + 1)
    for epoch in range(epochs):
        model.train()
        rng.shuffle(train)
        total = 0.0
        for i in range(0, len(train), batch_size):
            batch = train[i:i + batch_size]
            loss = _loss(model(**featurize([r["text"] for r in batch], cfg)), _targets(batch))
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o, sc in zip(opts, scheds):
                o.step()
                sc.step()
            total += float(loss.detach()) * len(batch)
            step += 1
        log(f"[tag-train] epoch {epoch + 1}/{epochs}: loss {total / len(train):.4f} ({time.time() - t0:.0f} s)")
    report = {"train_docs": len(train), "heldout": evaluate(model, held, train), "seconds": round(time.time() - t0, 1)}
    return model, report


# ---- CLI ------------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("out_dir", help="folder to write the tagger into (config.json, model.safetensors, report.json)")
    parser.add_argument("--labels", nargs="*", default=[], help="labelled JSONL files (text + domain/edu/junk)")
    parser.add_argument("--world", default=None, help="also train on the labels of an embedded world folder")
    parser.add_argument("--per-domain", type=int, default=1000,
                        help="world labels: at most this many records per domain (0 = all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--layers", type=int, default=TaggerConfig.layers, help="transformer layers (0 = bag only)")
    parser.add_argument("--dim", type=int, default=TaggerConfig.dim)
    parser.add_argument("--max-words", type=int, default=TaggerConfig.max_words)
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    recs = read_labels(args.labels)
    if args.world:
        recs += world_labels(args.world, per_domain=args.per_domain, seed=args.seed)
    cfg = TaggerConfig(dim=args.dim, layers=args.layers, max_words=args.max_words)
    model, report = train_tagger(recs, cfg, epochs=args.epochs, seed=args.seed)
    model.save(args.out_dir)
    (Path(args.out_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["heldout"], indent=2))
    return 0
