"""Small random models of the real architectures, for tests (not the trained `vera-tiny`).

They are built locally from configs (nothing is downloaded) and saved in the same file formats
users have on disk, so every loading path runs on them.
"""
from __future__ import annotations

import hashlib

import torch

from vera.checkpoints.weights import DIFFUSERS_TO_WAN, rename

TINY_WAN = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=16, in_channels=16, out_channels=16,
                text_dim=32, freq_dim=32, ffn_dim=128, num_layers=2, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6)
TINY_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])


def _perturb(module: torch.nn.Module, seed: int, scale: float) -> None:
    """Random offsets on every parameter, so zero-init norms and biases are exercised too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)


def tiny_diffusers_wan(seed: int = 0, **overrides):
    """A random diffusers `WanTransformer3DModel` (2 layers, width 64)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(**{**TINY_WAN, **overrides}).eval()
    _perturb(model, seed, 0.05)
    return model


def wan_original_state_dict(diffusers_model, comfy_prefix: bool = True) -> dict[str, torch.Tensor]:
    """A diffusers Wan state dict renamed to Wan original / ComfyUI key names."""
    prefix = "model.diffusion_model." if comfy_prefix else ""
    return {prefix + rename(k, DIFFUSERS_TO_WAN): v for k, v in diffusers_model.state_dict().items()}


def tiny_vae(seed: int = 0, **overrides):
    """A random diffusers `AutoencoderKLWan` with the Wan2.1 layout at 1/12 width."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**{**TINY_VAE, **overrides}).eval()
    _perturb(vae, seed, 0.02)
    return vae


def hash_text_embedding(prompt: str, length: int = 512, dim: int = 32, tokens: int = 8) -> torch.Tensor:
    """A deterministic stand-in for a text encoder: `[1, length, dim]`, zero past `tokens` (Wan's padding)."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little")
    out = torch.zeros(1, length, dim)
    out[0, :tokens] = torch.randn(tokens, dim, generator=torch.Generator().manual_seed(seed))
    return out


class HashTextEncoder:
    """A text encoder stand-in with `TextEncoder.encode`'s interface (see `hash_text_embedding`)."""

    def __init__(self, dim: int = 32, length: int = 512):
        self.dim, self.length = dim, length

    def encode(self, prompts) -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return torch.cat([hash_text_embedding(p, self.length, self.dim) for p in prompts])
