"""Prompt log-probs, echo and top_logprobs through the server, driven by the `openai` client and by the exact
request lm-evaluation-harness's ``local-completions`` sends for loglikelihood; every number is checked against a
full forward of the model (the slow oracle); batched scoring equals one-by-one scoring; a list of prompts is
prefilled in one forward; vLLM's tokenizer endpoints."""

import httpx
import openai
import pytest
import torch

from openmimo.infer.oracle import generate_oracle
from openmimo.infer.scoring import score
from openmimo.model.config import MiMoConfig
from openmimo.model.mimo import build_model

from conftest import serve_tiny


@torch.no_grad()
def oracle_lp(model, ids):
    """(V-sized log-prob rows) of one sequence by a plain full forward: row i predicts token i+1."""
    return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)


@pytest.fixture(scope="module")
def served():
    with serve_tiny() as (model, tok, url, aengine):
        yield model, tok, url, aengine


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def test_batched_scoring_equals_the_oracle():
    cfg = MiMoConfig(vocab_size=53, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=64, num_nextn_predict_layers=0,
                     initializer_range=0.3)
    model = build_model(cfg, seed=1).eval()
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 53, (n,), generator=g).tolist() for n in (1, 9, 3, 17, 9, 2)]
    # a small batch budget and head piece: several forwards, several head pieces per forward
    got = score(model, seqs, top_n=3, max_batch_tokens=20, head_rows=5)
    for s, r in zip(seqs, got):
        assert r.token_logprobs[0] is None and r.top[0] is None and len(r.token_logprobs) == len(s)
        lp = oracle_lp(model, s)
        for i in range(1, len(s)):
            assert r.token_logprobs[i] == pytest.approx(lp[i - 1, s[i]].item(), abs=1e-5)
            v, k = lp[i - 1].topk(3)
            assert [t for t, _ in r.top[i]] == k.tolist()
            assert [x for _, x in r.top[i]] == pytest.approx(v.tolist(), abs=1e-5)
    assert score(model, seqs, top_n=0)[3].top == []
    with pytest.raises(ValueError):
        score(model, [[1, 2], []])


def test_echo_prompt_logprobs_with_max_tokens_0(served):
    model, tok, url, _ = served
    prompts = ["the cat sat on the mat", "two plus two"]
    r = client(url).completions.create(model="tiny", prompt=prompts, max_tokens=0, echo=True, logprobs=2,
                                       temperature=0)
    assert [c.index for c in r.choices] == [0, 1] and r.usage.completion_tokens == 0
    for text, c in zip(prompts, r.choices):
        ids = tok.encode(text)
        assert c.text == text and c.finish_reason == "length"
        lp = c.logprobs
        assert lp.tokens == [tok.decode([t]) for t in ids] and lp.token_logprobs[0] is None
        assert lp.top_logprobs[0] is None and lp.text_offset[0] == 0
        ref = oracle_lp(model, ids)
        for i in range(1, len(ids)):
            assert lp.token_logprobs[i] == pytest.approx(ref[i - 1, ids[i]].item(), abs=1e-4)
            best = ref[i - 1].topk(2)
            want = {}  # the 2 best and the token itself (always listed), by string (colliding strings: the best)
            for t, v in list(zip(best.indices.tolist(), best.values.tolist())) + [(ids[i], ref[i - 1, ids[i]].item())]:
                want[tok.decode([t])] = max(v, want.get(tok.decode([t]), -1e9))
            assert lp.top_logprobs[i] == pytest.approx(want, abs=1e-4)


def test_lm_eval_loglikelihood_request(served):
    """The body local-completions sends for loglikelihood (token-id prompts, max_tokens 1, logprobs 1, echo), read
    the way its parse_logprobs reads it: the continuation's summed log-prob and whether it is greedy."""
    model, tok, url, _ = served
    ctx, conts = tok.encode("the cat sat on"), [tok.encode(" the mat"), tok.encode(" two plus")]
    body = {"model": "tiny", "prompt": [ctx + c for c in conts], "temperature": 0, "max_tokens": 1, "logprobs": 1,
            "seed": 1234, "echo": True}
    out = httpx.post(url + "/v1/completions", json=body, timeout=60).json()
    choices = sorted(out["choices"], key=lambda c: c["index"])
    assert len(choices) == 2
    for c, cont in zip(choices, conts):
        seq = ctx + cont
        lps, tops = c["logprobs"]["token_logprobs"], c["logprobs"]["top_logprobs"]
        assert len(lps) == len(seq) + 1  # the prompt echoed, then the one generated token
        ref = oracle_lp(model, seq)
        want = sum(ref[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))
        assert sum(lps[len(ctx):-1]) == pytest.approx(want, abs=1e-4)
        greedy = all(ref[len(ctx) - 1 + j].argmax().item() == t for j, t in enumerate(cont))
        assert all(lp == max(top.values()) for lp, top in zip(lps[len(ctx):-1], tops[len(ctx):-1])) == greedy
        # the generated token is the greedy continuation of the whole sequence
        assert c["logprobs"]["tokens"][-1] == tok.decode([generate_oracle(model, seq, 1)[0][0]])


def test_generated_tokens_get_alternatives_and_chat_too(served):
    model, tok, url, _ = served
    c = client(url)
    r = c.completions.create(model="tiny", prompt="a quick", max_tokens=5, logprobs=3, temperature=0)
    ids = tok.encode("a quick")
    gen = generate_oracle(model, ids, 5, stop_ids=(tok.eos_id, tok.pad_id))[0]
    lp = r.choices[0].logprobs
    assert lp.tokens == [tok.decode([t]) for t in gen]
    ref = oracle_lp(model, ids + gen)
    for j, t in enumerate(gen):
        assert lp.token_logprobs[j] == pytest.approx(ref[len(ids) - 1 + j, t].item(), abs=1e-4)
        assert lp.token_logprobs[j] == max(lp.top_logprobs[j].values())  # greedy: the best alternative
    chat = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=4,
                                     temperature=0, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    assert all(len(x.top_logprobs) == 2 and x.logprob == pytest.approx(x.top_logprobs[0].logprob, abs=1e-6)
               for x in content)


def test_a_list_of_prompts_is_prefilled_in_one_forward(served):
    _, tok, url, aengine = served
    eng = aengine.engine
    before = eng.prefill.forwards
    prompts = ["the cat", "hello world", "two plus two is", "a quick brown fox"]
    r = client(url).completions.create(model="tiny", prompt=prompts, max_tokens=3, temperature=0)
    assert len(r.choices) == 4
    assert eng.prefill.forwards - before == 1


def test_bad_requests_and_tokenizer_endpoints(served):
    _, tok, url, _ = served
    bad = [({"prompt": "hi", "max_tokens": 0}, "max_tokens"), ({"prompt": "hi", "echo": True, "stream": True}, "stream"),
           ({"prompt": "hi", "logprobs": 2, "stream": True}, "stream"), ({"prompt": "hi", "echo": "yes"}, "echo"),
           ({"prompt": "hi", "logprobs": 21}, "logprobs")]
    for body, param in bad:
        r = httpx.post(url + "/v1/completions", json=body, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, body
    t = httpx.post(url + "/tokenize", json={"prompt": "the cat sat"}).json()
    assert t["tokens"] == tok.encode("the cat sat") and t["count"] == len(t["tokens"]) and t["max_model_len"] == 64
    assert httpx.post(url + "/detokenize", json={"tokens": t["tokens"]}).json() == {"prompt": "the cat sat"}
    assert httpx.post(url + "/detokenize", json={"tokens": [10**6]}).status_code == 400
    info = httpx.get(url + "/tokenizer_info").json()
    assert info["eos_token"] == tok.eos_token and info["chat_template"] == tok.chat_template
    msgs = [{"role": "user", "content": "hello"}]
    assert httpx.post(url + "/tokenize", json={"messages": msgs}).json()["tokens"] == \
        tok.render_chat(msgs, add_generation_prompt=True)[0]
