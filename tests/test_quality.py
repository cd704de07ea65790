"""The quality/domain tagger: trained on the world it beats the majority baseline; labels through a real client."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from openmimo.config import ConfigError
from openmimo.data import quality
from openmimo.data.quality_label import label_file, parse_reply
from openmimo.data.world import make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("world")
    make_world(d, seed=3, scale=0.1)
    return d


def test_tagger_trained_on_the_world_beats_the_majority_baseline(world, tmp_path):
    torch.manual_seed(0)
    recs = quality.world_labels(world, per_domain=120, seed=0)
    assert {r["domain"] for r in recs} >= {"math", "code", "general"} and any(r["junk"] == 1 for r in recs)
    model, report = quality.train_tagger(recs, epochs=4, holdout=0.25, seed=0, log=lambda *_: None)
    h = report["heldout"]
    assert h["domain_acc"] > h["domain_majority_acc"] + 0.2, h
    assert h["domain_acc"] >= 0.85, h
    assert h["edu_mae"] < 0.6 * h["edu_mean_mae"], h
    model.save(tmp_path / "t")
    again = quality.load_tagger(tmp_path / "t")
    texts = [r["text"] for r in recs[:20]]
    assert again.predict(texts) == model.predict(texts)
    p = model.predict(["CLICK NOW FREE BONUS CASINO WINNER " * 10])[0]
    assert set(p) == {"domain", "domain_p", "edu", "junk"} and 0 <= p["edu"] <= 5 and 0 <= p["junk"] <= 1


def test_transformer_layers_train_too():
    recs = [{"text": f"{w} " * 20, "domain": d, "edu": e, "junk": 0.0}
            for w, d, e in [("integral sum proof", "math", 4.0), ("def return print", "code", 4.0)] for _ in range(20)]
    model, report = quality.train_tagger(recs, quality.TaggerConfig(layers=1, dim=16, heads=2), epochs=3,
                                         holdout=0.2, log=lambda *_: None)
    assert report["heldout"]["domain_acc"] == 1.0


@pytest.mark.parametrize("rec,msg", [
    ({"domain": "math"}, "non-empty string 'text'"),
    ({"text": "x", "domain": "cooking"}, "not one of"),
    ({"text": "x", "edu": 7}, "edu must be"),
    ({"text": "x", "junk": "yes"}, "junk must be"),
    ({"text": "x"}, "none of the labels"),
])
def test_bad_labels_are_one_clear_error(rec, msg):
    with pytest.raises(ConfigError, match=msg):
        quality.check_label(rec, "f.jsonl:3")


def test_parse_reply():
    assert parse_reply('Sure! {"domain": "code", "edu": 3, "junk": 0} done') == {"domain": "code", "edu": 3.0, "junk": 0.0}
    assert parse_reply("no idea") == "no_json"
    assert parse_reply('{"domain": "cooking", "edu": 3, "junk": 0}') == "invalid_labels"
    assert parse_reply('{"domain": "math"}') == "missing_labels"


class _FakeLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat-completions endpoint with canned replies chosen by the document text."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][0]["content"]
        if "BROKEN" in text:
            self.send_response(500)
            self.end_headers()
            return
        reply = ('{"domain": "math", "edu": 4, "junk": 0}' if "theorem" in text else
                 'I think {"domain": "other", "edu": 0, "junk": 1}' if "CASINO" in text else "cannot say")
        out = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
               "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}],
               "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_tag_label_through_an_openai_compatible_endpoint(tmp_path):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLLM)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        inp = tmp_path / "docs.jsonl"
        docs = [{"id": "a", "text": "A theorem and its proof."}, {"id": "b", "text": "CASINO CLICK"},
                {"id": "c", "text": "plain"}, {"id": "d", "text": "BROKEN"}, {"id": "e", "text": ""}]
        inp.write_text("".join(json.dumps(d) + "\n" for d in docs))
        out = tmp_path / "labels.jsonl"
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        c = label_file(str(inp), str(out), url, "m", retries=1)
        assert c["labelled"] == 2 and c["reply_no_json"] == 1 and c["request_failed:InternalServerError"] == 1
        assert c["no_text"] == 1
        labels = quality.read_labels([out])
        assert [(r["domain"], r["junk"]) for r in labels] == [("math", 0.0), ("other", 1.0)]
        again = label_file(str(inp), str(out), url, "m", retries=0)  # a second run skips labelled ids
        assert again["labelled"] == 0 and again["already_labelled"] == 2
    finally:
        srv.shutdown()
