"""The OpenAI-compatible server, driven by the official `openai` client against a live uvicorn on
127.0.0.1: completions and chat (plain and streaming) equal the engine's greedy output, bad requests
get 4xx JSON errors and the server stays up, 64 concurrent streaming clients all complete."""

import asyncio

import httpx
import openai
import pytest

from openmimo.infer.oracle import generate_oracle

from conftest import TINY_TEXTS, serve_tiny


@pytest.fixture(scope="module")
def served():
    with serve_tiny() as (model, tok, url, aengine):
        yield model, tok, url


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def greedy_text(model, tok, ids, n):
    out, _ = generate_oracle(model, ids, n, stop_ids=(tok.eos_id, tok.pad_id))
    return tok.decode(out, skip_special_tokens=True), out


def test_models_health_and_completion(served):
    model, tok, url = served
    c = client(url)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    r = c.completions.create(model="tiny", prompt="the cat", max_tokens=8, temperature=0, logprobs=1)
    text, ids = greedy_text(model, tok, tok.encode("the cat"), 8)
    assert r.choices[0].text == text and r.usage.completion_tokens == len(ids)
    assert len(r.choices[0].logprobs.token_logprobs) == len(ids)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_chat_plain_and_streaming_agree(served):
    model, tok, url = served
    c = client(url)
    msgs = [{"role": "user", "content": "two plus two"}]
    ids, _ = tok.render_chat(msgs, add_generation_prompt=True)
    text, _ = greedy_text(model, tok, ids, 10)
    r = c.chat.completions.create(model="tiny", messages=msgs, max_tokens=10, temperature=0)
    assert r.choices[0].message.content == text.strip() or r.choices[0].message.content == text
    chunks = list(c.chat.completions.create(model="tiny", messages=msgs, max_tokens=10, temperature=0, stream=True))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == text and chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_bad_requests_get_4xx_and_server_stays_up(served):
    _, _, url = served
    c = client(url)
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="gpt-17", prompt="hi", max_tokens=3)
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="tiny", prompt="hi", max_tokens=-1)
    with pytest.raises(openai.BadRequestError, match="context"):
        c.completions.create(model="tiny", prompt="the cat " * 80, max_tokens=3)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="tiny", messages="not a list", max_tokens=3)
    r = httpx.post(url + "/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    assert httpx.get(url + "/health").status_code == 200
    assert c.completions.create(model="tiny", prompt="hello", max_tokens=2, temperature=0).choices[0].text is not None


def test_64_concurrent_streaming_clients(served):
    model, tok, url = served
    prompts = [TINY_TEXTS[i % 4].split()[0] + " " + str(i % 7) for i in range(64)]
    expected = {p: greedy_text(model, tok, tok.encode(p), 6)[0] for p in set(prompts)}
    assert sum(bool(t) for t in expected.values()) >= len(expected) // 2  # the texts compared are not empty

    async def one(ac, p):
        stream = await ac.completions.create(model="tiny", prompt=p, max_tokens=6, temperature=0, stream=True)
        parts, reason = [], None
        async for ch in stream:
            parts.append(ch.choices[0].text)
            reason = ch.choices[0].finish_reason or reason
        return "".join(parts), reason

    async def main():
        ac = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                                http_client=openai.DefaultAsyncHttpxClient(limits=httpx.Limits(max_connections=100)))
        return await asyncio.gather(*(one(ac, p) for p in prompts))

    results = asyncio.run(main())
    for p, (text, reason) in zip(prompts, results):
        assert text == expected[p] and reason in ("stop", "length")


def test_metrics_and_seeded_sampling(served):
    _, _, url = served
    c = client(url)
    a = c.completions.create(model="tiny", prompt="a quick", max_tokens=6, temperature=1.0, seed=7, n=2)
    b = c.completions.create(model="tiny", prompt="a quick", max_tokens=6, temperature=1.0, seed=7, n=2)
    assert [x.text for x in a.choices] == [x.text for x in b.choices] and len(a.choices) == 2
    m = httpx.get(url + "/metrics").text
    for name in ("openmimo_generated_tokens_total", "openmimo_queue_length", "openmimo_decode_tokens_per_second",
                 'openmimo_spec_acceptance_rate{depth="1"}'):
        assert name in m
