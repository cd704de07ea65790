"""Streaming detokenisation: the concatenated deltas equal the decode of the whole sequence (the slow oracle),
for every chunking, with multi-byte characters split across tokens and special tokens in between."""

import random

import pytest

from openmimo.infer.textstream import IncrementalDecoder, find_stop
from openmimo.tokenizer import train_tokenizer

TEXTS = ["naïve café — déjà vu, 3 × 4 = 12 ≤ 15, 日本語のテキスト, emoji 🙂🚀 and plain ascii words"] * 30


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, vocab_size=300)


@pytest.mark.parametrize("seed", range(6))
def test_deltas_concatenate_to_the_full_decode(tok, seed):
    rng = random.Random(seed)
    ids = tok.encode(TEXTS[0] + " " + TEXTS[0][::-1])
    if seed % 2:  # random ids too: partial UTF-8 sequences that never complete, special tokens
        ids = [rng.randrange(tok.vocab_size) for _ in range(200)]
    dec, out, i = IncrementalDecoder(tok), [], 0
    while i < len(ids):
        n = rng.choice([1, 1, 2, 3, 7])
        out.append(dec.push(ids[i:i + n], final=i + n >= len(ids)))
        i += n
    assert "".join(out) == dec.text == tok.decode(ids, skip_special_tokens=True)


def test_an_incomplete_character_is_held_back_until_it_completes(tok):
    ids = tok.encode("🙂")
    if len(ids) < 2:
        pytest.skip("the emoji is one token in this vocabulary")
    dec = IncrementalDecoder(tok)
    assert dec.push(ids[:1]) == ""
    assert dec.push(ids[1:], final=True) == "🙂"


def test_decode_work_per_push_does_not_grow_with_the_sequence(tok):
    """Each push decodes a window of the last two chunks, not the whole sequence."""
    seen = []

    class Counting:
        def decode(self, ids, skip_special_tokens=True):
            seen.append(len(ids))
            return tok.decode(ids, skip_special_tokens=skip_special_tokens)

    ids = tok.encode(" ".join(["plain ascii words"] * 200))
    dec = IncrementalDecoder(Counting())
    for t in ids:
        dec.push([t])
    assert max(seen) <= 8 < len(ids)
    assert dec.text == tok.decode(ids)


def test_find_stop_sees_a_stop_string_that_spans_pushes():
    assert find_stop("abc STOP", ["STOP"], new_from=6) == 4
    assert find_stop("abc STOP", ["STOP"], new_from=8) is None
    assert find_stop("xx", ["STOP"], new_from=0) is None
