"""Chat templates: the one place a conversation becomes text (and ``(ids, loss_mask)``).

A checkpoint's chat template is its own Jinja template, read from the checkpoint folder
(``chat_template.jinja`` if present, else ``tokenizer_config.json``'s ``chat_template``, which may
also be a list of named templates, ``default`` chosen) — the same precedence as transformers.  It
is rendered the way ``transformers``' ``apply_chat_template`` renders it:

* an ``ImmutableSandboxedEnvironment`` with ``trim_blocks`` and ``lstrip_blocks`` and the
  ``loopcontrols`` extension; globals ``raise_exception`` (raises ``TemplateError``),
  ``strftime_now``, ``dict`` and ``namespace``; a ``tojson`` filter that does not escape HTML;
* messages with ``None``-valued keys dropped, and reasoning under ``thinking`` / ``reasoning`` /
  ``reasoning_content`` copied to both ``reasoning_content`` and ``thinking``;
* variables ``messages``, ``tools``, ``documents``, ``add_generation_prompt``, and the tokenizer's
  named special tokens that are set (``bos_token``, ``eos_token``, ``pad_token``, ``unk_token``)
  as strings, overridable by keyword arguments.

The MiMo-7B template inserts its default system prompt (:data:`MIMO_DEFAULT_SYSTEM_PROMPT`) when
the conversation has no system message; rendering it here does the same.

openmimo's own format (:data:`DEFAULT_CHAT_TEMPLATE`, written into every tokenizer folder openmimo
saves) is the Qwen/MiMo layout without a default system prompt::

    <|im_start|>{role}\\n{content}<|im_end|>\\n          one per message
    <|im_start|>assistant\\n                             the generation prompt

where an assistant message with ``reasoning_content`` renders ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.ext
import tokenizers
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "DEFAULT_CHAT_TEMPLATE", "MIMO_DEFAULT_SYSTEM_PROMPT", "THINK_START", "THINK_END", "ROLES",
    "load_chat_template", "render", "render_ids_and_mask", "template_special_tokens", "validate_messages",
    "format_assistant", "split_reasoning",
]

THINK_START, THINK_END = "<think>", "</think>"
MIMO_DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
ROLES = ("system", "user", "assistant", "tool")
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- set content = message.get('content') or '' %}"
    "{%- if message['role'] == 'assistant' and message.get('reasoning_content') is not none %}"
    "{%- set content = '<think>\\n' + message['reasoning_content'].strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


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


# -- loading ------------------------------------------------------------------------------------
def load_chat_template(folder: str | Path) -> str | None:
    """The chat template of a checkpoint/tokenizer folder, or ``None`` when it has none.

    ``chat_template.jinja`` wins over ``tokenizer_config.json``'s ``chat_template`` (a string, or a
    list of ``{"name", "template"}`` from which ``default`` is taken).  A malformed file raises
    ``ValueError`` naming it.
    """
    folder = Path(folder)
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    cfg_file = folder / "tokenizer_config.json"
    if not cfg_file.is_file():
        return None
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_file}: malformed JSON ({e})") from None
    return template_from_config(cfg, cfg_file)


def template_from_config(cfg: Mapping, where: str | Path = "tokenizer_config.json") -> str | None:
    """``cfg['chat_template']`` as one template string (``default`` of a named list), or ``None``."""
    value = cfg.get("chat_template") if isinstance(cfg, Mapping) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, Mapping)}
        if isinstance(named.get("default"), str):
            return named["default"]
        raise ValueError(f"{where}: chat_template is a list without a 'default' template (names: {sorted(map(str, named))})")
    raise ValueError(f"{where}: chat_template must be a string or a list of named templates, "
                      f"got {type(value).__name__}")


# -- rendering ----------------------------------------------------------------------------------
def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


class _TemplateDict:
    """``dict(...)`` inside a template without exposing the type object."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """``namespace(...)`` that refuses underscore names (no reach into interpreter internals)."""

    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attributes ({name!r})")


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(template)


def validate_messages(messages: Sequence[Mapping]) -> None:
    """Raise ``ValueError`` naming the first message that is not ``{"role": ROLE, "content": str | None, ...}``."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m:
            raise ValueError(f"message {i} must be a dict with a 'role' (got {m!r:.80})")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i}: unknown role {m['role']!r} (choose from {', '.join(ROLES)})")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise ValueError(f"message {i}: content must be a string, got {type(content).__name__}")
        for key in _REASONING_FIELDS:
            if m.get(key) is not None and not isinstance(m[key], str):
                raise ValueError(f"message {i}: {key} must be a string, got {type(m[key]).__name__}")


def _normalise(messages: Sequence[Mapping]) -> list[dict]:
    """transformers' message preparation: drop ``None`` keys; alias the reasoning fields."""
    out = []
    for m in messages:
        m = {k: v for k, v in m.items() if v is not None}
        reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


def render(messages: Sequence[Mapping], template: str | None = None, *, add_generation_prompt: bool = False,
           special_tokens: Mapping[str, str] | None = None, tools: list | None = None,
           documents: list | None = None, **kwargs: Any) -> str:
    """``messages`` rendered by ``template`` (default: :data:`DEFAULT_CHAT_TEMPLATE`) as transformers renders it.

    ``special_tokens`` are the named tokens the template sees (see :func:`template_special_tokens`);
    ``kwargs`` are further template variables (they override ``special_tokens``).  A template that
    calls ``raise_exception`` raises ``jinja2.TemplateError``.
    """
    validate_messages(messages)
    variables = {**dict(special_tokens or {}), **kwargs}
    return _compile(template or DEFAULT_CHAT_TEMPLATE).render(
        messages=_normalise(messages), tools=tools, documents=documents,
        add_generation_prompt=add_generation_prompt, **variables)


def template_special_tokens(tokenizer) -> dict[str, str]:
    """The named special tokens transformers passes to a template for ``tokenizer`` (only those set).

    Works for an openmimo ``Tokenizer`` (its ``template_special_tokens()``) and for a transformers
    tokenizer (its ``special_tokens_map``).
    """
    own = getattr(tokenizer, "template_special_tokens", None)
    if callable(own):
        return dict(own())
    mapping = getattr(tokenizer, "special_tokens_map", None) or {}
    return {k: str(v) for k, v in mapping.items() if k in _SPECIAL_TOKEN_NAMES and v is not None}


def _encode_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    backend = getattr(tokenizer, "backend", None)
    if isinstance(backend, tokenizers.Tokenizer):  # an openmimo Tokenizer
        enc = backend.encode(text, add_special_tokens=False)
        return list(enc.ids), list(enc.offsets)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # transformers fast tokenizer
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _template_reads_reasoning(template: str) -> bool:
    return re.search(r"\b(reasoning_content|thinking|reasoning)\b", template) is not None


def assistant_spans(messages: Sequence[Mapping], template: str | None = None, *,
                    add_generation_prompt: bool = False, **render_kwargs: Any) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of each assistant turn (what is trained on).

    A turn's span is what rendering message ``i`` adds after the generation prompt of
    ``messages[:i]``, trailing whitespace excluded: for the Qwen/MiMo layout, the content (think
    block included) and its ``<|im_end|>``, not the newline after it.  A template whose rendering
    of a prefix is not a prefix of the whole (one that rewrites earlier turns) raises ``ValueError``.
    """
    full = render(messages, template, add_generation_prompt=add_generation_prompt, **render_kwargs)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(messages[:i], template, add_generation_prompt=True, **render_kwargs) if i else \
            _generation_prompt_only(template, **render_kwargs)
        through = render(messages[:i + 1], template, add_generation_prompt=False, **render_kwargs)
        if not through.startswith(before) or not full.startswith(through):
            raise ValueError(f"message {i}: the chat template does not render conversations prefix-stably "
                             f"(it rewrites earlier turns), so its assistant tokens cannot be located")
        end = len(through.rstrip())
        spans.append((len(before), max(end, len(before))))
    return full, spans


def _generation_prompt_only(template: str | None, **render_kwargs: Any) -> str:
    """The text before the first assistant turn of a conversation that starts with one."""
    probe = [{"role": "assistant", "content": "\x00"}]
    text = render(probe, template, add_generation_prompt=False, **render_kwargs)
    cut = text.find("\x00")
    if cut < 0:
        raise ValueError("the chat template drops assistant content; its assistant tokens cannot be located")
    return text[:cut]


def render_ids_and_mask(tokenizer, messages: Sequence[Mapping], template: str | None = None, *,
                        add_generation_prompt: bool = False, **kwargs: Any) -> tuple[list[int], list[int]]:
    """``(ids, loss_mask)`` of a conversation for SFT/RL: loss on assistant tokens only.

    Args:
        tokenizer: an openmimo ``Tokenizer`` or a transformers fast tokenizer.
        messages: ``[{"role": ..., "content": ..., "reasoning_content"?: ...}, ...]``.
        template: a Jinja chat template; ``None`` uses ``tokenizer.chat_template`` (or openmimo's).
        add_generation_prompt: end with the assistant header (for generation; never trained on).
        kwargs: further template variables.

    Returns ``ids`` == the tokens of the whole rendered string (no re-segmentation at turn
    boundaries) and ``loss_mask`` (1 on each assistant turn's tokens: its content, ``<think>``
    block included, and its end-of-turn token; 0 elsewhere).  A token belongs to the turn its
    first character falls in.  Reasoning in ``reasoning_content`` is kept: for a template that does
    not read reasoning fields (MiMo's) it is folded into the content as a ``<think>`` block first.
    """
    template = template or getattr(tokenizer, "chat_template", None) or DEFAULT_CHAT_TEMPLATE
    validate_messages(messages)
    if not _template_reads_reasoning(template):
        messages = [_fold_reasoning(m) for m in messages]
    kwargs = {**template_special_tokens(tokenizer), **kwargs}
    text, spans = assistant_spans(messages, template, add_generation_prompt=add_generation_prompt, **kwargs)
    ids, offsets = _encode_with_offsets(tokenizer, text)
    mask = [0] * len(ids)
    k = 0
    for t, (start, _end) in enumerate(offsets):
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        if k < len(spans) and spans[k][0] <= start < spans[k][1]:
            mask[t] = 1
    return ids, mask


def _fold_reasoning(m: Mapping) -> Mapping:
    if m.get("role") != "assistant":
        return m
    reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
    if reasoning is None:
        return m
    rest = {k: v for k, v in m.items() if k not in _REASONING_FIELDS}
    return {**rest, "content": format_assistant(m.get("content"), reasoning)}
