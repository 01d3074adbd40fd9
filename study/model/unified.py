"""The unified model: vision encoder -> projector -> visual input embeddings -> causal LLM, with heads.

Sequence layout: [visual tokens][caption tokens]. Hidden state at visual position i is what the
generation heads read to predict visual token i + 1 (semantics or pixels); text positions predict
the next word. The encoder and the LLM are the miniature ones (`model.backbone=mini`) or pretrained
transformers backbones (`hf`, see `study.model.hf`), behind one interface; so is the pixel target
(image patches, or KL-VAE latent patches).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from study.config import RunConfig
from study.data.hf_files import load_tokenizer, special_ids
from study.data.tokenizer import BOS_ID, PAD_ID, VOCAB, max_caption_tokens
from study.errors import UserError
from study.model.diffloss import DiffusionHead
from study.model.layers import KVCache, init_weights
from study.model.llm import DecoderLM
from study.model.vit import VisionEncoder, patchify


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """A two-layer GELU MLP."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class UnifiedModel(nn.Module):
    """Vision encoder, projector and LLM with the generation heads of the run's target."""

    def __init__(self, cfg: RunConfig, weights: bool = True, tokenizer: bool = True):
        """The model of `cfg` (its upstream references resolved to files), randomly initialised from torch's global
        generator; `weights=False` leaves the pretrained backbones' parameters on the meta device, to be loaded once
        sharded (study/model/meta_init.py); `tokenizer=False` takes the LLM's special ids from its config instead of
        its tokenizer (a shape-only model for planning, from config files alone). Weights of upstream runs
        (`model.encoder_checkpoint`, `objective.target_projector`) are loaded by `load_upstream`."""
        super().__init__()
        m, o = cfg.model, cfg.objective
        self.visual_attention = m.visual_attention
        self.pad_id, self.bos_id = PAD_ID, BOS_ID
        if m.backbone == "hf":
            self._build_hf(cfg, weights, tokenizer)
        else:
            self.encoder = VisionEncoder(cfg.data.image_size, m.patch_size, m.enc_width, m.enc_depth, m.heads,
                                         m.mlp_ratio, m.attention)
        self.num_visual = self.encoder.num_tokens
        enc_width = m.enc_width if m.backbone == "mini" else self.encoder.width
        self.patch_size, self.latents = m.patch_size, None
        self.patch_dim = m.patch_size * m.patch_size * 3
        width = m.width if m.backbone == "mini" else self.llm.width
        self.projector = mlp(enc_width, width, width)
        self.mask_embedding = nn.Parameter(torch.zeros(width))
        if m.backbone == "mini":
            max_len = self.num_visual + max_caption_tokens(cfg.data.max_objects)
            self.llm = DecoderLM(len(VOCAB), m.width, m.depth, m.heads, m.mlp_ratio, max_len, m.attention)
        parts = o.parts()
        self.semantic_target = next((p for p in parts if p.startswith("semantic")), None)
        self.semantic_head = None
        self.target_norm = o.target_norm
        if m.paired_init:  # shared modules drawn before any head exists: identical across arms at one seed
            self._init_shared(m.backbone)
        if self.semantic_target:
            dim = width if self.semantic_target == "semantic_input" else enc_width
            self.semantic_head = mlp(width, width, dim)
        if not m.paired_init:  # v1's order: a semantic head built before the draws shifts every later one
            self._init_shared(m.backbone)
        elif self.semantic_head is not None:
            init_weights(self.semantic_head)
        self.pixel_head: nn.Module | None = None
        if "pixel" in parts:
            if m.backbone == "hf":
                from study.model.hf import LatentTarget

                self.latents = LatentTarget(m.vae_path, int(round(self.num_visual ** 0.5)), m.vae_latent_patch,
                                            weights)
                self.patch_dim = self.latents.dim
            # DDIM's first, high-noise steps need a bound on the clean target: patches lie in [-1, 1]; VAE latents
            # (scaled to about unit variance) get a loose 5 that only stops those steps from exploding
            pixel_bound = 1.0 if m.backbone == "mini" else 5.0
            self.pixel_head = (DiffusionHead(self.patch_dim, width, o.diffusion_width, o.diffusion_depth,
                                             o.diffusion_timesteps, clip=pixel_bound)
                               if o.pixel_head == "diffusion" else mlp(width, width, self.patch_dim))
        self.ema_projector = None  # the projector copy that defines semantic_input targets: EMA or frozen
        if self.semantic_target == "semantic_input" and (o.target_ema > 0 or o.target_projector):
            self.ema_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.freeze_encoder = m.freeze_encoder
        if m.freeze_encoder:
            self.encoder.requires_grad_(False)

    def load_upstream(self, encoder: dict[str, torch.Tensor] | None, projector: dict[str, torch.Tensor] | None,
                      assign: bool = False) -> None:
        """Load an upstream run's encoder and target-projector weights (`assign`: into meta parameters, which then
        hold them); a frozen encoder stays frozen."""
        if projector is not None and self.ema_projector is not None:
            self.ema_projector.load_state_dict(projector)
        if encoder is not None:
            self.encoder.load_state_dict(encoder, assign=assign)
            if self.freeze_encoder:
                self.encoder.requires_grad_(False)

    def _init_shared(self, backbone: str) -> None:
        """Draw the weights of everything built so far (pretrained backbones keep theirs), then the mask
        embedding; with model.paired_init this runs before any head is built."""
        for part in (self,) if backbone == "mini" else (self.projector, self.semantic_head):
            if part is not None:
                init_weights(part)
        nn.init.normal_(self.mask_embedding, std=0.02)

    def _build_hf(self, cfg: RunConfig, weights: bool, with_tokenizer: bool) -> None:
        from study.model import hf

        m = cfg.model
        self.encoder = hf.VisionEncoder(m.vision_path, m.vision_layer, weights)
        self.llm = hf.CausalLM(m.llm_path, m.attention, weights)
        if not with_tokenizer:
            lc = self.llm.lm.config
            end = lc.eos_token_id if isinstance(lc.eos_token_id, int) else 0
            self.pad_id = lc.pad_token_id if lc.pad_token_id is not None else end
            self.bos_id = lc.bos_token_id if lc.bos_token_id is not None else end
            return
        tokenizer = load_tokenizer(m.llm_path)
        vocab = self.llm.tok_embed.num_embeddings
        if len(tokenizer) > vocab:
            raise UserError(f"config key 'model.llm_path': the tokenizer of '{m.llm_path}' has {len(tokenizer)} "
                            f"tokens, the model's embedding only {vocab}")
        self.pad_id, self.bos_id, _ = special_ids(tokenizer)

    @property
    def device(self) -> torch.device:
        return self.mask_embedding.device

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vision-encoder outputs (B, V, enc_width) and LLM input embeddings (B, V, width)."""
        enc = self.encoder(images)
        return enc, self.projector(enc)

    def mask_inputs(self, embeds: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return embeds
        return torch.where(mask[..., None], self.mask_embedding.to(embeds.dtype), embeds)

    def forward(self, visual_embeds: torch.Tensor, tokens: torch.Tensor, keep_layers: bool = False,
                cache: KVCache | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Hidden states of [visual][tokens]; a cached decoding step passes no visual tokens (B, 0, D)."""
        x = torch.cat([visual_embeds, self.llm.tok_embed(tokens).to(visual_embeds.dtype)], dim=1)
        return self.llm(x, visual_embeds.shape[1], self.visual_attention, keep_layers, cache)

    @property
    def text_capacity(self) -> int:
        """How many text tokens fit after the visual tokens."""
        return self.llm.max_positions - self.num_visual

    def text_logits(self, hidden: torch.Tensor, num_visual: int) -> torch.Tensor:
        return self.llm.lm_head(hidden[:, num_visual:])

    def pixel_targets(self, images: torch.Tensor) -> torch.Tensor:
        """What the pixel head predicts per visual token (B, V, patch_dim): patches in [-1, 1], or VAE latents."""
        if self.latents is not None:
            return self.latents(images)
        return patchify(images * 2 - 1, self.patch_size)

    def semantic_targets(self, enc: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """What the semantic head regresses, detached: input embeddings (live, EMA or frozen projector) or encoder
        outputs; with objective.target_norm each token normalised over its features (no affine)."""
        if self.semantic_target == "semantic_encoder":
            target = enc.detach()
        elif self.ema_projector is not None:
            with torch.no_grad():
                target = self.ema_projector(enc.detach())
        else:
            target = embeds.detach()
        if self.target_norm:
            target = F.layer_norm(target.float(), (target.shape[-1],), eps=1e-6).to(target.dtype)
        return target

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        if self.ema_projector is not None and decay > 0:  # decay 0 with a projector: a frozen one
            for ema, live in zip(self.ema_projector.parameters(), self.projector.parameters(), strict=True):
                ema.lerp_(live, 1 - decay)
