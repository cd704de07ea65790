"""Incremental detokenisation for streaming, and stop-string search.  Pure helpers."""

from __future__ import annotations


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas.

    The whole sequence is decoded each time (simple and exact: BPE merges across token boundaries
    and multi-byte characters split over tokens come out right); a trailing U+FFFD — an incomplete
    UTF-8 character — is held back until more tokens (or ``final``) arrive.  Special tokens are
    skipped, as in the non-streaming reply.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.text = ""  # text emitted so far

    def push(self, token_ids, final: bool = False) -> str:
        self.ids += list(token_ids)
        full = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip)
        if not final and full.endswith("\ufffd"):
            full = full.rstrip("\ufffd")
        if not full.startswith(self.text):  # a decode that rewrote earlier text: emit only what is new
            delta = full[len(self.text):] if len(full) > len(self.text) else ""
        else:
            delta = full[len(self.text):]
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
