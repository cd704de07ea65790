"""Shared fixtures."""

import contextlib
import json

import pytest

from openmimo.data.shards import tokenize_to_shards
from openmimo.infer.async_engine import AsyncEngine
from openmimo.infer.engine import Engine
from openmimo.infer.server import create_app, start_in_thread
from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model
from openmimo.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def tiny_math_ckpt(tmp_path_factory):
    """A tiny random MiMo checkpoint with a tokenizer trained on addition text (``root/base``) and
    12 math problems ``What is a + 1?`` (levels 1 and 2) in ``root/train.jsonl``.  Read-only."""
    from openmimo.model.config import MiMoConfig
    from openmimo.model.mimo import build_model
    from openmimo.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tiny_math")
    texts = [f"Problem: What is {a} + {b}?\nSolution: {a} + {b} = {a + b}.\nThe answer is \\boxed{{{a + b}}}."
             for a in range(20) for b in range(10)]
    tok = train_tokenizer(texts, vocab_size=300)
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                     num_nextn_predict_layers=0, eos_token_id=tok.eos_id)
    build_model(cfg, seed=0).save_pretrained(root / "base", tokenizer=tok)
    probs = [{"problem": f"What is {a} + 1?", "answer": str(a + 1), "level": 1 + a % 2} for a in range(12)]
    (root / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probs))
    return root


@pytest.fixture(scope="session")
def tiny_mtp_base(tmp_path_factory):
    """A tiny random MiMo checkpoint with one MTP layer (``root/base``) and its addition text tokenised into
    ``root/shards``: what mtp-extend starts from.  Read-only."""
    root = tmp_path_factory.mktemp("tiny_mtp")
    texts = [f"Problem: What is {a} + {b}? Solution: {a + b}." for a in range(30) for b in range(10)]
    tok = train_tokenizer(texts, vocab_size=300)
    (root / "t.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tokenize_to_shards([root / "t.jsonl"], tok, root / "shards")
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                     num_nextn_predict_layers=1, eos_token_id=tok.eos_id)
    build_model(cfg, seed=0).save_pretrained(root / "base", tokenizer=tok)
    return root


TINY_TEXTS = ["the cat sat on the mat", "two plus two is four", "a quick brown fox jumps", "hello world"] * 20


@contextlib.contextmanager
def serve_tiny(spec_k: int = 1):
    """A tiny random model with one MTP layer behind a live server on 127.0.0.1: yields (model, tok, url, aengine)."""
    tok = train_tokenizer(TINY_TEXTS, vocab_size=300)
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                     num_nextn_predict_layers=1, initializer_range=0.3, eos_token_id=tok.eos_id)
    model = build_model(cfg, seed=0)
    aengine = AsyncEngine(Engine(model, max_slots=16, max_len=64, spec_k=spec_k))
    server, url = start_in_thread(create_app(aengine, tok, "tiny"))
    try:
        yield model, tok, url, aengine
    finally:
        server.should_exit = True
        aengine.shutdown()
