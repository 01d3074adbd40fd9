"""A word-level tokenizer with the miniature world's fixed vocabulary."""

from __future__ import annotations

from study.data.world import COLOURS, LOCATIONS, NUMBERS, SHAPES, SIZES

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
VOCAB: tuple[str, ...] = (PAD, BOS, EOS, "there", "are", "objects", "at", ".", *NUMBERS, *SIZES, *COLOURS,
                          *SHAPES, *LOCATIONS)
TOKEN_ID = {w: i for i, w in enumerate(VOCAB)}
PAD_ID, BOS_ID, EOS_ID = TOKEN_ID[PAD], TOKEN_ID[BOS], TOKEN_ID[EOS]


def encode(words: tuple[str, ...] | list[str], eos: bool = True) -> list[int]:
    """[<bos>] + words (+ [<eos>]) as ids; an unknown word is a KeyError (the vocabulary is closed)."""
    return [BOS_ID, *(TOKEN_ID[w] for w in words)] + ([EOS_ID] if eos else [])


def decode(ids: list[int]) -> list[str]:
    """Token ids back to words, padding dropped."""
    return [VOCAB[i] for i in ids if i != PAD_ID]


def max_caption_tokens(max_objects: int) -> int:
    """<bos> + count sentence + 6 words per object + <eos>."""
    return 1 + 5 + 6 * max_objects + 1
