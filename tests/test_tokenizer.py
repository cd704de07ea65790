"""Tokenizer: byte-level round trips, special tokens, the chat format, loss masks, HF layout parity."""

import json
import shutil
from pathlib import Path

import pytest

import openmimo
from openmimo.config import ConfigError
from openmimo.tokenizer import (CHAT_TEMPLATE, IM_END, Tokenizer, load_tokenizer, split_reasoning,
                                train_tokenizer)

MIMO_REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "mimo-7b"

CORPUS = [
    "The quick brown fox jumps over the lazy dog. What is 17 + 25? 17 + 25 = 42, so the answer is \\boxed{42}.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "Solve for x: 3x + 4 = 19. Subtract 4 from both sides: 3x = 15. Divide by 3: x = 5.",
    "A farmer has 12 apples and buys 7 more. How many apples does the farmer have now? 12 + 7 = 19.",
] * 40

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
    [
        {"role": "system", "content": "You are a careful solver."},
        {"role": "user", "content": "Solve 3x + 4 = 19."},
        {"role": "assistant", "reasoning_content": "Subtract 4: 3x = 15.\nDivide by 3.", "content": "x = 5"},
        {"role": "user", "content": "And 2x = 8?"},
        {"role": "assistant", "content": "<think>\n8 / 2 = 4\n</think>\n\nx = 4"},
    ],
    [{"role": "user", "content": "Write code.\n```python\nprint(1)\n```"},
     {"role": "assistant", "content": "def f(x):\n    return x * 2  # 世界 🤖"}],
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(CORPUS, vocab_size=512, min_frequency=2)


@pytest.mark.parametrize("text", [
    "plain ascii text", "  leading and trailing  ", "tabs\tand\nnewlines\r\n\n", "héllo wörld", "数学 🤖 emoji",
    "\x00\x01 control bytes", "x = 12345678901234567890", "<|im_start|>user\nhi<|im_end|>", "<think>\nr\n</think>\n\na",
    "",
])
def test_any_text_round_trips(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_token_ids(tok):
    assert tok.vocab_size <= 512
    assert tok.eos_id == tok.token_to_id("<|im_end|>")
    assert tok.pad_id == tok.bos_id == tok.token_to_id("<|endoftext|>")
    assert tok.think_start_id is not None and tok.think_end_id is not None
    ids = {tok.eos_id, tok.pad_id, tok.im_start_id, tok.think_start_id, tok.think_end_id}
    assert len(ids) == 5 and max(ids) < tok.vocab_size
    # each control string is exactly one id, even glued to text
    assert tok.encode("a<think>b</think>c")[1] == tok.think_start_id
    assert tok.encode("<|im_end|>") == [tok.eos_id]
    # encode adds nothing on its own
    assert tok.eos_id not in tok.encode("hello") and tok.bos_id not in tok.encode("hello")


def test_digits_are_single_tokens(tok):
    ids = tok.encode("12345")
    assert len(ids) == 5 and [tok.decode([i]) for i in ids] == list("12345")


def test_skip_special_tokens_keeps_think_tags(tok):
    ids = tok.encode("<|im_start|>assistant\n<think>\nr\n</think>\n\na<|im_end|><|endoftext|>")
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n<think>\nr\n</think>\n\na"
    assert tok.decode(ids) == "<|im_start|>assistant\n<think>\nr\n</think>\n\na<|im_end|><|endoftext|>"


def test_encode_batch_matches_encode(tok):
    texts = ["a b c", "What is 3 + 4?", ""]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_too_small_vocab_is_refused():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(CORPUS, vocab_size=100)


def test_chat_template_exact_string(tok):
    s = tok.apply_chat_template(CONVERSATIONS[1], add_generation_prompt=True)
    assert s == (
        "<|im_start|>system\nYou are a careful solver.<|im_end|>\n"
        "<|im_start|>user\nSolve 3x + 4 = 19.<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nSubtract 4: 3x = 15.\nDivide by 3.\n</think>\n\nx = 5<|im_end|>\n"
        "<|im_start|>user\nAnd 2x = 8?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n8 / 2 = 4\n</think>\n\nx = 4<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert not tok.apply_chat_template(CONVERSATIONS[0]).endswith("<|im_start|>assistant\n")


def test_reasoning_field_and_inline_think_render_the_same(tok):
    a = [{"role": "assistant", "reasoning_content": "\nstep 1\nstep 2\n", "content": "\n7"}]
    b = [{"role": "assistant", "content": "<think>\nstep 1\nstep 2\n</think>\n\n7"}]
    assert tok.apply_chat_template(a) == tok.apply_chat_template(b)


def test_bad_messages_are_rejected(tok):
    with pytest.raises(ValueError, match="role"):
        tok.apply_chat_template([{"content": "x"}])
    with pytest.raises(ValueError, match="unknown role"):
        tok.apply_chat_template([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="content must be a string"):
        tok.apply_chat_template([{"role": "user", "content": 3}])


@pytest.mark.parametrize("conv", CONVERSATIONS)
@pytest.mark.parametrize("gen", [False, True])
def test_render_chat_ids_and_loss_mask(tok, conv, gen):
    ids, mask = tok.render_chat(conv, add_generation_prompt=gen)
    assert ids == tok.encode(tok.apply_chat_template(conv, add_generation_prompt=gen))
    assert len(mask) == len(ids) and set(mask) <= {0, 1}
    # the masked tokens are exactly the assistant turns (think block included) and their <|im_end|>
    expected = "".join(tok.apply_chat_template([m])[len("<|im_start|>assistant\n"):-1]
                       for m in conv if m["role"] == "assistant")
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == expected
    assert expected.endswith(IM_END)
    # nothing of a system/user turn is trained on, nor the trailing generation prompt
    assert mask[-1] == 0  # the final "\n" (or the generation prompt) is never trained on
    assert sum(1 for i, m in zip(ids, mask) if m and i == tok.eos_id) == sum(m["role"] == "assistant" for m in conv)
    assert all(m == 0 for i, m in zip(ids, mask) if i == tok.im_start_id)


@pytest.mark.parametrize("text, reasoning, answer", [
    ("<think>\nR\n</think>\n\nA", "R", "A"),
    ("<think>two\nlines</think>answer", "two\nlines", "answer"),
    ("just an answer", None, "just an answer"),
    ("<think>\ncut off mid-thought", "cut off mid-thought", ""),
    ("prompt ended in the tag\n</think>\n\n42", "prompt ended in the tag", "42"),
    ("", None, ""),
])
def test_split_reasoning(text, reasoning, answer):
    assert split_reasoning(text) == (reasoning, answer)


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == "<|im_end|>" and cfg["pad_token"] == "<|endoftext|>" and cfg["chat_template"] == CHAT_TEMPLATE
    assert cfg["added_tokens_decoder"][str(tok.think_start_id)]["special"] is False
    assert cfg["added_tokens_decoder"][str(tok.eos_id)]["special"] is True
    back = openmimo.load_tokenizer(tmp_path)
    for text in CORPUS[:4]:
        assert back.encode(text) == tok.encode(text)
    assert (back.eos_id, back.pad_id, back.bos_id, back.think_start_id, back.vocab_size) == \
        (tok.eos_id, tok.pad_id, tok.bos_id, tok.think_start_id, tok.vocab_size)


def test_transformers_loads_saved_tokenizer_with_same_chat_template(tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf.eos_token == "<|im_end|>" and hf.pad_token == "<|endoftext|>"
    assert hf.eos_token_id == tok.eos_id and hf.pad_token_id == tok.pad_id
    for conv in CONVERSATIONS:
        for gen in (False, True):
            ours = tok.apply_chat_template(conv, add_generation_prompt=gen)
            assert hf.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen) == ours
            ids = tok.render_chat(conv, add_generation_prompt=gen)[0]
            assert hf.encode(ours, add_special_tokens=False) == ids
            assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)


def _write_pair(tok, folder):
    tok.save(folder)
    return folder / "tokenizer.json", folder / "tokenizer_config.json"


@pytest.mark.parametrize("broken", ["no_tokenizer_json", "no_config", "bad_config_json", "bad_tokenizer_json",
                                    "config_not_object"])
def test_load_errors_name_the_file(tok, tmp_path, broken):
    tj, tc = _write_pair(tok, tmp_path)
    target = {"no_tokenizer_json": tj, "no_config": tc, "bad_config_json": tc, "bad_tokenizer_json": tj,
              "config_not_object": tc}[broken]
    if broken.startswith("no_"):
        target.unlink()
    elif broken == "config_not_object":
        target.write_text("[1, 2]")
    else:
        target.write_text('{"truncated": ')
    with pytest.raises(ConfigError) as e:
        load_tokenizer(tmp_path)
    assert str(target) in str(e.value)


def test_load_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_tokenizer(tmp_path / "nope")


@pytest.mark.skipif(not (MIMO_REF / "tokenizer_config.json").is_file(), reason="../shared/reference absent")
def test_loads_the_real_mimo_tokenizer_config(tmp_path):
    mimo_cfg = json.loads((MIMO_REF / "tokenizer_config.json").read_text())
    small = train_tokenizer(CORPUS, vocab_size=400)
    # a small tokenizer.json holding MiMo's added tokens (ids differ from the real 151643..., contents match)
    contents = [v["content"] for _, v in sorted(mimo_cfg["added_tokens_decoder"].items(), key=lambda kv: int(kv[0]))]
    small.backend.add_special_tokens([c for c in contents if small.token_to_id(c) is None])
    small.backend.save(str(tmp_path / "tokenizer.json"))
    shutil.copy(MIMO_REF / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    t = load_tokenizer(tmp_path)
    assert t.eos_token == "<|im_end|>" and t.eos_id == t.token_to_id("<|im_end|>")
    assert t.pad_token == "<|endoftext|>" and t.bos_id == t.pad_id  # MiMo has bos_token null
    assert t.model_max_length == 131072
    assert t.chat_template == mimo_cfg["chat_template"]
    assert t.encode("<|im_start|>user\nhi<|im_end|>")[0] == t.token_to_id("<|im_start|>")
    t.save(tmp_path / "resaved")  # keeps MiMo's template and special-token list
    again = json.loads((tmp_path / "resaved" / "tokenizer_config.json").read_text())
    assert again["chat_template"] == mimo_cfg["chat_template"]
    assert again["additional_special_tokens"] == mimo_cfg["additional_special_tokens"]


def test_config_naming_unknown_added_token_is_an_error(tok, tmp_path):
    _, tc = _write_pair(tok, tmp_path)
    cfg = json.loads(tc.read_text())
    cfg["added_tokens_decoder"]["99999"] = {"content": "<|not_in_vocab|>", "special": True}
    tc.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="not_in_vocab"):
        load_tokenizer(tmp_path)
