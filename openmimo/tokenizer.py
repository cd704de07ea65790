"""Byte-level BPE tokenizer, the one chat format, and (ids, loss_mask) rendering of conversations.

Built on the ``tokenizers`` library.  A checkpoint folder holds ``tokenizer.json`` (the fast
tokenizer) and ``tokenizer_config.json`` (special tokens, chat template) in the Hugging Face
layout, so ``transformers.AutoTokenizer.from_pretrained(folder)`` loads what :meth:`Tokenizer.save`
writes, and :func:`load_tokenizer` also reads the real MiMo-7B / Qwen2 layout.

Chat.  A tokenizer renders conversations with its own ``chat_template`` (a loaded checkpoint's
Jinja template, e.g. MiMo-7B's with its default system prompt; openmimo's own format for a
freshly trained tokenizer), through :mod:`openmimo.chat` — the one place templates are rendered,
exactly as transformers renders them.  openmimo's format (``CHAT_TEMPLATE``)::

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
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as _HFTokenizer

from openmimo import chat
from openmimo.chat import DEFAULT_CHAT_TEMPLATE as CHAT_TEMPLATE
from openmimo.chat import THINK_END, THINK_START, format_assistant, split_reasoning
from openmimo.config import ConfigError

__all__ = [
    "Tokenizer", "train_tokenizer", "load_tokenizer", "split_reasoning", "format_assistant", "format_chat",
    "CHAT_TEMPLATE", "ENDOFTEXT", "IM_START", "IM_END", "THINK_START", "THINK_END",
]

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)  # stripped by skip_special_tokens
THINK_TOKENS = (THINK_START, THINK_END)  # added, never split, never stripped
DEFAULT_MAX_LENGTH = 32768

# Qwen2's pre-tokenisation split: single digits (good for arithmetic), words, punctuation runs, newlines.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

def format_chat(messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """The conversation in openmimo's own chat format (what a freshly trained tokenizer renders)."""
    return chat.render(messages, CHAT_TEMPLATE, add_generation_prompt=add_generation_prompt)


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

    # -- chat ---------------------------------------------------------------------------------
    def template_special_tokens(self) -> dict[str, str]:
        """The named special tokens a chat template sees, as transformers passes them (those that are set).

        A token named in the loaded ``tokenizer_config.json`` (even as ``null``) is taken from there;
        otherwise the value :meth:`hf_config` writes.
        """
        out = {}
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            value = _token_str(self.config[name]) if name in self.config else getattr(self, name, None)
            if value is not None:
                out[name] = value
        return out

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = False, **kwargs) -> str:
        """The conversation rendered by this tokenizer's chat template (:func:`openmimo.chat.render`)."""
        return chat.render(messages, self.chat_template, add_generation_prompt=add_generation_prompt,
                           special_tokens=self.template_special_tokens(), **kwargs)

    def render_chat(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
        """``(ids, loss_mask)`` of a conversation (:func:`openmimo.chat.render_ids_and_mask` with this template).

        The mask is 1 on the tokens of each assistant turn's content (think block included) and
        its closing ``<|im_end|>``; 0 on role headers, system/user/tool text, the newline after
        ``<|im_end|>`` and the generation prompt.
        """
        return chat.render_ids_and_mask(self, messages, self.chat_template, add_generation_prompt=add_generation_prompt)

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
        jinja_file = folder / "chat_template.jinja"  # transformers prefers it over the config's template
        if jinja_file.exists():
            tmp = folder / "chat_template.jinja.tmp"
            tmp.write_text(self.chat_template, encoding="utf-8")
            os.replace(tmp, jinja_file)

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
        template = chat.load_chat_template(folder)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if template is not None:
        config["chat_template"] = template
    try:
        return Tokenizer(tok, config)
    except ValueError as e:
        raise ConfigError(f"{cfg_file}: {e}") from None
