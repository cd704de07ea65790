"""The server under hostile use, through real HTTP clients against a live uvicorn on 127.0.0.1: dropped
clients have their generation aborted, a slow tokenisation never blocks other requests, oversized
bodies get 413, every bad field gets an OpenAI-style 4xx JSON error naming it, unexpected failures
are JSON 500s (or an in-band error event plus [DONE] in a stream), and `serve --port 99999` is a
one-line usage error."""

import asyncio
import json
import math
import threading
import time

import httpx
import openai
import pytest
import torch

from openmimo.cli import main
from openmimo.infer.async_engine import AsyncEngine
from openmimo.infer.engine import Engine
from openmimo.infer.server import create_app, start_in_thread
from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model
from openmimo.tokenizer import ENDOFTEXT, train_tokenizer

TEXTS = ["the cat sat on the mat", "two plus two is four", "a quick brown fox jumps", "hello world"] * 20
LONG = 150  # max_tokens of the requests that are dropped
STEP_SLEEP = 0.01  # seconds added to every engine step, so that a full generation takes LONG * 10 ms
SLOW_ENCODE = 1.5  # seconds that encoding a text of over 3,000 characters takes
MAX_BODY = 64 * 1024


class SlowTokenizer:
    """The real tokenizer, with a slow encode of long texts and a decode that fails on demand."""

    def __init__(self, tok):
        self._tok = tok
        self.fail_decode = False

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def encode(self, text):
        if len(text) > 3000:
            time.sleep(SLOW_ENCODE)
        return self._tok.encode(text)

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids, skip_special_tokens=False):
        if self.fail_decode:
            raise RuntimeError("decoder exploded")
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)


@pytest.fixture(scope="module")
def served():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                     num_nextn_predict_layers=0, initializer_range=0.3, tie_word_embeddings=False,
                     eos_token_id=tok.eos_id)
    model = build_model(cfg, seed=0)
    with torch.no_grad():  # logit 0 for the stop tokens: greedy decoding runs to max_tokens
        for t in {tok.eos_id, tok.token_to_id(ENDOFTEXT), tok.pad_id} - {None}:
            model.lm_head.weight[t] = 0.0
    engine = Engine(model, max_slots=16, max_len=256, spec_k=0)
    step = engine.step

    def slow_step():
        time.sleep(STEP_SLEEP)
        return step()
    engine.step = slow_step
    aengine = AsyncEngine(engine)
    slow = SlowTokenizer(tok)
    server, url = start_in_thread(create_app(aengine, slow, "tiny", max_body_bytes=MAX_BODY))
    yield aengine, slow, url
    server.should_exit = True
    aengine.shutdown()


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def wait_idle(aengine, timeout=5.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        m = aengine.metrics()
        if m["running"] == 0 and m["waiting"] == 0:
            return time.time() - t0
        time.sleep(0.01)
    raise AssertionError(f"the engine still runs {aengine.metrics()['running']} sequences")


def test_dropped_streams_stop_generating(served):
    aengine, _, url = served
    body = {"model": "tiny", "prompt": "the cat", "max_tokens": LONG, "temperature": 0}
    full = client(url).completions.create(**body)
    assert full.choices[0].finish_reason == "length" and full.usage.completion_tokens == LONG  # no early stop
    before = aengine.metrics()["generated_tokens"]

    async def drop_after_two_chunks(ac):
        async with ac.stream("POST", url + "/v1/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data: ")
                if seen == 2:
                    return  # leaving the block closes the connection mid-stream

    async def main_():
        async with httpx.AsyncClient(timeout=30) as ac:
            await asyncio.gather(*(drop_after_two_chunks(ac) for _ in range(8)))
    asyncio.run(main_())
    wait_idle(aengine)
    generated = aengine.metrics()["generated_tokens"] - before
    assert generated < 8 * 20, f"{generated} tokens generated for 8 dropped streams (all of them: {8 * LONG})"
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    assert client(url).completions.create(model="tiny", prompt="hello", max_tokens=3, temperature=0).choices


def test_dropped_plain_request_stops_generating(served):
    aengine, _, url = served
    before = aengine.metrics()["generated_tokens"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json={"prompt": "the cat", "max_tokens": LONG, "temperature": 0},
                   timeout=0.3)
    wait_idle(aengine)
    generated = aengine.metrics()["generated_tokens"] - before
    assert generated < LONG * 2 // 3, f"{generated} of {LONG} tokens generated after the client left"


def test_health_answers_while_a_big_prompt_is_tokenised(served):
    _, _, url = served
    result = {}

    def big():
        result["r"] = httpx.post(url + "/v1/completions", json={"prompt": "the cat " * 500, "max_tokens": 2},
                                 timeout=30)
    t = threading.Thread(target=big)
    t.start()
    time.sleep(0.3)  # the big prompt is being encoded now (it takes SLOW_ENCODE seconds)
    t0 = time.time()
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    waited = time.time() - t0
    t.join()
    assert waited < 0.5, f"/health took {waited:.2f}s while a prompt was tokenised"
    r = result["r"]
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    t0 = time.time()  # a text that cannot fit the context is refused without tokenising it
    r = httpx.post(url + "/v1/completions", json={"prompt": "the cat " * 7000, "max_tokens": 2}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert time.time() - t0 < SLOW_ENCODE


def test_oversized_body_gets_413(served):
    _, _, url = served
    big = json.dumps({"prompt": "x" * (MAX_BODY + 10), "max_tokens": 1}).encode()
    r = httpx.post(url + "/v1/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "request_too_large" and str(MAX_BODY) in err["message"]

    def chunked():  # no Content-Length: the limit holds on the bytes read
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]
    r = httpx.post(url + "/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert httpx.get(url + "/health").status_code == 200


BAD_COMPLETIONS = [
    ({"top_p": math.nan}, "top_p"), ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"),
    ({"temperature": math.nan}, "temperature"), ({"temperature": math.inf}, "temperature"),
    ({"temperature": -1}, "temperature"), ({"temperature": True}, "temperature"), ({"temperature": "hot"}, "temperature"),
    ({"top_k": -1}, "top_k"), ({"top_k": 2.5}, "top_k"), ({"top_k": False}, "top_k"),
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": math.nan}, "max_tokens"), ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": 1e300}, "max_tokens"), ({"n": 0}, "n"), ({"n": 17}, "n"), ({"n": 1.5}, "n"),
    ({"logprobs": -1}, "logprobs"), ({"logprobs": True}, "logprobs"), ({"logprobs": math.nan}, "logprobs"),
    ({"seed": 1.5}, "seed"), ({"seed": True}, "seed"), ({"seed": -1}, "seed"), ({"seed": 2**70}, "seed"),
    ({"presence_penalty": math.nan}, "presence_penalty"), ({"frequency_penalty": 3}, "frequency_penalty"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"stream": "yes"}, "stream"),
    ({"stop_token_ids": [True]}, "stop_token_ids"), ({"stop_token_ids": [10**6]}, "stop_token_ids"),
    ({"stop": 5}, "stop"), ({"prompt": [1, True]}, "prompt"), ({"prompt": [[1, 2], [10**6]]}, "prompt"),
    ({"prompt": ""}, "prompt"), ({"prompt": 3}, "prompt"),
]


@pytest.mark.parametrize("bad, param", BAD_COMPLETIONS)
def test_bad_completion_fields_are_named_400s(served, bad, param):
    _, _, url = served
    for stream in (False, True):
        body = {"model": "tiny", "prompt": "the cat", "max_tokens": 3, **bad}
        if "stream" not in bad:
            body["stream"] = stream
        r = httpx.post(url + "/v1/completions", content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == 400, (bad, r.status_code, r.text)
        err = r.json()["error"]
        assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]
        assert set(err) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("bad, param", [
    ({"top_p": 2.0}, "top_p"), ({"temperature": -0.5}, "temperature"), ({"logprobs": 3}, "logprobs"),
    ({"top_logprobs": 99}, "top_logprobs"), ({"max_completion_tokens": -5}, "max_completion_tokens"),
    ({"messages": ["hello"]}, "messages"), ({"messages": [{"role": "user", "content": 5}]}, "messages"),
])
def test_bad_chat_fields_through_the_openai_client(served, bad, param):
    _, _, url = served
    kw = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **bad}
    with pytest.raises(openai.BadRequestError) as e:
        client(url).chat.completions.create(**kw)
    err = e.value.body.get("error", e.value.body)
    assert err["param"] == param and err["type"] == "invalid_request_error"


@pytest.mark.parametrize("field", ["top_p", "temperature", "max_tokens", "seed"])
def test_nan_chat_fields_are_400s(served, field):
    _, _, url = served
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, field: math.nan}
    for stream in (False, True):  # json.dumps writes NaN, as a hostile client does (the openai client refuses to)
        r = httpx.post(url + "/v1/chat/completions", content=json.dumps({**body, "stream": stream}),
                       headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text


def test_unexpected_failures_are_json_500_and_streams_end_with_an_error_event(served):
    _, slow, url = served
    body = {"model": "tiny", "prompt": "the cat", "max_tokens": 4, "temperature": 0}
    slow.fail_decode = True
    try:
        r = httpx.post(url + "/v1/completions", json=body, timeout=30)
        with httpx.stream("POST", url + "/v1/chat/completions", timeout=30,
                          json={**body, "prompt": None, "messages": [{"role": "user", "content": "hi"}],
                                "stream": True}) as s:
            lines = [line for line in s.iter_lines() if line.startswith("data: ")]
    finally:
        slow.fail_decode = False
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert "decoder exploded" in r.json()["error"]["message"]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][len("data: "):])
    assert last["error"]["type"] == "server_error" and "decoder exploded" in last["error"]["message"]
    unknown = httpx.get(url + "/v1/nothing-here")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "invalid_request_error"
    assert client(url).completions.create(**body).choices[0].finish_reason == "length"  # still serving


def test_serve_bad_port_is_a_one_line_usage_error(capsys, tmp_path):
    assert main(["serve", "--model", str(tmp_path), "--port", "99999"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--port 99999" in err and "Traceback" not in err
