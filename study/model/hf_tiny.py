"""Tiny randomly initialised checkpoints of every backbone class, for tests and dry runs (nothing downloaded).

`write_tiny(out)` writes, each in its own directory, in the format the real checkpoints use:
`dinov2` and `siglip` vision models (with their preprocessor configs), `qwen2` and `llama` causal LMs
with a small byte-level BPE tokenizer trained here on the miniature world's words, and a KL `vae`
(diffusers AutoencoderKL, downsampling 2x).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from study.data.tokenizer import VOCAB

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

WIDTH, LLM_WIDTH, LAYERS, HEADS = 32, 48, 2, 2  # the LLM is wider, so the projector maps between widths
VOCAB_SIZE = 320  # byte alphabet + merges + specials, below the LMs' embedding size
SPECIALS = ("<pad>", "<s>", "</s>")


def world_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer trained on the miniature world's words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - 8, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(VOCAB[3:])] * 4 + ["a photo of a cat on the mat"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=SPECIALS[0], bos_token=SPECIALS[1],
                                   eos_token=SPECIALS[2])


def write_preprocessor(path: Path, processor: str, size: int) -> None:
    """The image processor config, in each family's own style (DINOv2: centre crop; SigLIP: plain resize)."""
    side = {"height": size, "width": size}
    config = ({"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "do_center_crop": True,
               "crop_size": side, "size": {"shortest_edge": size}} if processor == "BitImageProcessor" else
              {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "size": side})
    (path / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": processor, **config}))


def write_tiny(out: Path, seed: int = 0) -> dict[str, Path]:
    """Write every tiny checkpoint under `out`; returns {name: directory}."""
    import transformers as tf
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    dims = dict(hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS)
    mlp = dict(intermediate_size=2 * WIDTH)
    lm = dict(dims, hidden_size=LLM_WIDTH, intermediate_size=2 * LLM_WIDTH, vocab_size=VOCAB_SIZE,
              num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=1,
              eos_token_id=2, pad_token_id=0)
    models = {
        "dinov2": (tf.Dinov2Model(tf.Dinov2Config(image_size=28, patch_size=7, mlp_ratio=2, **dims)),
                   "BitImageProcessor", 28),
        "siglip": (tf.SiglipVisionModel(tf.SiglipVisionConfig(image_size=32, patch_size=8, **dims, **mlp)),
                   "SiglipImageProcessor", 32),
        "qwen2": (tf.Qwen2ForCausalLM(tf.Qwen2Config(**lm)), None, 0),
        "llama": (tf.LlamaForCausalLM(tf.LlamaConfig(**lm)), None, 0),
        "vae": (AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                              block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                              sample_size=32), None, 0),
    }
    tokenizer = world_tokenizer()
    paths = {}
    for name, (model, processor, size) in models.items():
        paths[name] = path = out / name
        model.save_pretrained(path)
        if processor:
            write_preprocessor(path, processor, size)
        if name in ("qwen2", "llama"):
            tokenizer.save_pretrained(path)
    return paths
