"""`openmimo synth`: rejection sampling through the real math reward against a stub OpenAI-compatible endpoint (counts
of kept / rejected and why, retries, duplicates, tokens, resume of a killed run) and against our own `openmimo serve`."""

import json

import pytest

from openmimo.config import ConfigError, load
from openmimo.data.synth import SynthConfig, main


def _stub_app(calls):
    """Answers 'What is a + b?' by a's residue mod 5: 0 right (always the same text), 1 wrong, 2 without a reasoning
    block, 3 right but different each time after one 500 error, 4 always a 500 error."""
    import re

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "stub", "object": "model", "created": 0, "owned_by": "test"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        a, b = map(int, re.search(r"What is (\d+) \+ (\d+)\?", body["messages"][-1]["content"]).groups())
        calls[a] = calls.get(a, 0) + 1
        kind = a % 5
        if kind == 4 or (kind == 3 and calls[a] == 1):
            return JSONResponse({"error": {"message": "overloaded", "type": "server_error"}}, status_code=500)
        if kind == 0:
            text = f"<think>\n{a} plus {b}.\n</think>\n\nThe answer is \\boxed{{{a + b}}}."
        elif kind == 1:
            text = f"<think>\nhmm\n</think>\n\nThe answer is \\boxed{{{a + b + 1}}}."
        elif kind == 2:
            text = f"The answer is \\boxed{{{a + b}}}."
        else:
            text = f"<think>\nattempt {calls[a]}: {a} + {b}\n</think>\n\nSo \\boxed{{{a + b}}}."
        return {"id": "x", "object": "chat.completion", "created": 0, "model": "stub",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}}

    return app


@pytest.fixture
def stub():
    from openmimo.infer.server import start_in_thread

    calls = {}
    server, url = start_in_thread(_stub_app(calls))
    yield url, calls
    server.should_exit = True


def _problems(path, n=10):
    path.write_text("".join(json.dumps({"id": a, "problem": f"What is {a} + 2?", "answer": str(a + 2)}) + "\n"
                            for a in range(n)) + json.dumps({"problem": "What is 0 + 2?", "answer": "2"}) + "\n")
    return path


def _cfg(url, tmp_path, extra=()):
    return load(SynthConfig, None, [f"endpoint={url}/v1", f"problems={_problems(tmp_path / 'p.jsonl')}",
                                    "samples=3", "keep_per_problem=2", "retries=1", "backoff_s=0.01",
                                    "reward_workers=1", f"output={tmp_path / 'out' / 'sft.jsonl'}",
                                    f"pretrain_output={tmp_path / 'out' / 'docs.jsonl'}", *extra])


def test_rejection_sampling_counts_and_outputs(stub, tmp_path):
    url, calls = stub
    counts = main(_cfg(url, tmp_path))
    # problems 0..9 (and a duplicate of problem 0, read once): 2 of each kind; 3 samples each
    assert counts["input"] == {"read": 11, "duplicate_problems": 1, "math": 10, "code": 0}
    assert counts["failed_requests"] == 6  # kind 4: 3 samples x (1 try + 1 retry), all failing
    assert counts["retries"] == 6 + 2  # kind 4's six, and the one failure of each kind-3 problem
    assert counts["responses"] == 24 and counts["prompt_tokens"] == 240 and counts["completion_tokens"] == 168
    assert counts["rejected"] == {"wrong answer": 6, "no closed reasoning block": 6}
    assert counts["verified"] == 12 and counts["duplicates"] == 4 and counts["surplus"] == 2
    assert counts["kept"] == 2 * 1 + 2 * 2  # kind 0: one distinct text; kind 3: keep_per_problem = 2
    recs = [json.loads(x) for x in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    assert len(recs) == 6 and sorted(r["source"]["id"] for r in recs) == [0, 3, 3, 5, 8, 8]
    r0 = next(r for r in recs if r["source"]["id"] == 0)
    assert r0["messages"][0] == {"role": "user", "content": "What is 0 + 2?\nPlease reason step by step, and put "
                                                            "your final answer within \\boxed{}."}
    assert r0["messages"][1] == {"role": "assistant", "reasoning_content": "0 plus 2.",
                                 "content": "The answer is \\boxed{2}."}
    docs = [json.loads(x)["text"] for x in (tmp_path / "out" / "docs.jsonl").read_text().splitlines()]
    assert "Problem: What is 0 + 2?\nSolution: <think>\n0 plus 2.\n</think>\n\nThe answer is \\boxed{2}." in docs
    # the SFT stage reads the output as it is
    from openmimo.train.sft_data import record_messages

    assert all(record_messages(r, "x") for r in recs)


def test_a_killed_run_continues_from_its_output(stub, tmp_path):
    url, calls = stub
    first = main(_cfg(url, tmp_path, ["limit=4"]))
    assert first["problems"] == 4 and first["kept"] == 1 + 2  # problems 0 and 3
    out = tmp_path / "out" / "sft.jsonl"
    with open(out, "a") as f:
        f.write('{"messages": [{"role": "user", "con')  # a line cut by a kill
    n_calls = sum(calls.values())
    again = main(_cfg(url, tmp_path))
    assert again["skipped_done"] == 4 and again["problems"] == 10
    # only the 6 problems not done: 3 samples each, + 3 retries of each kind-4 problem (4, 9) + kind 3's one (8)
    assert sum(calls.values()) - n_calls == 6 * 3 + 2 * 3 + 1
    recs = [json.loads(x) for x in out.read_text().splitlines()]  # the cut line is gone, every line parses
    assert len(recs) == 6 and len({(r["source"]["key"], r["source"]["sample"]) for r in recs}) == 6


def test_against_our_own_server(tmp_path):
    """The real path: `openmimo serve`'s app with the openai client; a random model's answers are all rejected,
    each for a reason, and every request and token is counted."""
    from openmimo.infer.async_engine import AsyncEngine
    from openmimo.infer.engine import Engine
    from openmimo.infer.server import create_app, start_in_thread
    from openmimo.model.config import MiMoConfig
    from openmimo.model.mimo import build_model
    from openmimo.tokenizer import train_tokenizer

    tok = train_tokenizer([f"What is {a} + 2? <think> {a + 2} </think> \\boxed{{{a + 2}}}" for a in range(50)],
                          vocab_size=300)
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                     num_nextn_predict_layers=0, eos_token_id=tok.eos_id)
    engine = AsyncEngine(Engine(build_model(cfg, seed=0), max_slots=8, max_len=128))
    server, url = start_in_thread(create_app(engine, tok, "tiny"))
    try:
        counts = main(load(SynthConfig, None, [f"endpoint={url}/v1", f"problems={_problems(tmp_path / 'p.jsonl', 3)}",
                                               "samples=2", "max_tokens=8", "reward_workers=1", "retries=0",
                                               "require_reasoning=false", f"output={tmp_path / 'o.jsonl'}"]))
    finally:
        server.should_exit = True
        engine.shutdown()
    assert counts["failed_requests"] == 0 and counts["responses"] == 6 and counts["completion_tokens"] > 0
    assert counts["verified"] + sum(counts["rejected"].values()) == 6 and counts["kept"] == counts["verified"]


def test_bad_problems_and_config_are_named(tmp_path):
    from openmimo.data.synth import load_synth_problems

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "x", "answer": 1}) + "\n" + json.dumps({"problem": "y"}) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2"):
        load_synth_problems(str(bad), "math")
    with pytest.raises(ConfigError, match="problems"):
        load(SynthConfig, None, [])
    with pytest.raises(ConfigError, match="samples"):
        load(SynthConfig, None, ["problems=x", "samples=0"])
