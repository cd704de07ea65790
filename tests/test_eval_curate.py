"""`openmimo curate` on a hand-made file: each cleaning rule, pass-rate routing (training / easy pool /
dropped), and test levels of a code problem from the rollouts' pass matrix; counts per reason."""

import json
import threading

import pytest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from openmimo.cli import main
from openmimo.config import ConfigError
from openmimo.eval.tasks import get_task

DOUBLE = "print(2 * int(input()))\n"
HALF_RIGHT = "x = int(input())\nprint(2 * x if x < 5 else x)\n"  # passes the small tests only


def _code(q, tests, solution=None):
    rec = {"question_content": q, "tests": [{"input": i, "output": o, "testtype": "stdin"} for i, o in tests]}
    return rec if solution is None else {**rec, "solution": solution}


TESTS = [("1\n", "2\n"), ("2\n", "4\n"), ("7\n", "14\n"), ("9\n", "18\n")]
RECORDS = [
    {"problem": "What is 2 + 2?", "answer": "4"},  # always solved -> easy pool
    {"problem": "What is 3 + 3?", "answer": "6"},  # solved by half the samples -> training
    {"problem": "What is 5 + 5?", "answer": "10"},  # never solved -> dropped
    {"problem": "Prove that there are infinitely many primes.", "answer": "1"},
    {"problem": "Which is largest? (A) 1 (B) 2 (C) 3", "answer": "C"},
    {"problem": "Let f(x) = x^2. (a) Find f(2). (b) Find f(3).", "answer": "4, 9"},
    {"problem": "What is nothing?", "answer": ""},
    _code("Print twice the number.", TESTS, DOUBLE),
    _code("Print twice the number, again.", TESTS, "print(int(input()))\n"),  # reference fails
    {"question_content": "Broken.", "tests": 42},
]


def _replies():
    """user turn -> the reply of each sample index (i % len)."""
    wm, wc = get_task("world_math"), get_task("world_code")
    box = lambda v: f"<think>\nok\n</think>\n\\boxed{{{v}}}"  # noqa: E731
    fence = lambda c: f"<think>\nok\n</think>\n```python\n{c}```"  # noqa: E731
    return {wm.chat_content(RECORDS[0]): [box(4)], wm.chat_content(RECORDS[1]): [box(6), box(7)],
            wm.chat_content(RECORDS[2]): [box(11)],
            wc.chat_content(RECORDS[7]): [fence(DOUBLE), fence(HALF_RIGHT), fence("print(0)\n"), fence(HALF_RIGHT)]}


def _stub(replies):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, obj):
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send({"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "t"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            texts = replies.get(body["messages"][-1]["content"], ["?"])
            choices = [{"index": i, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": texts[i % len(texts)]}} for i in range(body["n"])]
            self._send({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": choices,
                        "usage": {"prompt_tokens": 1, "completion_tokens": body["n"], "total_tokens": 1 + body["n"]}})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def test_curation_counts_routes_and_test_levels(tmp_path):
    src = tmp_path / "problems.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert main(["curate", "--input", str(src), "--output", str(tmp_path / "clean.jsonl"), "--no-rollouts"]) == 0
    counts = json.loads((tmp_path / "clean.counts.json").read_text())
    assert counts == {"read": 10, "dropped_proof": 1, "dropped_multiple_choice": 1, "dropped_multi_part": 1,
                      "dropped_gold_unparsable": 1, "dropped_reference_fails": 1, "dropped_bad_tests": 1,
                      "clean": 4, "kept": 4}
    httpd, url = _stub(_replies())
    try:
        assert main(["curate", "--input", str(src), "--output", str(tmp_path / "cur.jsonl"), "--endpoint", url,
                     "--samples", "4", "--no-progress"]) == 0
    finally:
        httpd.shutdown()
    counts = json.loads((tmp_path / "cur.counts.json").read_text())
    assert counts["clean"] == 4 and counts["easy_pool"] == 1 and counts["dropped_unsolved"] == 1 and counts["kept"] == 2
    cur = [json.loads(x) for x in (tmp_path / "cur.jsonl").read_text().splitlines()]
    easy = [json.loads(x) for x in (tmp_path / "cur.easy.jsonl").read_text().splitlines()]
    assert [r.get("problem") or r["question_content"] for r in cur] == ["What is 3 + 3?", "Print twice the number."]
    assert cur[0]["pass_rate"] == 0.5 and cur[1]["pass_rate"] == 0.25 and easy[0]["problem"] == "What is 2 + 2?"
    # per-test pass rates over the 4 rollouts: the small inputs pass 3 of 4 samples, the large ones 1 of 4
    assert cur[1]["test_pass_rates"] == [0.75, 0.75, 0.25, 0.25] and cur[1]["test_levels"] == [1, 1, 2, 2]


def test_rl_reads_the_curated_easy_pool(tiny_math_ckpt, tmp_path):
    from openmimo.config import load
    from openmimo.rl.config import RLConfig
    from openmimo.rl.trainer import RLRun

    easy = tmp_path / "cur.easy.jsonl"
    easy.write_text("".join(json.dumps({"problem": f"What is {a} + 1?", "answer": str(a + 1)}) + "\n" for a in (3, 4)))
    cfg = load(RLConfig, None, [f"train.model_path={tiny_math_ckpt / 'base'}",
                                f"data.train_path={tiny_math_ckpt / 'train.jsonl'}", f"data.easy_path={easy}",
                                f"train.out_dir={tmp_path / 'rl'}", "gen.max_slots=4", "gen.max_len=64",
                                "train.reward_workers=1", "train.code_reward=strict"])
    run = RLRun(cfg)
    try:
        assert len(run.problems) == 14 and run.sampler.pool == [12, 13] and run.data_counts["easy_pool"] == 2
        assert run.problems[12]["problem"] == "What is 3 + 1?"
        draws = [run.sampler.draw() for _ in range(60)]
        assert {i for i, pooled in draws if not pooled} <= set(range(12)) and any(pooled for _, pooled in draws)
    finally:
        run.close()
    with pytest.raises(ConfigError, match="code_reward"):
        load(RLConfig, None, ["train.model_path=x", "train.code_reward=chess"])
