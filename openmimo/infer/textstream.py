"""Incremental detokenisation for streaming, and stop-string search.  Pure helpers."""

from __future__ import annotations


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas, in time linear in the sequence's length.

    Each push decodes only a short window: the tokens since the previous emission plus the chunk before them
    (so that merges across the boundary and a decoder's handling of a window's first token come out the same
    in both decodes), and emits the difference.  A trailing U+FFFD, an incomplete UTF-8 character, is held back
    until more tokens (or ``final``) arrive.  Special tokens are skipped, as in the non-streaming reply.  The
    concatenated deltas equal the decode of the whole sequence (tests/test_textstream.py checks it).
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.text = ""  # text emitted so far
        self._prefix = 0  # window start: the first token of the chunk before the unread tokens
        self._read = 0  # tokens whose text has been emitted

    def push(self, token_ids, final: bool = False) -> str:
        self.ids += list(token_ids)
        decode = self.tokenizer.decode
        before = decode(self.ids[self._prefix:self._read], skip_special_tokens=self.skip)
        window = decode(self.ids[self._prefix:], skip_special_tokens=self.skip)
        if not final and window.endswith("\ufffd"):
            return ""
        if window.startswith(before):
            delta = window[len(before):]
        else:  # the new tokens rewrote the window's earlier text (rare): fall back to the whole decode
            full = decode(self.ids, skip_special_tokens=self.skip)
            delta = full[len(self.text):] if full.startswith(self.text) else ""
        if not delta and not final:
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        self.text += delta
        return delta


def find_stop(text: str, stops: list[str], new_from: int) -> int | None:
    """Index in ``text`` where the first stop string starts, considering matches that end after ``new_from``."""
    best = None
    for s in stops:
        i = text.find(s, max(0, new_from - len(s) + 1))
        if i >= 0 and (best is None or i < best):
            best = i
    return best
