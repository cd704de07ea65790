"""Byte-level BPE tokenizer, the one chat format, and (ids, loss_mask) rendering of conversations.

Built on the ``tokenizers`` library.  A checkpoint folder holds ``tokenizer.json`` (the fast
tokenizer) and ``tokenizer_config.json`` (special tokens, chat template) in the Hugging Face
layout, so ``transformers.AutoTokenizer.from_pretrained(folder)`` loads what :meth:`Tokenizer.save`
writes, and :func:`load_tokenizer` also reads the real MiMo-7B / Qwen2 layout.

The chat format (Qwen/MiMo style), shared by SFT, RL, evaluation and the server::

    <|im_start|>{role}\\n{content}<|im_end|>\\n          one per message, no default system prompt
    <|im_start|>assistant\\n                             the generation prompt

An assistant message with a ``reasoning_content`` field renders its content as
``<think>\\n{reasoning}\\n</think>\\n\\n{answer}`` (newlines around the reasoning and before the
answer are stripped first); content that already contains a think block is kept as it is.

Special tokens.  ``<|endoftext|>`` (pad, and bos where a bos is wanted; it is never added
automatically), ``<|im_start|>`` and ``<|im_end|>`` (eos) are special: ``decode(...,
skip_special_tokens=True)`` drops them.  ``<think>`` and ``</think>`` are added tokens (always one
id each, never split by BPE) but *not* special: they are part of the text the model reasons in,
so ``skip_special_tokens=True`` keeps them and :func:`split_reasoning` still works on the decoded
text.  transformers behaves the same with the saved config (they are not in
``additional_special_tokens``).  Tokenizers loaded from elsewhere (e.g. MiMo's, where the think
tags are plain text) report ``think_start_id``/``think_end_id`` as ``None``.

Simplification: :meth:`Tokenizer.apply_chat_template` always renders the format above in Python;
a different ``chat_template`` found in a loaded ``tokenizer_config.json`` is kept (as
``.chat_template``) and re-saved, but not executed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as _HFTokenizer

from openmimo.config import ConfigError

__all__ = [
    "Tokenizer", "train_tokenizer", "load_tokenizer", "split_reasoning", "format_assistant", "format_chat",
    "CHAT_TEMPLATE", "ENDOFTEXT", "IM_START", "IM_END", "THINK_START", "THINK_END",
]

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
THINK_START, THINK_END = "<think>", "</think>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)  # stripped by skip_special_tokens
THINK_TOKENS = (THINK_START, THINK_END)  # added, never split, never stripped
DEFAULT_MAX_LENGTH = 32768

# Qwen2's pre-tokenisation split: single digits (good for arithmetic), words, punctuation runs, newlines.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The Jinja twin of `Tokenizer.apply_chat_template` (tested for equality through transformers).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- set content = message.get('content') or '' %}"
    "{%- if message['role'] == 'assistant' and message.get('reasoning_content') is not none %}"
    "{%- set content = '<think>\\n' + message['reasoning_content'].strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_ROLES = ("system", "user", "assistant", "tool")


def format_assistant(content: str | None, reasoning: str | None = None) -> str:
    """The text of an assistant turn: ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``, or just the content."""
    content = content or ""
    if reasoning is None:
        return content
    return f"{THINK_START}\n{reasoning.strip(chr(10))}\n{THINK_END}\n\n{content.lstrip(chr(10))}"


def split_reasoning(text: str) -> tuple[str | None, str]:
    """Split a model's output into ``(reasoning, answer)``.

    ``"<think>\\nR\\n</think>\\n\\nA"`` -> ``("R", "A")``.  Without a think block the reasoning is
    ``None`` and the whole text is the answer; an unclosed ``<think>`` (generation cut off)
    gives all of the rest as reasoning and an empty answer.  A missing opening tag before a
    ``</think>`` (prompts that already end in ``<think>``) is accepted.
    """
    end = text.find(THINK_END)
    start = text.find(THINK_START)
    if end < 0:
        if start < 0:
            return None, text
        return text[start + len(THINK_START):].strip("\n"), ""
    begin = start + len(THINK_START) if 0 <= start < end else 0
    return text[begin:end].strip("\n"), text[end + len(THINK_END):].lstrip("\n")


def _render(messages: Sequence[dict], add_generation_prompt: bool) -> tuple[str, list[tuple[int, int]]]:
    """The chat string and the character spans that are trained on (assistant content + <|im_end|>)."""
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise ValueError(f"message {i} must be a dict with a 'role' (got {m!r:.80})")
        role = m["role"]
        if role not in _ROLES:
            raise ValueError(f"message {i}: unknown role {role!r} (choose from {', '.join(_ROLES)})")
        content = m.get("content") or ""
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be a string, got {type(content).__name__}")
        if role == "assistant":
            content = format_assistant(content, m.get("reasoning_content"))
        head = f"{IM_START}{role}\n"
        body = content + IM_END
        if role == "assistant":
            spans.append((pos + len(head), pos + len(head) + len(body)))
        piece = head + body + "\n"
        out.append(piece)
        pos += len(piece)
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out), spans


def format_chat(messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """The chat-format string of ``messages`` (what :meth:`Tokenizer.apply_chat_template` returns)."""
    return _render(messages, add_generation_prompt)[0]


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the special-token ids and the chat format."""

    def __init__(self, tok: _HFTokenizer, config: dict | None = None):
        self._tok = tok
        config = dict(config or {})
        self.config = config
        self.eos_token = _token_str(config.get("eos_token")) or IM_END
        self.pad_token = _token_str(config.get("pad_token")) or ENDOFTEXT
        self.bos_token = _token_str(config.get("bos_token")) or self.pad_token
        self.model_max_length = int(config.get("model_max_length") or DEFAULT_MAX_LENGTH)
        self.chat_template = config.get("chat_template") or CHAT_TEMPLATE
        for name in ("eos_token", "pad_token", "bos_token"):
            if tok.token_to_id(getattr(self, name)) is None:
                raise ValueError(f"{name} {getattr(self, name)!r} is not in the vocabulary")
        self.eos_id = tok.token_to_id(self.eos_token)
        self.pad_id = tok.token_to_id(self.pad_token)
        self.bos_id = tok.token_to_id(self.bos_token)
        self.im_start_id = tok.token_to_id(IM_START)
        self.im_end_id = tok.token_to_id(IM_END)
        self.think_start_id = tok.token_to_id(THINK_START)
        self.think_end_id = tok.token_to_id(THINK_END)

    # -- basic encoding -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the model's embedding needs at least this many rows)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> _HFTokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tok

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens written in the text become their ids; no bos/eos added."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``.  ``skip_special_tokens`` drops <|endoftext|>/<|im_start|>/<|im_end|> but keeps think tags."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def decode_batch(self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(int(i))

    # -- chat -----------------------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        """The conversation as one string in the chat format (see the module docstring)."""
        return _render(messages, add_generation_prompt)[0]

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
        """``(ids, loss_mask)`` of a conversation: ids == ``encode(apply_chat_template(...))``.

        The mask is 1 on the tokens of each assistant turn's content (think block included) and
        its closing ``<|im_end|>``; 0 on role headers, system/user/tool text, the newline after
        ``<|im_end|>`` and the generation prompt.  Tokens are assigned by where they start in the
        text, so the ids are exactly those of the whole string, never a re-segmentation.
        """
        text, spans = _render(messages, add_generation_prompt)
        enc = self._tok.encode(text, add_special_tokens=False)
        mask = [0] * len(enc.ids)
        k = 0
        for t, (start, _end) in enumerate(enc.offsets):
            while k < len(spans) and start >= spans[k][1]:
                k += 1
            if k < len(spans) and spans[k][0] <= start < spans[k][1]:
                mask[t] = 1
        return list(enc.ids), mask

    # -- files ----------------------------------------------------------------------------------
    def hf_config(self) -> dict:
        """The ``tokenizer_config.json`` dict (Hugging Face layout)."""
        added = {}
        for i, tok in sorted(self._tok.get_added_tokens_decoder().items()):
            added[str(i)] = {
                "content": tok.content, "lstrip": tok.lstrip, "normalized": tok.normalized,
                "rstrip": tok.rstrip, "single_word": tok.single_word, "special": tok.special,
            }
        extra = [t for t in (IM_START, IM_END) if self.token_to_id(t) is not None]
        keep = {k: v for k, v in self.config.items() if k not in ("added_tokens_decoder",)}
        cfg = {
            "add_bos_token": False,
            "add_eos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": added,
            "additional_special_tokens": keep.get("additional_special_tokens", extra),
            "bos_token": self.bos_token,
            "chat_template": self.chat_template,
            "clean_up_tokenization_spaces": False,
            "eos_token": self.eos_token,
            "errors": "replace",
            "model_max_length": self.model_max_length,
            "pad_token": self.pad_token,
            "split_special_tokens": False,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "unk_token": None,
        }
        return cfg

    def save(self, path: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` into folder ``path`` (atomically, file by file)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "tokenizer.json.tmp"
        self._tok.save(str(tmp))
        os.replace(tmp, folder / "tokenizer.json")
        tmp = folder / "tokenizer_config.json.tmp"
        tmp.write_text(json.dumps(self.hf_config(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, folder / "tokenizer_config.json")

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, eos={self.eos_token!r}, pad={self.pad_token!r})"


def _token_str(value) -> str | None:
    """A special token as written in tokenizer_config.json: a string, a dict with 'content', or null."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2,
                    model_max_length: int = DEFAULT_MAX_LENGTH) -> Tokenizer:
    """Train a byte-level BPE of at most ``vocab_size`` ids (specials and think tags included).

    Ids 0-2 are ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``; the think tags take the last
    two ids.  Every byte is in the initial alphabet, so any text encodes and decodes exactly.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS) + len(THINK_TOKENS) + 1:
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS) + len(THINK_TOKENS) + 1} "
                         f"(256 bytes + special tokens), got {vocab_size}")
    tok = _HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(THINK_TOKENS),
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((t for t in texts if t), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return Tokenizer(tok, {"model_max_length": model_max_length})


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load ``tokenizer.json`` + ``tokenizer_config.json`` from a checkpoint folder.

    Reads both openmimo's files and the MiMo/Qwen2 layout.  A missing or malformed file raises
    one :class:`~openmimo.config.ConfigError` naming it.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: tokenizer folder not found")
    tok_file, cfg_file = folder / "tokenizer.json", folder / "tokenizer_config.json"
    for f in (tok_file, cfg_file):
        if not f.is_file():
            raise ConfigError(f"{f}: missing (a tokenizer folder needs tokenizer.json and tokenizer_config.json)")
    try:
        tok = _HFTokenizer.from_file(str(tok_file))
    except Exception as e:  # tokenizers raises a bare Exception for bad JSON or unknown fields
        raise ConfigError(f"{tok_file}: not a valid tokenizer file ({e})") from None
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{cfg_file}: malformed JSON ({e})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{cfg_file}: expected a JSON object, got {type(config).__name__}")
    # Tokens listed in added_tokens_decoder but absent from tokenizer.json are registered here.
    for i, spec in sorted((config.get("added_tokens_decoder") or {}).items(), key=lambda kv: int(kv[0])):
        content = spec.get("content") if isinstance(spec, dict) else None
        if content and tok.token_to_id(content) is None:
            raise ConfigError(f"{cfg_file}: added token {content!r} (id {i}) is not in {tok_file.name}")
    try:
        return Tokenizer(tok, config)
    except ValueError as e:
        raise ConfigError(f"{cfg_file}: {e}") from None
