"""`openmimo data` end to end on the local datatrove executor: planted duplicates, bad records and
contamination are counted; task/worker counts and a kill -9 + --resume give identical output;
`openmimo pretrain` trains on the shards it writes."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from openmimo.config import ConfigError, load
from openmimo.data.pipeline import main
from openmimo.data.pipeline_config import DataPipelineConfig

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = ("Let $f(x) = 3x + 4$ and $g(x) = x^2 - 2$. Find the value of $f(g(5))$ and express your answer as "
           "an integer in simplest form.")


def _words(r, n):
    return " ".join(r.choice([f"w{i}" for i in range(2000)] + ["7", "12", "the", "and"]) for _ in range(n))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import polars as pl

    d = tmp_path_factory.mktemp("corpus")
    r = random.Random(0)
    web = [{"id": f"d{i}", "text": _words(r, 120), "url": f"http://site.com/p/{i}"} for i in range(40)]
    web += [{"id": f"exact{i}", "text": web[i]["text"], "url": f"http://copy.com/{i}"} for i in range(6)]
    for i in range(6, 12):  # near duplicates: 2 words changed
        w = web[i]["text"].split()
        w[10], w[50] = "changed", "words"
        web.append({"id": f"near{i}", "text": " ".join(w), "url": f"http://mirror.com/{i}"})
    # the same URL spelled three ways: the longest text wins
    web += [{"id": "u1", "text": _words(r, 60), "url": "https://Site.com/p/same/?utm_source=x"},
            {"id": "u2", "text": _words(r, 90), "url": "http://site.com:80/p/same#top"},
            {"id": "u3", "text": _words(r, 30), "url": "http://site.com/p/same/"}]
    web += [{"id": "contaminated", "text": "Homework help. " + PROBLEM + " " + _words(r, 40), "url": "http://h.com/1"},
            {"id": "near-miss", "text": PROBLEM.replace("3x + 4", "3x + 5").replace("f(g(5))", "f(g(6))"),
             "url": "http://h.com/2"}]
    lines = [json.dumps(x) for x in web]
    (d / "web.jsonl").write_text("\n".join(lines[:30]) + "\n")
    (d / "web2.jsonl").write_text("\n".join(lines[30:]) + "\n")
    bad = [b'{"id": "ok1", "text": "a fine record with some words in it"}', b'\xff\xfe not utf-8',
           b'{"id": "nt"}', b'{"id": "wt", "text": 42}', b'{not json', b'[1, 2]', b'{"id": "e", "text": "   "}',
           b'{"id": "ok2", "text": "another fine record of words"}']
    (d / "bad.jsonl").write_bytes(b"\n".join(bad) + b"\n")
    pl.DataFrame({"id": ["p1", "p2"], "text": [_words(r, 50), _words(r, 50)]}).write_parquet(d / "t.parquet")
    pages = [{"url": "http://pages.com/a", "html": f"<html><body><main><p>{_words(r, 80)}</p></main></body></html>"},
             {"url": "http://pages.com/b", "html": "<html><body></body></html>"}]
    (d / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    bench = d / "bench" / "math"
    bench.mkdir(parents=True)
    (bench / "math_500_test.jsonl").write_text(json.dumps(
        {"problem": PROBLEM, "solution": "It is 73.", "answer": "73", "subject": "Algebra", "level": 2,
         "unique_id": "u"}) + "\n")
    return d


def _cfg(corpus, out, extra=()):
    c = corpus
    srcs = [{"name": "web", "paths": [str(c / "web*.jsonl")]}, {"name": "bad", "paths": [str(c / "bad.jsonl")]},
            {"name": "pq", "reader": "parquet", "paths": [str(c / "t.parquet")]},
            {"name": "pages", "reader": "pages", "paths": [str(c / "pages.jsonl")]}]
    return load(DataPipelineConfig, None, [
        f"out_dir={out}", f"sources={json.dumps(srcs)}", f"decontam.benchmarks={c / 'bench'}",
        "bins=[{name: all}]", "stages=[{name: s1, tokens: 4000, weights: {all: 1.0}}]", "tokenizer_vocab=300",
        "tasks=1", "workers=1", "buckets=2", "batch_docs=16", *extra])


def _output(out: Path) -> dict:
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "shards").rglob("*")) if p.is_file()}
    files["data_card.json"] = (out / "data_card.json").read_bytes()
    files["tokenizer.json"] = (out / "tokenizer" / "tokenizer.json").read_bytes()
    return files


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    card = main(_cfg(corpus, out), log=lambda *_: None)
    return out, card


def test_planted_duplicates_bad_records_and_contamination_are_counted(reference):
    out, card = reference
    web, bad = card["sources"]["web"], card["sources"]["bad"]
    assert web["read"] == 57 and web["url_duplicate"] == 2 and web["exact_duplicate"] == 6
    assert web["near_duplicate"] == 6 and web["contaminated"] == 1
    assert web["kept"] == 57 - 2 - 6 - 6 - 1
    assert bad["read"] == 2 and bad["refused"] == {"bad_json": 2, "invalid_utf8": 1, "no_text": 2, "wrong_type": 1}
    assert card["sources"]["pq"]["kept"] == 2
    assert card["sources"]["pages"]["kept"] == 1 and card["sources"]["pages"]["refused"] == {"extract_empty": 1}
    assert card["contamination"]["hits"] == {"math500": 1} and card["contamination"]["eval_tasks"] == {"math500": 2}
    assert card["cluster_sizes"]["exact"] == {"2": 6} and card["cluster_sizes"]["url"] == {"3": 1}
    assert card["cluster_sizes"]["near"] == {"2": 6}
    kept = [json.loads(x) for x in (out / "work" / "bins" / "all" / "00000.jsonl").read_text().splitlines()]
    ids = {d["id"] for d in kept}
    assert "u2" in ids and not ids & {"u1", "u3", "contaminated"} and "near-miss" in ids
    # one document of each planted pair (which one: the smaller document key among equals)
    assert all(len(ids & {f"d{i}", f"exact{i}"}) == 1 for i in range(6))
    assert all(len(ids & {f"d{i}", f"near{i}"}) == 1 for i in range(6, 12))
    assert card["bins"]["all"]["docs"] == sum(s["kept"] for s in card["sources"].values())
    assert (out / "data_card.md").read_text().startswith("# Data card")


def test_task_and_worker_counts_give_identical_output(corpus, reference, tmp_path):
    out = tmp_path / "out"
    main(_cfg(corpus, out, ["tasks=4", "workers=2", "buckets=3"]), log=lambda *_: None)
    assert _output(out) == _output(reference[0])


def test_kill_9_then_resume_gives_the_same_output(corpus, reference, tmp_path):
    out = tmp_path / "out"
    cfg = _cfg(corpus, out, ["tasks=4"])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(__import__("dataclasses").asdict(cfg)))))
    cmd = [sys.executable, "-m", "openmimo.cli", "data", str(tmp_path / "c.yaml")]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = out / "work" / "stats" / "finish" / "00001.json"  # mid-run: finishing the second of four tasks
    t0 = time.time()
    while not marker.exists() and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.005)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not (out / "data_card.json").exists()
    with pytest.raises(ConfigError, match="not empty"):
        main(cfg, log=lambda *_: None)
    again = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _output(out) == _output(reference[0])
    changed = _cfg(corpus, out, ["tasks=4", "buckets=5"])
    with pytest.raises(ConfigError, match="another configuration"):
        main(changed, resume=True, log=lambda *_: None)


def test_bad_config_is_one_clear_error(corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"sources\[0\].paths"):
        main(_cfg(corpus, tmp_path / "o", [f"sources=[{{name: w, paths: [{tmp_path}/none.jsonl]}}]"]))
    with pytest.raises(ConfigError, match="filters on tags but no 'tagger'"):
        _cfg(corpus, tmp_path / "o", ["bins=[{name: all, min_edu: 2}]"])


def test_pretrain_trains_on_the_pipeline_shards(reference, tmp_path):
    from openmimo.train.config import PretrainConfig
    from openmimo.train.pretrain import main as pretrain

    out = reference[0]
    mix = yaml.safe_load((out / "mixture.yaml").read_text())
    assert mix["data"]["sources"] == {"all": str((out / "shards" / "all").resolve())}
    cfg = load(PretrainConfig, None, [
        "model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1",
        "model.num_attention_heads=2", "model.num_key_value_heads=1", "model.max_position_embeddings=64",
        f"data.sources={json.dumps(mix['data']['sources'])}", f"data.tokenizer={mix['data']['tokenizer']}",
        "data.world=false", "stages=[{name: s1, tokens: 512, seq_len: 32, mixture: {all: 1.0}}]",
        "batch.batch_size=4", "batch.micro_batch_size=4", "optim.warmup_tokens=0", "optim.decay_tokens=512",
        "train.eval_problems=0", "train.ckpt_every=0", f"train.out_dir={tmp_path / 'pre'}"])
    res = pretrain(cfg)
    recs = [json.loads(x) for x in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if "loss" in r]
    assert len(losses) == 4 and all(x == x and x > 0 for x in losses), res


def test_epoch_caps_lower_a_weight_and_the_rest_take_it_up():
    from openmimo.data.datacard import cap_weights

    # a needs 0.5 * 100 = 50 tokens but may use 20; b and c share the other 0.8 in proportion 1:3
    w, ok = cap_weights({"a": 0.5, "b": 0.125, "c": 0.375}, 100, {"a": 20, "b": 1e9, "c": 1e9})
    assert ok and w == {"a": 0.2, "b": 0.2, "c": 0.6}
    w, ok = cap_weights({"a": 0.5, "b": 0.5}, 100, {"a": 10, "b": 10})  # cannot be filled: kept, flagged
    assert not ok and w == {"a": 0.5, "b": 0.5}


@pytest.mark.parametrize("path", ["configs/data_tiny.yaml", "configs/data_mimo.yaml"])
def test_shipped_configs_and_the_help_example_load(path):
    from openmimo.data.pipeline import EXAMPLE

    cfg = load(DataPipelineConfig, ROOT / path, EXAMPLE.split())
    assert cfg.tasks == 4 and cfg.bins and cfg.stages


def _warc_response(uri: str, body: bytes, rid: str) -> bytes:
    payload = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    head = ["WARC/1.0", "WARC-Type: response", f"WARC-Record-ID: <urn:uuid:{rid}>", "WARC-Date: 2024-05-01T00:00:00Z",
            f"Content-Length: {len(payload)}", f"WARC-Target-URI: {uri}", "Content-Type: application/http; msgtype=response"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload + b"\r\n\r\n"


def test_warc_input_is_extracted_and_url_deduplicated(tmp_path):
    r = random.Random(1)
    body = f"<html><body><main><p>{_words(r, 80)}</p></main></body></html>".encode()
    other = f"<html><body><main><p>{_words(r, 90)}</p></main></body></html>".encode()
    (tmp_path / "c.warc").write_bytes(
        _warc_response("https://a.example/1", body, "11111111-1111-1111-1111-111111111111")
        + _warc_response("http://A.example/1/?utm_source=x", other, "22222222-2222-2222-2222-222222222222"))
    cfg = load(DataPipelineConfig, None, [
        f"out_dir={tmp_path / 'out'}", f"sources=[{{name: crawl, reader: warc, paths: [{tmp_path / 'c.warc'}]}}]",
        "decontam.enabled=false", "bins=[{name: all}]", "tokenizer_vocab=300"])
    card = main(cfg, log=lambda *_: None)
    assert card["sources"]["crawl"]["read"] == 2 and card["sources"]["crawl"]["url_duplicate"] == 1
    assert card["sources"]["crawl"]["kept"] == 1 and card["bins"]["all"]["tokens"] > 0


def test_the_world_pipeline_without_datatrove_is_one_clear_error(tmp_path, monkeypatch):
    """The quickstart's preset routes the world through `openmimo data`; an install without the data extra gets
    one error naming the key and both ways out, before any work."""
    import importlib.util

    from openmimo.train.config import PretrainConfig
    from openmimo.train.data import _prepare_world_pipeline

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datatrove" else real(name, *a))
    cfg = load(PretrainConfig, Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    assert cfg.data.world_pipeline
    with pytest.raises(ConfigError, match=r"data\.world_pipeline.*data extra.*world_pipeline=false"):
        _prepare_world_pipeline(cfg, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_the_ray_executor_gives_the_local_output(corpus, reference, tmp_path):
    """executor=ray (datatrove's RayPipelineExecutor on a local Ray instance): the same shards, tokenizer and data
    card as the local executor."""
    pytest.importorskip("ray")
    from openmimo.rewards.ray_pool import ensure_ray

    ray, owns = ensure_ray(None, 2)
    try:
        out = tmp_path / "out"
        main(_cfg(corpus, out, ["executor=ray", "tasks=2", "workers=2"]), log=lambda *_: None)
    finally:
        if owns:
            ray.shutdown()
    assert _output(out) == _output(reference[0])
