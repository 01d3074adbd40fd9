"""Pretrained backbones from local directories (transformers, diffusers), behind the miniature model's interfaces.

- `VisionEncoder`: a DINOv2 or SigLIP vision model; images in [0, 1] are normalised with the encoder's own
  mean and std; features are the patch tokens of one hidden layer (the CLS token dropped where there is one).
- `CausalLM`: a Qwen2/Llama-style causal LM fed through `inputs_embeds`, with `tok_embed` and `lm_head` as
  in the miniature `DecoderLM`.
- `LatentTarget`: a frozen KL VAE whose latents, patchified to one vector per visual token, are the pixel
  target.

Everything loads with `local_files_only=True`; nothing is ever downloaded. With `weights=False` a backbone is built
from its config with its parameters on the meta device, for a sharded model to be filled from rank 0
(study/model/meta_init.py).
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F
from torch import nn

from study.data.hf_files import load_local, read_config, vision_spec
from study.errors import UserError
from study.model.layers import KVCache
from study.model.meta_init import parameters_on_meta
from study.model.vit import patchify

VISION_MODELS = {"dinov2": ("Dinov2Model", 1), "siglip_vision_model": ("SiglipVisionModel", 0),
                 "siglip": ("SiglipVisionModel", 0)}  # model_type -> (class, prefix tokens before the patches)
ATTENTION = {"sdpa": "sdpa", "reference": "eager"}


class VisionEncoder(nn.Module):
    """A pretrained Hugging Face vision tower, read from local files, returning one layer's patch features."""

    def __init__(self, path: str, layer: int, weights: bool = True):
        super().__init__()
        import transformers

        config = read_config("vision_path", path)
        if config.model_type not in VISION_MODELS:
            raise UserError(f"config key 'model.vision_path': '{path}' holds a {config.model_type!r} model "
                            f"(allowed: {', '.join(VISION_MODELS)})")
        cls_name, self.prefix = VISION_MODELS[config.model_type]
        cls = getattr(transformers, cls_name)
        if weights:
            self.model = load_local("vision_path", path, cls.from_pretrained, dtype=torch.float32)
        else:  # parameters on meta, filled later (study/model/meta_init.py)
            with parameters_on_meta():
                self.model = cls._from_config(getattr(config, "vision_config", config), dtype=torch.float32)
        vc = self.model.config
        if not -(vc.num_hidden_layers + 1) <= layer <= vc.num_hidden_layers:
            raise UserError(f"config key 'model.vision_layer': {layer} is outside the {vc.num_hidden_layers} "
                            f"layers of '{path}'")
        self.layer, self.width = layer, vc.hidden_size
        self.image_size, mean, std = vision_spec(path)
        self.num_tokens = (self.image_size // vc.patch_size) ** 2
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> patch tokens (B, V, width) of the chosen layer (before any final norm)."""
        out = self.model(pixel_values=(images - self.mean) / self.std, output_hidden_states=True)
        return out.hidden_states[self.layer][:, self.prefix:]


class CausalLM(nn.Module):
    """A pretrained Hugging Face causal LM, read from local files."""

    def __init__(self, path: str, attention: str, weights: bool = True):
        super().__init__()
        from transformers import AutoModelForCausalLM

        if weights:
            self.lm = load_local("llm_path", path, AutoModelForCausalLM.from_pretrained, dtype=torch.float32,
                            attn_implementation=ATTENTION[attention])
        else:  # parameters on meta, filled later (study/model/meta_init.py)
            config = read_config("llm_path", path)
            with parameters_on_meta():
                self.lm = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                                           attn_implementation=ATTENTION[attention])
        self.width = self.lm.config.hidden_size

    @property
    def tok_embed(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    @property
    def lm_head(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    @property
    def max_positions(self) -> int:
        """The longest sequence (visual and text positions) the model's position encoding was trained for."""
        return int(self.lm.config.max_position_embeddings)

    def forward(self, x: torch.Tensor, num_visual: int, visual_attention: str, keep_layers: bool = False,
                cache: KVCache | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final normed hidden states (B, T, D) and, if asked, each block's output (the last one normed); with a
        `cache`, decoding continues from the positions fed before (transformers' own cache)."""
        decoder = self.lm.base_model  # the decoder stack (`get_decoder()` returns None in transformers 4.56)
        name = cache_argument(type(decoder))
        out = decoder(inputs_embeds=x, output_hidden_states=keep_layers, use_cache=cache is not None,
                      **{name: None if cache is None else cache.hf})
        if cache is not None:
            cache.hf, cache.length = getattr(out, name), cache.length + x.shape[1]
        return out.last_hidden_state, list(out.hidden_states[1:]) if keep_layers else []


@functools.cache
def cache_argument(decoder: type) -> str:
    """The name of a transformers decoder's KV-cache argument and output: `cache` (transformers 5.x), or
    `past_key_values` before it."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


class LatentTarget(nn.Module):
    """Frozen KL-VAE latents of the image, one latent patch per visual token, in raster order."""

    def __init__(self, path: str, grid: int, patch: int, weights: bool = True):
        super().__init__()
        from diffusers import AutoencoderKL

        if weights:
            self.vae = load_local("vae_path", path, AutoencoderKL.from_pretrained, low_cpu_mem_usage=False)
        else:  # parameters on meta, filled later (study/model/meta_init.py)
            config = load_local("vae_path", path, AutoencoderKL.load_config)
            with parameters_on_meta():
                self.vae = AutoencoderKL.from_config(config)
        self.vae.requires_grad_(False).eval()
        c = self.vae.config
        self.patch, self.scale, self.shift = patch, c.scaling_factor, c.shift_factor or 0.0
        self.size = grid * patch * 2 ** (len(c.block_out_channels) - 1)  # input side whose latent grid fits
        self.dim = c.latent_channels * patch * patch

    def train(self, mode: bool = True) -> LatentTarget:
        return super().train(False)  # frozen: always in eval mode

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, V, dim): the posterior mean, shifted and scaled as in diffusion use."""
        x = F.interpolate(images.float(), size=(self.size, self.size), mode="bilinear", antialias=True)
        latents = self.vae.encode(x * 2 - 1).latent_dist.mean
        return patchify((latents - self.shift) * self.scale, self.patch)
