"""lm-evaluation-harness (the real package) drives ``openmimo``'s server on 127.0.0.1 through ``local-completions``
(tokenising through the server's /tokenize, as it detects): a multiple-choice task (loglikelihood) and a
generate_until task, from JSONL files written here.  The gold answers are set from openmimo's own model (a full
forward for the choices, greedy decoding for the generations) so that exactly half are right: lm-eval's scores
must be exactly 0.5 and 0.5 — any disagreement between the server and the model moves them."""

import json
import logging

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")

from openmimo.infer.async_engine import AsyncEngine  # noqa: E402
from openmimo.infer.engine import Engine  # noqa: E402
from openmimo.infer.oracle import generate_oracle  # noqa: E402
from openmimo.infer.server import create_app, start_in_thread  # noqa: E402
from openmimo.model.config import MiMoConfig  # noqa: E402
from openmimo.model.mimo import build_model  # noqa: E402
from openmimo.tokenizer import train_tokenizer  # noqa: E402

TEXTS = ["the cat sat on the mat", "two plus two is four", "a quick brown fox jumps", "hello world"] * 20
QUESTIONS = ["the cat sat on", "two plus two is", "a quick brown", "hello", "the fox", "four plus",
             "the mat is", "a cat"]
CHOICES = ["the mat", "four", "fox jumps", "world"]


@torch.no_grad()
def continuation_lp(model, tok, ctx: str, cont: str) -> float:
    """lm-eval's split: encode(context + continuation), the context's own tokens removed from the front."""
    whole, ctx_ids = tok.encode(ctx + cont), tok.encode(ctx)
    lp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
    return sum(lp[i - 1, whole[i]].item() for i in range(len(ctx_ids), len(whole)))


def write_tasks(folder, model, tok):
    mc, gen = [], []
    for i, q in enumerate(QUESTIONS):
        lls = [continuation_lp(model, tok, q, " " + c) for c in CHOICES]
        best = max(range(len(CHOICES)), key=lls.__getitem__)
        mc.append({"question": q, "choices": CHOICES, "gold": best if i % 2 == 0 else (best + 1) % len(CHOICES)})
        out, _ = generate_oracle(model, tok.encode(q), 6, stop_ids=(tok.eos_id, tok.pad_id))
        text = tok.decode(out, skip_special_tokens=True).split("\n")[0]
        gen.append({"question": q, "answer": text if i % 2 == 0 else text + " zzz"})
    for name, rows in (("mc", mc), ("gen", gen)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = "dataset_path: json\ntest_split: test\n"
    (folder / "om_mc.yaml").write_text(
        f"task: om_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'mc.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{gold}}'\nmetric_list:\n  - metric: acc\n")
    (folder / "om_gen.yaml").write_text(
        f"task: om_gen\n{common}dataset_kwargs:\n  data_files:\n    test: {folder / 'gen.jsonl'}\n"
        "output_type: generate_until\ndoc_to_text: '{{question}}'\ndoc_to_target: '{{answer}}'\n"
        "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 6\n  do_sample: false\n  temperature: 0\n"
        "metric_list:\n  - metric: exact_match\n")


def test_lm_eval_local_completions_scores(tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm-eval").setLevel(logging.WARNING)
    tok = train_tokenizer(TEXTS, vocab_size=300)
    cfg = MiMoConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                     num_nextn_predict_layers=1, initializer_range=0.3, eos_token_id=tok.eos_id)
    model = build_model(cfg, seed=0).eval()
    write_tasks(tmp_path, model, tok)
    aengine = AsyncEngine(Engine(model, max_slots=8, max_len=64, spec_k=1))
    server, url = start_in_thread(create_app(aengine, tok, "tiny"))
    try:
        res = simple_evaluate(model="local-completions",
                              model_args={"model": "tiny", "base_url": url + "/v1/completions", "num_concurrent": 1,
                                          "max_retries": 1, "max_length": 64},
                              tasks=["om_mc", "om_gen"], task_manager=TaskManager(include_path=str(tmp_path)),
                              batch_size=4, log_samples=False)
    finally:
        server.should_exit = True
        aengine.shutdown()
    assert res["results"]["om_mc"]["acc,none"] == 0.5
    assert res["results"]["om_gen"]["exact_match,none"] == 0.5
