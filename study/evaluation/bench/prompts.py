"""The text a benchmark asks a run's model, from the run's config: its tokenizer, start token and template.

- Multiple choice: with a transformers LLM the context is the hint, the question and the lettered options
  ("A. ...") followed by "Answer:", and each option's own text is the scored continuation, so the order of the
  options (which circular evaluation rotates) is part of what the model sees. The miniature LLM's closed
  vocabulary has no letters: its context is the hint and the question, the option's words the continuation.
- Classification: the prompt ("a photo of a {}." with a transformers LLM, "{}" in the miniature one, or the
  task's `prompt.txt`) is split at `{}`: the text before it is the context, the class name and the rest the
  continuation.
Only a continuation's own tokens are scored (`study.evaluation.likelihood`).
"""

from __future__ import annotations

from study.config import RunConfig
from study.data.text import TextCodec
from study.evaluation.bench.items import LETTERS, ChoiceItem

HF_CLASS_PROMPT, MINI_CLASS_PROMPT = "a photo of a {}.", "{}"


class Prompts:
    """Token ids of benchmark contexts and continuations, in the prompt form of the run's backbone."""

    def __init__(self, cfg: RunConfig):
        self.codec = TextCodec(cfg)
        self.lettered = cfg.model.backbone == "hf"

    def _join(self, context: str, continuations: list[str]) -> tuple[list[int], list[list[int]]]:
        """(start token + context ids, the ids of each continuation)."""
        head = [self.codec.start, *self.codec.ids(context)] if context else [self.codec.start]
        return head, [self.codec.ids(c) for c in continuations]

    def choice(self, item: ChoiceItem, order: list[int]) -> tuple[list[int], list[list[int]]]:
        """Context and continuations of `item` with its options shown in `order` (indices into item.options);
        text the tokenizer cannot encode is a ValueError naming the row."""
        try:
            return self._choice(item, order)
        except ValueError as e:
            raise ValueError(f"row {item.id}: {e}") from None

    def _choice(self, item: ChoiceItem, order: list[int]) -> tuple[list[int], list[list[int]]]:
        options = [item.options[i] for i in order]
        if not self.lettered:
            return self._join(" ".join(t for t in (item.hint, item.question) if t), options)
        lines = [item.hint] if item.hint else []
        lines += [item.question, *(f"{LETTERS[k]}. {text}" for k, text in enumerate(options)), "Answer:"]
        return self._join("\n".join(lines), [f" {text}" for text in options])

    def classes(self, names: list[str], template: str | None) -> tuple[list[int], list[list[int]]]:
        """Context and one continuation per class name."""
        template = template or (HF_CLASS_PROMPT if self.lettered else MINI_CLASS_PROMPT)
        before, after = template.split("{}")
        context = before.rstrip() if self.lettered else before.strip()
        space = " " if self.lettered and before.endswith(" ") else ""
        try:
            return self._join(context, [f"{space}{name}{after}" for name in names])
        except ValueError as e:
            raise ValueError(f"class prompts: {e}") from None
