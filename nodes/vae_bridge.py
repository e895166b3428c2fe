"""Vera's frame codec (`vera.encoders.vae.FrameCodec`: frames in, normalised latents out) over a
ComfyUI-style VAE, and vera-tiny's VAE behind ComfyUI's VAE interface.

ComfyUI's VAE (`comfy.sd.VAE`, from VAELoader with wan_2.1_vae.safetensors): `encode(IMAGE [T, H, W, 3]
in [0, 1])` -> raw latent `[1, 16, T', H/8, W/8]` (posterior mean, not normalised); `decode(raw)` ->
`[1, T, H, W, 3]` in [0, 1]. Vera's model works on latents normalised with the Wan2.1 VAE's
per-channel mean/std (`host.wan21_latent_stats`: ComfyUI's Wan21 latent format inside ComfyUI).
"""
from __future__ import annotations

import torch

from ..vera.encoders import vae as vae_ops
from .host import wan21_latent_stats


class ComfyVAECodec:
    """`FrameCodec` over any object with ComfyUI's VAE `encode` / `decode` conventions. Both speak
    IMAGE frames, so only the latent normalisation happens here."""

    def __init__(self, vae, name: str = "vae"):
        if vae is None:
            raise ValueError(f"{name}: no VAE connected; connect VAELoader (wan_2.1_vae.safetensors) or, for "
                             "vera-tiny, Vera Bundled VAE")
        channels, dims = getattr(vae, "latent_channels", 16), getattr(vae, "latent_dim", 3)
        if channels != 16 or dims != 3:
            raise ValueError(f"{name}: this VAE has {channels}-channel {dims}-D latents; Vera needs the Wan2.1 video "
                             "VAE (16 channels, 3-D): load wan_2.1_vae.safetensors (the Wan2.2 VAE does not fit)")
        self.vae = vae
        self.mean, self.std = getattr(vae, "vera_latent_stats", None) or wan21_latent_stats()

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """IMAGE `[T, H, W, 3]` in [0, 1] -> normalised latent `[1, 16, T', H/8, W/8]`, float32
        on the CPU."""
        raw = self.vae.encode(frames[..., :3]).float().cpu()
        return (raw - self.mean) / self.std

    def decode_frames(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent -> IMAGE `[T, H, W, 3]` in [0, 1] (float32, CPU)."""
        images = self.vae.decode(latent.float().cpu() * self.std + self.mean)
        images = images[0] if images.ndim == 5 else images  # ComfyUI's video VAE: [1, T, H, W, C]
        return images[..., :3].float().cpu().clamp(0, 1)


class BundledVAE:
    """A diffusers AutoencoderKLWan (vera-tiny's) with ComfyUI's VAE interface, so both our nodes and
    ComfyUI's VAEEncode / VAEDecode can use it. `vera_latent_stats` tells ComfyVAECodec its own
    normalisation (vera-tiny's VAE is not Wan2.1's)."""

    latent_channels = 16
    latent_dim = 3

    def __init__(self, vae):
        self.codec = vae_ops.WanCodec(vae)
        self.vera_latent_stats = tuple(s.cpu() for s in vae_ops.latent_stats(vae, torch.zeros(1)))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE `[T, H, W, C]` in [0, 1] -> raw latent `[1, 16, T', H/8, W/8]`."""
        return self.codec.encode_raw_frames(pixels.float())

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Raw latent `[1, 16, T', h, w]` -> `[1, T, H, W, 3]` in [0, 1]."""
        return self.codec.decode_raw_frames(samples).unsqueeze(0)

    def spacial_compression_encode(self) -> int:
        return 8

    def spacial_compression_decode(self) -> int:
        return 8

    def temporal_compression_decode(self) -> int:
        return 4
