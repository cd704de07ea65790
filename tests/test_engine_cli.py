"""`openmimo generate` on a saved checkpoint: JSONL in (file and stdin), JSONL out, named errors."""

import io
import json
import sys

import pytest

from openmimo.cli import main
from openmimo.infer.oracle import generate_oracle
from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model
from openmimo.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tok = train_tokenizer(["the cat sat on the mat", "two plus two is four"] * 20, vocab_size=300)
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                     num_nextn_predict_layers=1, initializer_range=0.3)
    model = build_model(cfg, seed=0)
    path = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(path, tokenizer=tok)
    return path, model, tok


def test_generate_jsonl_file_to_file(ckpt, tmp_path):
    path, model, tok = ckpt
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "a", "prompt": "the cat"}) + "\n"
                   + json.dumps({"prompt_ids": [5, 6, 7], "n": 2, "temperature": 1.0, "seed": 3}) + "\n"
                   + json.dumps({"messages": [{"role": "user", "content": "two"}]}) + "\n")
    out = tmp_path / "out.jsonl"
    rc = main(["generate", "--model", str(path), "--input", str(inp), "--output", str(out), "--temperature", "0",
               "--max-new-tokens", "6", "--spec-k", "1", "--no-progress"])
    assert rc == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["index"]) for r in recs] == [("a", 0), ("1", 0), ("1", 1), ("2", 0)]
    ref, _ = generate_oracle(model, tok.encode("the cat"), 6, stop_ids=(tok.eos_id, tok.pad_id))
    assert recs[0]["tokens"] == ref and recs[0]["text"] == tok.decode(ref, skip_special_tokens=True)
    for r in recs:
        assert len(r["logprobs"]) == len(r["tokens"]) and r["finish_reason"] in ("stop", "length")


def test_generate_reads_stdin_and_names_bad_lines(ckpt, tmp_path, monkeypatch, capsys):
    path, _, _ = ckpt
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"prompt": "two"}) + "\n"))
    assert main(["generate", "--model", str(path), "--max-new-tokens", "3", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["index"] == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "ok"}) + "\n{oops\n")
    assert main(["generate", "--model", str(path), "--input", str(bad), "--no-progress"]) == 2
    assert f"{bad}:2" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path / "missing"), "--input", str(bad)]) == 2


def test_generate_compile_scope_reaches_the_engine(ckpt, tmp_path, monkeypatch):
    """--compile-scope step: the engine is built with it (here on the CPU, where nothing compiles unless asked)
    and writes the same greedy tokens as the default (block)."""
    from openmimo.infer import engine as engine_mod

    path, _, _ = ckpt
    scopes = []
    real = engine_mod.Engine.__init__

    def spy(self, *a, **kw):
        scopes.append(kw.get("compile_scope"))
        real(self, *a, **kw)

    monkeypatch.setattr(engine_mod.Engine, "__init__", spy)
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "a", "prompt": "the cat"}) + "\n")
    outs = []
    for extra in ([], ["--compile-scope", "step"]):
        out = tmp_path / f"out{len(outs)}.jsonl"
        assert main(["generate", "--model", str(path), "--input", str(inp), "--output", str(out), "--temperature",
                     "0", "--max-new-tokens", "6", "--no-progress", *extra]) == 0
        outs.append([json.loads(line)["tokens"] for line in out.read_text().splitlines()])
    assert scopes == ["block", "step"] and outs[0] == outs[1]
