"""Token shards: writer, packed reader (positions, ranks, resume, changing seq_len), mixture loader."""

import json

import numpy as np
import pytest
import torch

from openmimo.config import ConfigError
from openmimo.data.mixture_loader import MixtureLoader
from openmimo.data.shards import PackedBatches, tokenize_to_shards, write_shards
from openmimo.tokenizer import train_tokenizer

VOCAB = 1 << 20  # token = doc * 1000 + position: each token says where it came from


def _docs(n=60, seed=0, base=0):
    rng = np.random.default_rng(seed)
    return [[(base + d) * 1000 + i for i in range(int(rng.integers(1, 120)))] for d in range(n)]


def _oracle_positions(row):
    """Positions from the token values alone: 0 at a doc start or a discontinuity, else previous + 1."""
    pos = []
    for t, tok in enumerate(row):
        fresh = t == 0 or tok % 1000 == 0 or tok != row[t - 1] + 1
        pos.append(0 if fresh else pos[-1] + 1)
    return pos


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "a"
    write_shards(_docs(), out, vocab_size=VOCAB, tokens_per_shard=700)
    return out


def test_writer_layout_meta_and_dtype(shard_dir, tmp_path):
    meta = json.loads((shard_dir / "meta.json").read_text())
    docs = _docs()
    assert meta["num_docs"] == len(docs) and meta["num_tokens"] == sum(map(len, docs)) and meta["dtype"] == "uint32"
    assert len(meta["shards"]) > 3 and not list(shard_dir.parent.glob("a.tmp-*"))
    flat, at = [], 0
    for s in meta["shards"]:
        toks = np.fromfile(shard_dir / f"{s['name']}.bin", dtype=np.uint32)
        idx = np.load(shard_dir / f"{s['name']}.idx.npy")
        assert idx[0] == 0 and idx[-1] == toks.size == s["tokens"] and len(idx) == s["docs"] + 1
        assert all(toks[i] % 1000 == 0 for i in idx[:-1])  # documents start at the recorded offsets, never split
        assert toks.size <= 700 or s["docs"] == 1
        flat += toks.tolist()
    assert flat == [t for d in docs for t in d]
    small = write_shards([[1, 2, 3], [], [4]], tmp_path / "s", vocab_size=2048)
    assert small["dtype"] == "uint16" and small["skipped_empty_docs"] == 1 and small["num_tokens"] == 4
    assert write_shards([[1]], tmp_path / "big", vocab_size=151680)["dtype"] == "uint32"


def test_writer_refuses_bad_ids_and_existing_folder(shard_dir, tmp_path):
    with pytest.raises(ValueError, match="out of range"):
        write_shards([[1, 5000]], tmp_path / "x", vocab_size=4096)
    with pytest.raises(FileExistsError):
        write_shards([[1]], shard_dir, vocab_size=VOCAB)
    write_shards([[7, 8]], tmp_path / "y", vocab_size=16)
    assert write_shards([[9]], tmp_path / "y", vocab_size=16, overwrite=True)["num_tokens"] == 1
    assert json.loads((tmp_path / "y" / "meta.json").read_text())["num_tokens"] == 1


def test_unshuffled_stream_equals_data_and_positions(shard_dir):
    data = [t for d in _docs() for t in d]
    pb = PackedBatches(shard_dir, shuffle=False)
    got = []
    for L in (37, 64, 5, 128):  # the context length may change between calls
        b = pb.next_batch(3, L)
        assert b["input_ids"].shape == (3, L) and b["input_ids"].dtype == torch.long
        assert torch.equal(b["labels"], b["input_ids"])
        for row, pos in zip(b["input_ids"].tolist(), b["position_ids"].tolist()):
            assert pos == _oracle_positions(row)
            got += row
    n = len(got)
    assert got == (data * 2)[:n]


def test_shuffled_epochs_cover_every_token_once_with_correct_positions(shard_dir):
    data = [t for d in _docs() for t in d]
    pb = PackedBatches(shard_dir, seed=5, chunk_tokens=100)
    epochs = []
    for _ in range(2):
        b = pb.next_batch(1, len(data))
        row = b["input_ids"][0].tolist()
        assert sorted(row) == sorted(data)
        assert b["position_ids"][0].tolist() == _oracle_positions(row)
        epochs.append(row)
    assert epochs[0] != epochs[1] != data  # reshuffled every epoch
    again = PackedBatches(shard_dir, seed=5, chunk_tokens=100).next_batch(1, len(data))["input_ids"][0].tolist()
    assert again == epochs[0]
    assert PackedBatches(shard_dir, seed=6, chunk_tokens=100).next_batch(1, len(data))["input_ids"][0].tolist() != again


def test_document_split_across_sequences_restarts_at_zero(tmp_path):
    write_shards([list(range(1, 11))], tmp_path / "d", vocab_size=64)
    b = PackedBatches(tmp_path / "d", shuffle=False).next_batch(2, 4)
    assert b["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    c = PackedBatches(tmp_path / "d", shuffle=False).next_batch(1, 13)  # wraps into the next epoch
    assert c["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]]


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_the_global_batch(shard_dir, world):
    single = PackedBatches(shard_dir, seed=1, chunk_tokens=64)
    ranks = [PackedBatches(shard_dir, seed=1, chunk_tokens=64, rank=r, world_size=world) for r in range(world)]
    for b, L in [(2, 16), (1, 50), (3, 7)]:
        whole = single.next_batch(b * world, L)
        parts = [r.next_batch(b, L) for r in ranks]
        for key in ("input_ids", "position_ids", "labels"):
            assert torch.equal(torch.cat([p[key] for p in parts]), whole[key])
        assert not torch.equal(parts[0]["input_ids"], parts[1]["input_ids"])


def test_resume_gives_the_exact_same_samples(shard_dir):
    a = PackedBatches(shard_dir, seed=2, chunk_tokens=80, rank=1, world_size=2)
    for _ in range(7):
        a.next_batch(2, 33)
    state = json.loads(json.dumps(a.state_dict()))  # survives serialisation
    want = [a.next_batch(2, L) for L in (33, 33, 90)]
    b = PackedBatches(shard_dir, seed=2, chunk_tokens=80, rank=1, world_size=2)
    b.load_state_dict(state)
    got = [b.next_batch(2, L) for L in (33, 33, 90)]
    for w, g in zip(want, got):
        assert torch.equal(w["input_ids"], g["input_ids"]) and torch.equal(w["position_ids"], g["position_ids"])
    with pytest.raises(ValueError, match="seed"):
        PackedBatches(shard_dir, seed=3).load_state_dict(state)


def test_iteration_uses_constructor_sizes(shard_dir):
    it = iter(PackedBatches(shard_dir, batch_size=2, seq_len=8))
    assert next(it)["input_ids"].shape == (2, 8)
    with pytest.raises(ValueError):
        PackedBatches(shard_dir).next_batch()


def test_reader_errors_name_the_folder(shard_dir, tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        PackedBatches(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty"):
        PackedBatches(tmp_path / "empty")
    write_shards([[]], tmp_path / "zero", vocab_size=16)
    with pytest.raises(ConfigError, match="no tokens"):
        PackedBatches(tmp_path / "zero")
    write_shards([[1, 2, 3]], tmp_path / "cut", vocab_size=16)
    (tmp_path / "cut" / "shard_00000.bin").write_bytes(b"\x01\x00")
    with pytest.raises(ConfigError, match="shard_00000.bin"):
        PackedBatches(tmp_path / "cut")


# ---- tokenize_to_shards ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["What is 12 + 30? 12 + 30 = 42.", "A quiet morning in the garden."] * 30, vocab_size=300)


def _jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_tokenize_to_shards_appends_eos_and_counts(tok, tmp_path):
    f1 = _jsonl(tmp_path / "a.jsonl", [json.dumps({"text": "What is 1 + 2?"}), json.dumps({"text": "  "}), "",
                                       json.dumps({"text": "héllo", "id": 3})])
    f2 = _jsonl(tmp_path / "b.jsonl", [json.dumps({"text": "garden"})])
    meta = tokenize_to_shards([f1, f2], tok, tmp_path / "out")
    src = meta["source"]
    assert (src["docs_read"], src["docs_kept"], src["dropped_empty"], src["blank_lines"]) == (4, 3, 1, 1)
    b = PackedBatches(tmp_path / "out", shuffle=False).next_batch(1, meta["num_tokens"])
    expect = [i for t in ("What is 1 + 2?", "héllo", "garden") for i in tok.encode(t) + [tok.eos_id]]
    assert b["input_ids"][0].tolist() == expect
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["source"]["docs_kept"] == 3


@pytest.mark.parametrize("line, msg", [('{"text": "ok"', "malformed JSON"), ('{"body": "x"}', "string field 'text'"),
                                       ('["text"]', "string field")])
def test_tokenize_to_shards_bad_line_names_file_and_line(tok, tmp_path, line, msg):
    f = _jsonl(tmp_path / "c.jsonl", [json.dumps({"text": "fine"}), line])
    with pytest.raises(ConfigError, match=msg) as e:
        tokenize_to_shards([f], tok, tmp_path / "out")
    assert f"{f}:2:" in str(e.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))


def test_tokenize_to_shards_missing_or_empty_corpus(tok, tmp_path):
    with pytest.raises(ConfigError, match="nope.jsonl"):
        tokenize_to_shards([tmp_path / "nope.jsonl"], tok, tmp_path / "o1")
    f = _jsonl(tmp_path / "e.jsonl", [json.dumps({"text": ""})])
    with pytest.raises(ConfigError, match="no non-empty"):
        tokenize_to_shards(f, tok, tmp_path / "o2")


# ---- MixtureLoader --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    write_shards(_docs(80, seed=1, base=0), root / "math", vocab_size=VOCAB)
    write_shards(_docs(80, seed=2, base=500), root / "web", vocab_size=VOCAB)
    return {"math": root / "math", "web": root / "web"}


def test_mixture_matches_weights_and_rows_come_from_their_source(two_sources):
    m = MixtureLoader(two_sources, {"math": 0.7, "web": 0.3}, seed=0)
    for _ in range(50):
        b = m.next_batch(40, 8)
        for row, name in zip(b["input_ids"].tolist(), m.last_sources):
            assert all((t // 1000 < 500) == (name == "math") for t in row)
        for row, pos in zip(b["input_ids"].tolist(), b["position_ids"].tolist()):
            assert pos == _oracle_positions(row)
    frac = m.counts["math"] / 2000
    assert abs(frac - 0.7) < 0.03
    only = MixtureLoader(two_sources, {"math": 1.0}, seed=0)
    only.next_batch(10, 4)
    assert only.counts == {"math": 10, "web": 0}


def test_mixture_ranks_and_resume(two_sources):
    w = {"math": 0.5, "web": 0.5}
    single = MixtureLoader(two_sources, w, seed=4)
    ranks = [MixtureLoader(two_sources, w, seed=4, rank=r, world_size=2) for r in range(2)]
    for L in (8, 8, 30):
        whole = single.next_batch(6, L)
        parts = [r.next_batch(3, L) for r in ranks]
        assert torch.equal(torch.cat([p["input_ids"] for p in parts]), whole["input_ids"])
        assert torch.equal(torch.cat([p["position_ids"] for p in parts]), whole["position_ids"])
    state = json.loads(json.dumps(ranks[1].state_dict()))
    want = [ranks[1].next_batch(3, 16)["input_ids"] for _ in range(3)]
    fresh = MixtureLoader(two_sources, w, seed=4, rank=1, world_size=2)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, fresh.next_batch(3, 16)["input_ids"]) for a in want)


@pytest.mark.parametrize("weights, msg", [({"math": 0.5, "web": 0.4}, "sum to 1"), ({"math": 0.5, "code": 0.5}, "code"),
                                          ({"math": 1.5, "web": -0.5}, "non-negative")])
def test_mixture_bad_weights(two_sources, weights, msg):
    with pytest.raises(ConfigError, match=msg):
        MixtureLoader(two_sources, weights)


def test_mixture_missing_source_folder(two_sources, tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path / "gone")):
        MixtureLoader({**two_sources, "code": tmp_path / "gone"}, {"math": 1.0})
