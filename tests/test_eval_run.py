"""`openmimo eval` end to end through real HTTP: an oracle server that answers every problem with its
gold answer scores 100%, a wrong one 0%; failing requests are retried, then scored 0 and counted; a
killed run resumes; our own engine and our own server (driven by the openai client) run the same tasks."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from openmimo.cli import main
from openmimo.eval.tasks import get_task

BENCH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
needs_bench = pytest.mark.skipif(not BENCH.is_dir(), reason="../shared/benchmarks absent")
ROOT = Path(__file__).resolve().parents[1]
TASKS = {"aime25": 3, "gsm8k": 3, "math500": 3, "humaneval": 3, "mbpp": 3}  # task -> problems (--limit 3)


def _answers(mode, limit=3):
    """chat user turn -> reply, for the first ``limit`` problems of each of TASKS (``mode``: gold / wrong)."""
    out = {}
    for name in TASKS:
        task = get_task(name)
        for rec in task.load(data_dir=BENCH, limit=limit):
            if mode == "gold":
                reply = "<think>\nsolving\n</think>\n\n" + task.reference(rec)
            else:
                reply = "\\boxed{-987654}" if task.kind == "math" else "```python\ndef f():\n    return None\n```"
            out[task.chat_content(rec)] = reply
    return out


class Stub:
    """A minimal OpenAI-compatible server: /v1/models, /v1/chat/completions, /v1/completions."""

    def __init__(self, answers, fail_first=0, always_fail=(), gate_after=None):
        self.answers, self.fail_first, self.always_fail = answers, fail_first, set(always_fail)
        self.gate_after, self.gate = gate_after, threading.Event()  # requests past gate_after wait for the gate
        self.requests, self.lock = [], threading.Lock()
        stub = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "oracle", "object": "model", "created": 0,
                                                             "owned_by": "test"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
                with stub.lock:
                    stub.requests.append(key)
                    fail = len(stub.requests) <= stub.fail_first or key in stub.always_fail
                    held = stub.gate_after is not None and len(stub.requests) > stub.gate_after
                if held:
                    stub.gate.wait(120)
                if fail:
                    return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
                text = stub.answers.get(key, "I do not know")
                n = body.get("n", 1)
                if "messages" in body:
                    choices = [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                               for i in range(n)]
                    obj = "chat.completion"
                else:
                    choices = [{"index": i, "finish_reason": "stop", "text": text} for i in range(n)]
                    obj = "text_completion"
                self._send(200, {"id": "x", "object": obj, "created": 0, "model": body["model"], "choices": choices,
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 7 * n, "total_tokens": 1 + 7 * n}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def _eval(url, out, *extra):
    return main(["eval", "--endpoint", url, "--tasks", ",".join(TASKS), "--data-dir", str(BENCH), "--samples", "2",
                 "--output", str(out), "--no-progress", "--retries", "1", "--limit", "3", *extra])


@needs_bench
def test_oracle_server_scores_100_and_wrong_server_0(tmp_path, capsys):
    gold = Stub(_answers("gold"))
    try:
        assert _eval(gold.url, tmp_path / "gold.json") == 0
    finally:
        gold.close()
    res = json.loads((tmp_path / "gold.json").read_text())
    for name, limit in TASKS.items():
        r = res["tasks"][name]
        assert (r["n"], r["k"], r["avg@k"], r["pass@1"], r["pass@2"]) == (limit, 2, 1.0, 1.0, 1.0), (name, r)
        assert r["failed_requests"] == 0 and r["truncation_rate"] == 0.0
    assert "by" in res["tasks"]["math500"] and res["config"]["backend"].endswith("(oracle)")
    table = capsys.readouterr().out
    assert "| aime25 | 3 | 2 | 100.0 | 100.0 | 100.0 |" in table
    lines = [json.loads(x) for x in (tmp_path / "gold.samples.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * sum(TASKS.values())
    assert all(ln["score"] == 1.0 and ln["response"] and ln["prompt"] for ln in lines)
    assert {ln["extracted"] for ln in lines if ln["task"] == "aime25"} == {str(r["answer"]) for r in
                                                                           get_task("aime25").load(data_dir=BENCH,
                                                                                                   limit=3)}
    wrong = Stub(_answers("wrong"))
    try:
        assert _eval(wrong.url, tmp_path / "wrong.json") == 0
    finally:
        wrong.close()
    res = json.loads((tmp_path / "wrong.json").read_text())
    assert all(r["avg@k"] == 0.0 and r["pass@2"] == 0.0 for r in res["tasks"].values())


@needs_bench
def test_failed_requests_are_retried_then_scored_zero_and_counted(tmp_path):
    answers = _answers("gold")
    rec = get_task("gsm8k").load(data_dir=BENCH, limit=1)[0]
    dead = get_task("gsm8k").chat_content(rec)
    stub = Stub(answers, fail_first=1, always_fail=[dead])
    try:
        assert _eval(stub.url, tmp_path / "r.json", "--concurrency", "1") == 0
    finally:
        stub.close()
    res = json.loads((tmp_path / "r.json").read_text())
    g = res["tasks"]["gsm8k"]
    assert g["failed_requests"] == 2 and g["avg@k"] == pytest.approx(2 / 3)  # one of 3 problems never answered
    # the very first request failed once, then its retry passed
    assert all(r["avg@k"] == 1.0 for n, r in res["tasks"].items() if n != "gsm8k")
    assert stub.requests.count(dead) == 2  # the first try and one retry


@needs_bench
def test_killed_eval_resumes_without_asking_again(tmp_path):
    stub = Stub(_answers("gold", limit=4), gate_after=3)  # 3 prompts answered, then the server hangs
    out = tmp_path / "res.json"
    samples = tmp_path / "res.samples.jsonl"
    cmd = [sys.executable, "-m", "openmimo", "eval", "--endpoint", stub.url, "--tasks", "aime25,gsm8k",
           "--data-dir", str(BENCH), "--limit", "4", "--samples", "2", "--output", str(out), "--no-progress",
           "--concurrency", "1"]
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        t0 = time.time()
        while time.time() - t0 < 120 and (not samples.exists() or len(samples.read_text().splitlines()) < 6):
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)  # killed while its fourth request hangs
        proc.wait()
        stub.gate_after = None
        stub.gate.set()
        done = len(samples.read_text().splitlines())
        assert done == 6 and not out.exists()
        with samples.open("a") as f:
            f.write('{"task": "aime25", "id": "aime25/3", "sam')  # a torn last line
        asked_before = len(stub.requests)
        assert main(cmd[3:]) == 0
        asked_again = stub.requests[asked_before:]
        assert len(asked_again) == 5  # 8 prompts, 3 of them complete before the kill
        res = json.loads(out.read_text())
        assert all(r["n"] == 4 and r["avg@k"] == 1.0 for r in res["tasks"].values())
        assert main(cmd[3:] + ["--temperature", "1.0"]) == 2  # other settings refuse to resume
    finally:
        stub.close()


def test_our_engine_and_our_server_run_the_same_task(tiny_math_ckpt, tmp_path):
    """--model (the engine in this process) and --endpoint (openmimo's server through the openai client)."""
    from openmimo import load_model, load_tokenizer
    from openmimo.infer.async_engine import AsyncEngine
    from openmimo.infer.engine import Engine
    from openmimo.infer.server import create_app, start_in_thread

    ckpt, probs = tiny_math_ckpt / "base", tiny_math_ckpt / "train.jsonl"
    common = ["--tasks", "world_math", "--task-file", f"world_math={probs}", "--samples", "2", "--max-tokens", "12",
              "--limit", "5", "--base", "--no-progress"]
    assert main(["eval", "--model", str(ckpt), "--output", str(tmp_path / "engine.json"), *common]) == 0
    tok = load_tokenizer(ckpt)
    aengine = AsyncEngine(Engine(load_model(ckpt), max_slots=8, max_len=128))
    server, url = start_in_thread(create_app(aengine, tok, "tiny"))
    try:
        assert main(["eval", "--endpoint", url, "--output", str(tmp_path / "server.json"), *common]) == 0
        assert main(["eval", "--endpoint", url, "--output", str(tmp_path / "chat.json"),
                     *[c for c in common if c != "--base"], "--chat"]) == 0
    finally:
        server.should_exit = True
        aengine.shutdown()
    def responses(name):
        return {(ln["id"], ln["sample"]): ln["response"] for ln in map(json.loads, (tmp_path / f"{name}.samples.jsonl")
                                                                        .read_text().splitlines())}

    assert responses("engine") == responses("server")  # same seeds, same samples: the HTTP path changes nothing
    for name in ("engine", "server", "chat"):
        res = json.loads((tmp_path / f"{name}.json").read_text())
        r = res["tasks"]["world_math"]
        assert r["n"] == 5 and r["k"] == 2 and 0.0 <= r["avg@k"] <= 1.0 and r["mean_response_tokens"] > 0
        assert set(r["by"]) == {"level"} and res["generated_tokens"] > 0
        lines = [json.loads(x) for x in (tmp_path / f"{name}.samples.jsonl").read_text().splitlines()]
        assert len(lines) == 10 and all(ln["finish_reason"] in ("stop", "length") for ln in lines)
        first = lines[0]["prompt"]
        if name == "chat":
            assert first[-1]["content"].endswith("within \\boxed{}.")
        else:
            assert first.startswith("Problem: What is") and first.endswith("\nSolution:")
