"""`openmimo tag-label IN.jsonl OUT.jsonl`: tagger labels from a stronger LLM behind an OpenAI-compatible API.

Each document's text (its first ``max_chars`` characters) goes to the chat-completions endpoint with
:data:`PROMPT`; the reply must hold one JSON object ``{"domain": ..., "edu": 0-5, "junk": 0|1}`` (the first
``{...}`` in the reply is read, so a model that adds prose still counts).  A valid reply becomes a labelled
record for ``openmimo tag-train``; an invalid one (no JSON, unknown domain, out-of-range value) and a
failed request (after ``retries``) are counted by reason and skipped, never fatal.  Counts are printed and
written to ``OUT.counts.json``.  A run started again on the same OUT skips the ids already labelled.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path

from openmimo.config import ConfigError
from openmimo.data.quality import DOMAINS, check_label
from openmimo.jsonl import iter_jsonl

PROMPT = """Rate the following web document for training a reasoning language model.
Answer with one JSON object and nothing else: {{"domain": D, "edu": E, "junk": J}} where
- D is one of {domains} (the document's main subject),
- E is an integer from 0 to 5: how much the document teaches reasoning, mathematics or programming
  (0 none, 1 little general information, 3 clear explanations or worked examples, 5 outstanding step-by-step reasoning),
- J is 1 if the document is spam, advertising, navigation or other boilerplate, else 0.

Document:
{text}"""
_OBJ = re.compile(r"\{.*?\}", re.S)


def parse_reply(reply: str) -> dict | str:
    """The labels of a reply, or the reason it is unusable."""
    m = _OBJ.search(reply or "")
    if not m:
        return "no_json"
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError:
        return "bad_json"
    if not isinstance(obj, dict):
        return "bad_json"
    try:
        rec = check_label({"text": "x", "domain": obj.get("domain"), "edu": obj.get("edu"), "junk": obj.get("junk")},
                          "reply")
    except ConfigError:
        return "invalid_labels"
    if rec["domain"] is None or rec["edu"] is None or rec["junk"] is None:
        return "missing_labels"
    return {k: rec[k] for k in ("domain", "edu", "junk")}


def label_file(inp: str, out: str, base_url: str, model: str, api_key: str = "none", max_chars: int = 4000,
               retries: int = 2, timeout_s: float = 60.0, limit: int = 0, client=None) -> Counter:
    import openai  # the client library: only labelling needs it

    client = client or openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
    out_p = Path(out)
    done = {json.loads(x)["id"] for x in out_p.read_text().splitlines() if x.strip()} if out_p.is_file() else set()
    counts: Counter = Counter(already_labelled=len(done))
    with open(out_p, "a", encoding="utf-8") as f:
        for n, rec in iter_jsonl(inp, "input file"):
            if limit and counts["labelled"] + counts["skipped"] >= limit:
                break
            doc_id = str(rec.get("id", f"{inp}:{n}"))
            text = rec.get("text")
            if not isinstance(text, str) or not text.strip():
                counts["no_text"] += 1
                continue
            if doc_id in done:
                continue
            reply, err = None, None
            for attempt in range(retries + 1):
                try:
                    r = client.chat.completions.create(model=model, temperature=0.0, max_tokens=64, messages=[
                        {"role": "user", "content": PROMPT.format(domains=", ".join(DOMAINS), text=text[:max_chars])}])
                    reply = r.choices[0].message.content
                    break
                except openai.OpenAIError as e:
                    err = type(e).__name__
                    time.sleep(min(2.0, 0.2 * 2 ** attempt))
            if reply is None:
                counts[f"request_failed:{err}"] += 1
                counts["skipped"] += 1
                continue
            labels = parse_reply(reply)
            if isinstance(labels, str):
                counts[f"reply_{labels}"] += 1
                counts["skipped"] += 1
                continue
            f.write(json.dumps({"id": doc_id, "text": text, **labels}, ensure_ascii=False) + "\n")
            f.flush()
            counts["labelled"] += 1
    Path(str(out_p) + ".counts.json").write_text(json.dumps(dict(counts), indent=2, sort_keys=True) + "\n")
    return counts


def add_arguments(parser) -> None:
    parser.add_argument("input", help="JSONL documents with 'text' (and 'id')")
    parser.add_argument("output", help="labelled JSONL to write (appended; ids already there are skipped)")
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="OpenAI-compatible API base URL")
    parser.add_argument("--model", required=True, help="model name at the endpoint")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    parser.add_argument("--max-chars", type=int, default=4000)
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="label at most this many documents (0 = all)")


def run(args) -> int:
    counts = label_file(args.input, args.output, args.base_url, args.model, os.environ.get(args.api_key_env) or "none",
                        args.max_chars, args.retries, limit=args.limit)
    print(json.dumps(dict(counts), indent=2, sort_keys=True))
    return 0
