"""Chat templates: rendering equals transformers' (MiMo-7B's template and openmimo's), loss masks, loading."""

import json
from pathlib import Path

import jinja2
import pytest

from openmimo import chat
from openmimo.tokenizer import load_tokenizer, train_tokenizer

MIMO_REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "mimo-7b"
CORPUS = ["What is 17 + 25? 17 + 25 = 42, so the answer is \\boxed{42}.",
          "def add(a, b):\n    return a + b\n", "You are a helpful assistant. Solve for x: 3x + 4 = 19."] * 30

CONVS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Solve 3x + 4 = 19."},
     {"role": "assistant", "reasoning_content": "3x = 15.\nx = 5.", "content": "x = 5"},
     {"role": "user", "content": "And 2x = 8?"},
     {"role": "assistant", "content": "<think>\n8 / 2 = 4\n</think>\n\nx = 4", "tool_calls": None}],
    [{"role": "user", "content": "call it"},
     {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"x": "<é>"}}}]},
     {"role": "tool", "content": "42"}, {"role": "tool", "content": "43"},
     {"role": "assistant", "content": "done 世界"}],
]


def _mimo_template():
    if not (MIMO_REF / "tokenizer_config.json").is_file():
        pytest.skip("../shared/reference/mimo-7b absent")
    return json.loads((MIMO_REF / "tokenizer_config.json").read_text())["chat_template"]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def _folder_with_template(tok, folder, template, **config):
    tok.save(folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.update(chat_template=template, **config)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("which", ["ours", "mimo"])
def test_rendering_equals_transformers(tok, transformers, tmp_path, which):
    template = chat.DEFAULT_CHAT_TEMPLATE if which == "ours" else _mimo_template()
    folder = _folder_with_template(tok, tmp_path, template, bos_token=None)
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    mine = load_tokenizer(folder)
    assert mine.chat_template == template
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"x": "<b>&"}}}]
    for conv in CONVS:
        for gen in (False, True):
            want = hf.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            assert mine.apply_chat_template(conv, add_generation_prompt=gen) == want
            assert chat.render(conv, template, add_generation_prompt=gen,
                               special_tokens=chat.template_special_tokens(hf)) == want
            assert mine.render_chat(conv, add_generation_prompt=gen)[0] == hf.encode(want, add_special_tokens=False) \
                or which == "mimo"  # MiMo's template drops reasoning_content; render_chat folds it in (below)
        if which == "mimo":
            want = hf.apply_chat_template(conv, tokenize=False, tools=tools, add_generation_prompt=True)
            assert mine.apply_chat_template(conv, add_generation_prompt=True, tools=tools) == want
            assert "<b>&" in want  # tojson does not HTML-escape


def test_mimo_template_adds_its_default_system_prompt():
    template = _mimo_template()
    text = chat.render(CONVS[0], template, add_generation_prompt=True)
    assert text == (f"<|im_start|>system\n{chat.MIMO_DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
                    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n")
    own = chat.render([{"role": "system", "content": "S"}] + CONVS[0], template)
    assert own.startswith("<|im_start|>system\nS<|im_end|>\n") and chat.MIMO_DEFAULT_SYSTEM_PROMPT not in own


def test_special_tokens_raise_exception_and_sandbox(tok, transformers, tmp_path):
    template = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'robot' %}{{ raise_exception('no robots') }}"
                "{% endif %}{{ m.content | tojson }}{{ eos_token }}{% endfor %}{{ extra }}")
    folder = _folder_with_template(tok, tmp_path, template)
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    mine = load_tokenizer(folder)
    conv = [{"role": "user", "content": "<a & b>"}]
    want = hf.apply_chat_template(conv, tokenize=False, extra="X")
    assert want == '<|endoftext|>"<a & b>"<|im_end|>X'
    assert mine.apply_chat_template(conv, extra="X") == want
    with pytest.raises(jinja2.TemplateError, match="no robots"):
        chat.render([{"role": "user", "content": "x"}], "{{ raise_exception('no robots') }}")
    with pytest.raises(jinja2.exceptions.SecurityError):
        chat.render(conv, "{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}")


def test_chat_template_jinja_file_wins(tok, transformers, tmp_path):
    folder = _folder_with_template(tok, tmp_path, chat.DEFAULT_CHAT_TEMPLATE)
    (folder / "chat_template.jinja").write_text("JINJA{{ messages[0].content }}")
    assert chat.load_chat_template(folder) == "JINJA{{ messages[0].content }}"
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    conv = [{"role": "user", "content": "hi"}]
    assert load_tokenizer(folder).apply_chat_template(conv) == hf.apply_chat_template(conv, tokenize=False) == "JINJAhi"
    # a re-save keeps the file and the config in step, so transformers reads the same template
    load_tokenizer(folder).save(folder / "again")
    assert chat.load_chat_template(folder / "again") == "JINJA{{ messages[0].content }}"


def test_named_template_list_and_bad_config(tmp_path):
    cfg = tmp_path / "tokenizer_config.json"
    cfg.write_text(json.dumps({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default",
                                                                                         "template": "D"}]}))
    assert chat.load_chat_template(tmp_path) == "D"
    cfg.write_text(json.dumps({"chat_template": [{"name": "tool_use", "template": "T"}]}))
    with pytest.raises(ValueError, match="default"):
        chat.load_chat_template(tmp_path)
    cfg.write_text("{")
    with pytest.raises(ValueError, match="tokenizer_config.json"):
        chat.load_chat_template(tmp_path)
    assert chat.load_chat_template(tmp_path / "missing") is None


def _masked_text(tok, ids, mask):
    return tok.decode([i for i, m in zip(ids, mask) if m])


@pytest.mark.parametrize("which", ["ours", "mimo"])
def test_loss_mask_covers_assistant_turns_only(tok, which):
    template = chat.DEFAULT_CHAT_TEMPLATE if which == "ours" else _mimo_template()
    conv = CONVS[2]
    ids, mask = chat.render_ids_and_mask(tok, conv, template)
    assert len(ids) == len(mask) and set(mask) <= {0, 1}
    assert _masked_text(tok, ids, mask) == ("<think>\n3x = 15.\nx = 5.\n</think>\n\nx = 5<|im_end|>"
                                            "<think>\n8 / 2 = 4\n</think>\n\nx = 4<|im_end|>")
    # ids are those of the whole rendered string; the reasoning is kept even by MiMo's template
    text = tok.decode(ids)
    assert ids == tok.encode(text) and "3x = 15." in text
    gen_ids, gen_mask = chat.render_ids_and_mask(tok, conv[:2], template, add_generation_prompt=True)
    assert sum(gen_mask) == 0 and tok.decode(gen_ids).endswith("<|im_start|>assistant\n")


def test_loss_mask_with_a_transformers_tokenizer(tok, transformers, tmp_path):
    folder = _folder_with_template(tok, tmp_path, chat.DEFAULT_CHAT_TEMPLATE)
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert chat.render_ids_and_mask(hf, CONVS[2]) == chat.render_ids_and_mask(tok, CONVS[2])


def test_unstable_template_and_bad_messages_are_clear_errors(tok):
    rewrites = ("{% for m in messages %}{% if loop.last %}{{ m.role }}:{{ m.content }}\n{% else %}*{% endif %}"
                "{% endfor %}")
    with pytest.raises(ValueError, match="prefix-stably"):
        chat.render_ids_and_mask(tok, CONVS[1] + [{"role": "user", "content": "again"}], rewrites)
    for bad, msg in [([], "non-empty"), ([{"content": "x"}], "message 0"), ([{"role": "robot", "content": "x"}],
                     "unknown role"), ([{"role": "user", "content": 3}], "content must be a string")]:
        with pytest.raises(ValueError, match=msg):
            chat.render(bad)
