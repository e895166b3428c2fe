"""One Wan2.1 DiT on its own: the T2V model (stage 1 of `vera-tiny`, standing in for a Wan2.1
checkpoint) and the single-branch video-to-video baseline (source latent added to its tokens).

Both reuse `WanBranch`, so a saved state dict has Wan's original key names and loads as a Wan file.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import joint_attention
from .config import VeraConfig
from .mot import WanBranch, rope_frequencies, unpatchify


class WanVideoModel(nn.Module):
    """A Wan2.1 T2V DiT, optionally with a zero-initialised source-video patch embedding (v2v baseline)."""

    def __init__(self, config: VeraConfig, source_conditioning: bool = False):
        super().__init__()
        self.config = config
        self.branch = WanBranch(config)
        self.source_embedding = None
        if source_conditioning:
            self.source_embedding = nn.Conv3d(config.in_channels, config.dim, config.patch_size, config.patch_size)
            nn.init.zeros_(self.source_embedding.weight)
            nn.init.zeros_(self.source_embedding.bias)
        self.attention_backend = "auto"
        self.gradient_checkpointing = False

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                source: torch.Tensor | None = None) -> torch.Tensor:
        """latent, source: `[B, C, T, H, W]`; timestep `[B]` (0..1000); context `[B, Lt, text_dim]` -> velocity float32."""
        cfg, branch = self.config, self.branch
        batch, _, frames, height, width = latent.shape
        pt, ph, pw = cfg.patch_size
        grid = (frames // pt, height // ph, width // pw)
        x = branch.embed_tokens(latent)
        if self.source_embedding is not None:
            if source is None:
                raise ValueError("this video-to-video model needs the source latent")
            x = x + self.source_embedding(source.to(x.dtype)).flatten(2).transpose(1, 2)
        e, e0 = branch.embed_time(timestep.reshape(-1).expand(batch).to(latent.device))
        text = branch.embed_text(context)
        rope = rope_frequencies(cfg, grid, latent.device)
        for block in branch.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(self._block, block, x, e0, text, rope, use_reentrant=False)
            else:
                x = self._block(block, x, e0, text, rope)
        return unpatchify(branch.head(x, e).float(), grid, cfg.patch_size)

    def _block(self, block, x, e0, text, rope):
        q, mod = block.before_attention(x, e0, rope)
        attn = joint_attention([q], self.attention_backend)[0]
        return block.after_attention(x, attn, mod, text, self.attention_backend)

    def wan_state_dict(self) -> dict[str, torch.Tensor]:
        """The branch weights under Wan's original key names (loadable by `load_model` as a Wan T2V file)."""
        return {k: v.detach().contiguous() for k, v in self.branch.state_dict().items()}
