"""Token shards: write tokenised documents to memory-mappable files; read them back as packed batches.

A shard folder holds::

    shard_00000.bin        the tokens of whole documents, back to back (uint16 if vocab <= 65536, else uint32)
    shard_00000.idx.npy    int64 document start offsets in that shard, plus the end (len = docs + 1)
    ...
    meta.json              format, vocab_size, dtype, num_tokens, num_docs, per-shard counts, source stats

Documents never straddle shards.  Files are written under temporary names and renamed; ``meta.json``
is written last, so a folder without it is incomplete and is refused by the reader.

:class:`PackedBatches` reads one or more folders as one token stream, cut into ``chunk_tokens``
chunks whose order is reshuffled every epoch from a seed (``shuffle=False`` keeps file order).
Sample ``j`` of the stream is tokens ``[cursor + j*L, cursor + (j+1)*L)`` of the endless,
epoch-after-epoch stream, so the context length ``L`` may change from one call to the next.
``position_ids`` restart at 0 at every document start, at the start of every sequence (the rest of a
cut document starts again at 0) and at every seam where two non-adjacent pieces of the stream meet.
``labels`` is a copy of ``input_ids`` (the model shifts).  With ``world_size`` W, each call takes
W * batch_size sequences from the stream and rank r gets rows ``[r*batch_size, (r+1)*batch_size)``;
the state is one integer cursor, so :meth:`PackedBatches.state_dict` resumes at the exact sample.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from openmimo.config import ConfigError

FORMAT = "openmimo-shards-v1"
DEFAULT_TOKENS_PER_SHARD = 1 << 26  # 64M tokens: 128 MB as uint16


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _replace_atomically(src: Path, dst: Path) -> None:
    """Move finished folder ``src`` to ``dst`` (an older ``dst`` is removed after the move)."""
    old = None
    if dst.exists():
        old = dst.with_name(dst.name + f".old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_shards(docs: Iterable[Sequence[int]], out_dir: str | os.PathLike, vocab_size: int,
                 tokens_per_shard: int = DEFAULT_TOKENS_PER_SHARD, dtype=None, extra_meta: dict | None = None,
                 overwrite: bool = False) -> dict:
    """Write ``docs`` (lists of token ids, written as given) into a shard folder; returns the meta dict.

    The folder is built next to ``out_dir`` and renamed into place when complete.  An existing
    ``out_dir`` is replaced only with ``overwrite=True``.  Empty documents are skipped and counted.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass overwrite=True to replace it)")
    dtype = np.dtype(dtype) if dtype is not None else dtype_for_vocab(vocab_size)
    if np.iinfo(dtype).max < vocab_size - 1:
        raise ValueError(f"dtype {dtype} cannot hold token ids up to {vocab_size - 1}")
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards, buf, starts, n_tok, n_docs, skipped = [], [], [0], 0, 0, 0

    def flush():
        name = f"shard_{len(shards):05d}"
        arr = np.concatenate(buf).astype(dtype, copy=False) if buf else np.zeros(0, dtype)
        arr.tofile(tmp / f"{name}.bin")
        np.save(tmp / f"{name}.idx.npy", np.asarray(starts, dtype=np.int64))
        shards.append({"name": name, "tokens": int(arr.size), "docs": len(starts) - 1})
        buf.clear()
        del starts[1:]

    try:
        for doc in docs:
            a = np.asarray(doc, dtype=np.int64)
            if a.size == 0:
                skipped += 1
                continue
            if a.min() < 0 or a.max() >= vocab_size:
                raise ValueError(f"document {n_docs + skipped}: token id out of range [0, {vocab_size})")
            if buf and starts[-1] + a.size > tokens_per_shard:
                flush()
            buf.append(a)
            starts.append(starts[-1] + a.size)
            n_tok += a.size
            n_docs += 1
        if buf or not shards:
            flush()
        meta = {"format": FORMAT, "vocab_size": int(vocab_size), "dtype": dtype.name, "num_tokens": int(n_tok),
                "num_docs": n_docs, "skipped_empty_docs": skipped, "shards": shards, **(extra_meta or {})}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written folder behind
        raise
    _replace_atomically(tmp, out)
    return meta


def iter_jsonl_field(paths: Sequence[str | os.PathLike], field: str, stats: dict) -> Iterator[str]:
    """Yield ``rec[field]`` of every record; a malformed line raises one ConfigError naming file and line.

    Counts go to ``stats``: ``docs_read``, ``dropped_empty`` (empty or whitespace-only text),
    ``blank_lines``.
    """
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise ConfigError(f"{p}: corpus file not found")
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    stats["blank_lines"] = stats.get("blank_lines", 0) + 1
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{p}:{lineno}: malformed JSON ({e.msg})") from None
                if not isinstance(rec, dict) or not isinstance(rec.get(field), str):
                    raise ConfigError(f"{p}:{lineno}: expected an object with a string field '{field}'")
                stats["docs_read"] = stats.get("docs_read", 0) + 1
                if not rec[field].strip():
                    stats["dropped_empty"] = stats.get("dropped_empty", 0) + 1
                    continue
                yield rec[field]


def tokenize_to_shards(jsonl_paths: Sequence[str | os.PathLike] | str | os.PathLike, tokenizer, out_dir,
                       field: str = "text", tokens_per_shard: int = DEFAULT_TOKENS_PER_SHARD, append_eos: bool = True,
                       batch_docs: int = 512, overwrite: bool = False) -> dict:
    """Tokenise the ``field`` of JSONL records (``eos`` appended to each) into a shard folder.

    Returns the meta dict, whose ``source`` entry counts docs read, kept and dropped (and why).
    An empty corpus (no document kept) is an error naming the files.
    """
    paths = [jsonl_paths] if isinstance(jsonl_paths, (str, os.PathLike)) else list(jsonl_paths)
    stats: dict = {"files": [str(p) for p in paths], "docs_read": 0, "dropped_empty": 0, "blank_lines": 0}
    eos = [tokenizer.eos_id] if append_eos else []

    stats["docs_kept"] = 0

    def docs():
        batch = []
        for text in iter_jsonl_field(paths, field, stats):
            batch.append(text)
            if len(batch) == batch_docs:
                stats["docs_kept"] += len(batch)
                yield from (ids + eos for ids in tokenizer.encode_batch(batch))
                batch = []
        if batch:
            stats["docs_kept"] += len(batch)
            yield from (ids + eos for ids in tokenizer.encode_batch(batch))

    # `stats` is filled while the documents are consumed, before write_shards writes meta.json
    meta = write_shards(docs(), out_dir, tokenizer.vocab_size, tokens_per_shard, extra_meta={"source": stats},
                        overwrite=overwrite)
    if meta["num_docs"] == 0:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise ConfigError(f"{', '.join(map(str, paths))}: no non-empty '{field}' documents")
    return meta


class TokenStream:
    """Shard folders as one stream of ``num_tokens`` tokens, cut into chunks reshuffled per epoch."""

    def __init__(self, paths, seed: int = 0, shuffle: bool = True, chunk_tokens: int = 32768):
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not paths:
            raise ConfigError("no shard folders given")
        self.tokens: list[np.ndarray] = []
        self.index: list[np.ndarray] = []
        self.vocab_size = 0
        for folder in map(Path, paths):
            meta_file = folder / "meta.json"
            if not folder.is_dir():
                raise ConfigError(f"{folder}: shard folder not found")
            if not meta_file.is_file():
                raise ConfigError(f"{folder}: not a shard folder (no meta.json; incomplete or empty)")
            try:
                meta = json.loads(meta_file.read_text())
                shard_list = meta["shards"]
                dtype = np.dtype(meta["dtype"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConfigError(f"{meta_file}: malformed shard metadata ({e})") from None
            self.vocab_size = max(self.vocab_size, int(meta.get("vocab_size", 0)))
            for s in shard_list:
                if s["tokens"] == 0:
                    continue
                bin_file, idx_file = folder / f"{s['name']}.bin", folder / f"{s['name']}.idx.npy"
                if not bin_file.is_file() or bin_file.stat().st_size != s["tokens"] * dtype.itemsize:
                    raise ConfigError(f"{bin_file}: missing or not {s['tokens']} tokens of {dtype.name}")
                self.tokens.append(np.memmap(bin_file, dtype=dtype, mode="r"))
                try:
                    self.index.append(np.load(idx_file, mmap_mode="r"))
                except (OSError, ValueError) as e:
                    raise ConfigError(f"{idx_file}: unreadable document index ({e})") from None
        self.num_tokens = int(sum(t.size for t in self.tokens))
        if self.num_tokens == 0:
            raise ConfigError(f"{', '.join(map(str, paths))}: shard folder(s) hold no tokens")
        self.offsets = np.cumsum([0] + [t.size for t in self.tokens])  # shard starts in the stream
        self.seed, self.shuffle = seed, shuffle
        self.chunk_tokens = max(1, int(chunk_tokens))
        self.num_chunks = -(-self.num_tokens // self.chunk_tokens)
        self._epoch_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(chunk order, stream start of each placed chunk) for ``epoch``."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            order = np.arange(self.num_chunks)
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.num_chunks)
            lens = np.minimum((order + 1) * self.chunk_tokens, self.num_tokens) - order * self.chunk_tokens
            self._epoch_cache = (epoch, order, np.concatenate([[0], np.cumsum(lens)]))
        return self._epoch_cache[1], self._epoch_cache[2]

    def _pieces(self, start: int, length: int):
        """Yield ``(source_start, n)`` contiguous pieces of the source covering stream ``[start, start+length)``."""
        pos, end = start, start + length
        while pos < end:
            epoch, off = divmod(pos, self.num_tokens)
            order, placed = self._epoch_order(epoch)
            k = int(np.searchsorted(placed, off, side="right")) - 1
            src = int(order[k]) * self.chunk_tokens + (off - int(placed[k]))
            n = min(end - pos, int(placed[k + 1]) - off)
            # split further at shard boundaries (documents never cross them, so they are doc starts anyway)
            while n > 0:
                s = int(np.searchsorted(self.offsets, src, side="right")) - 1
                m = min(n, int(self.offsets[s + 1]) - src)
                yield s, src - int(self.offsets[s]), m
                src, n, pos = src + m, n - m, pos + m

    def window(self, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and position ids of stream ``[start, start+length)`` (int64 arrays)."""
        ids = np.empty(length, dtype=np.int64)
        resets = np.zeros(length, dtype=bool)
        at, prev_end = 0, -1
        for s, lo, m in self._pieces(start, length):
            ids[at:at + m] = self.tokens[s][lo:lo + m]
            src = int(self.offsets[s]) + lo
            resets[at] = src != prev_end  # a seam between non-adjacent pieces (or the row start)
            prev_end = src + m
            idx = self.index[s]
            a, b = np.searchsorted(idx, [lo, lo + m])
            resets[at + np.asarray(idx[a:b], dtype=np.int64) - lo] = True
            at += m
        ar = np.arange(length)
        return ids, ar - np.maximum.accumulate(np.where(resets, ar, 0))


def to_batch(rows: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    ids = torch.from_numpy(np.stack([r[0] for r in rows]))
    pos = torch.from_numpy(np.stack([r[1] for r in rows]))
    return {"input_ids": ids, "position_ids": pos, "labels": ids.clone()}


class PackedBatches:
    """Fixed ``(batch, seq)`` batches of packed documents from shard folders; see the module docstring.

    ``next_batch(batch_size, seq_len)`` returns this rank's ``batch_size`` rows; iterating uses the
    ``batch_size``/``seq_len`` given here.  Every rank must make the same calls (same sizes).
    """

    def __init__(self, paths, batch_size: int | None = None, seq_len: int | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, chunk_tokens: int = 32768):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.stream = paths if isinstance(paths, TokenStream) else TokenStream(paths, seed, shuffle, chunk_tokens)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rank, self.world_size = rank, world_size
        self.cursor = 0  # stream tokens consumed by all ranks together

    @property
    def num_tokens(self) -> int:
        return self.stream.num_tokens

    @property
    def epoch(self) -> int:
        return self.cursor // self.stream.num_tokens

    def take(self, n_rows: int, seq_len: int, rows: range) -> list[tuple[np.ndarray, np.ndarray]]:
        """Advance by ``n_rows`` sequences; return the windows of the ``rows`` among them."""
        out = [self.stream.window(self.cursor + j * seq_len, seq_len) for j in rows]
        self.cursor += n_rows * seq_len
        return out

    def next_batch(self, batch_size: int | None = None, seq_len: int | None = None) -> dict[str, torch.Tensor]:
        b, L = batch_size or self.batch_size, seq_len or self.seq_len
        if not b or not L or b < 1 or L < 1:
            raise ValueError(f"batch_size and seq_len must be positive (got {b}, {L})")
        rows = range(self.rank * b, (self.rank + 1) * b)
        return to_batch(self.take(b * self.world_size, L, rows))

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"cursor": self.cursor, "num_tokens": self.stream.num_tokens, "seed": self.stream.seed,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("num_tokens") != self.stream.num_tokens or state.get("seed") != self.stream.seed:
            raise ValueError(f"data state is for {state.get('num_tokens')} tokens / seed {state.get('seed')}, "
                             f"these shards hold {self.stream.num_tokens} tokens / seed {self.stream.seed}")
        self.cursor = int(state["cursor"])
