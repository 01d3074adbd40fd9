"""Text <-> token ids for a run's LLM: the miniature world's closed word vocabulary, or the transformers tokenizer
of `model.llm_path`; with the start, end and pad ids that run uses."""

from __future__ import annotations

from study.config import RunConfig
from study.data.hf_files import load_tokenizer, special_ids
from study.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, TOKEN_ID, VOCAB


class TextCodec:
    """Caption text to ids and back, with the miniature vocabulary or an upstream tokenizer."""

    def __init__(self, cfg: RunConfig):
        self.tokenizer = None
        if cfg.model.backbone == "hf":
            self.tokenizer = load_tokenizer(cfg.model.llm_path)
            self.pad_id, self.start, self.end = special_ids(self.tokenizer)
        else:
            self.pad_id, self.start, self.end = PAD_ID, BOS_ID, EOS_ID

    def ids(self, text: str) -> list[int]:
        """The ids of `text`, no special tokens; for the miniature vocabulary a ValueError names unknown words."""
        if self.tokenizer is not None:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        words = text.split()
        unknown = [w for w in words if w not in TOKEN_ID]
        if unknown:
            raise ValueError(f"words outside the miniature vocabulary: {unknown[:3]}")
        return [TOKEN_ID[w] for w in words]

    def text(self, ids: list[int]) -> str:
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return " ".join(VOCAB[i] for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID))
