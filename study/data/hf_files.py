"""Reading the files of transformers checkpoints from local directories (configs, preprocessor configs,
tokenizers): nothing is ever downloaded, and a failure is one error naming the config key and the path.
Building models from them is `study.model.hf`'s."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from study.errors import UserError


def load_local(key: str, path: str, loader: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `loader(path, ...)` on local files only; a failure is one UserError naming `model.<key>` and the path."""
    try:
        return loader(path, *args, local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as e:
        reason = f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
        raise UserError(f"config key 'model.{key}': cannot load '{path}': {reason}") from None


def read_config(key: str, path: str) -> Any:
    """The transformers config of the checkpoint in `path` (`model.<key>`)."""
    from transformers import AutoConfig

    return load_local(key, path, AutoConfig.from_pretrained)


def vision_spec(path: str) -> tuple[int, list[float], list[float]]:
    """(image side, mean, std) of a vision checkpoint: its preprocessor config, else its model config."""
    config = read_config("vision_path", path)
    config = getattr(config, "vision_config", config)
    proc_file = Path(path) / "preprocessor_config.json"
    proc = json.loads(proc_file.read_text()) if proc_file.is_file() else {}
    size = proc.get("crop_size") if proc.get("do_center_crop", "crop_size" in proc) else proc.get("size")
    if isinstance(size, dict):
        size = size.get("height", size.get("shortest_edge"))
    return int(size or config.image_size), proc.get("image_mean", [0.5] * 3), proc.get("image_std", [0.5] * 3)


def load_tokenizer(path: str) -> Any:
    """The Hugging Face tokenizer at a local path (config key 'llm_path'), with a one-line error."""
    from transformers import AutoTokenizer

    return load_local("llm_path", path, AutoTokenizer.from_pretrained)


def special_ids(tokenizer: Any) -> tuple[int, int, int]:
    """(pad, start, end) ids; the start is <bos> where the tokenizer has one, else <eos> (Qwen style). Without a
    pad token <eos> pads, and the end of a caption is then not scored."""
    end = tokenizer.eos_token_id
    if end is None:
        raise UserError("config key 'model.llm_path': the tokenizer has no end-of-text token")
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else end
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    return pad, start, end
