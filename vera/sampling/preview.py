"""Live previews while sampling: the denoised latents shown without the VAE, through a linear
latent-to-RGB map (as ComfyUI's Latent2RGB previewer does), composite beside the edit layer over a
checkerboard weighted by the alpha.

`fit_latent_rgb` finds the map for a VAE by least squares (vera-tiny ships its own in recipe.json;
the Wan2.1 VAE's comes from ComfyUI's `Wan21` latent format).
"""
from __future__ import annotations

import torch

from ..frames import layers
from ..frames.geometry import FRAME_STEP


def latent_to_rgb(latent: torch.Tensor, factors: torch.Tensor, bias: torch.Tensor,
                  frame: int = 0) -> torch.Tensor:
    """One latent frame of a normalised latent `[B, C, T', h, w]` -> `[h, w, 3]` in [0, 1].
    factors `[C, 3]`, bias `[3]` map a latent pixel to RGB in [-1, 1]."""
    x = latent[0, :, frame].float().movedim(0, -1)
    rgb = x @ factors.to(x) + bias.to(x)
    return ((rgb + 1) / 2).clamp(0, 1)


def preview_frames(denoised: dict[str, torch.Tensor], factors: torch.Tensor, bias: torch.Tensor,
                   frame: int = 0) -> torch.Tensor:
    """The step's predictions -> uint8 `[h, 2w, 3]`: composite | edit layer over a checkerboard
    weighted by the alpha (the alpha latent mapped the same way, its grey taken as the matte)."""
    composite = latent_to_rgb(denoised["composite"], factors, bias, frame)
    edit = latent_to_rgb(denoised["edit"], factors, bias, frame)
    alpha = latent_to_rgb(denoised["alpha"], factors, bias, frame).mean(-1, keepdim=True)
    cell = max(2, composite.shape[0] // 8)
    edit_over = layers.over_checkerboard(edit[None], alpha[None], cell)[0]
    return layers.to_uint8(torch.cat([composite, edit_over], dim=1))


@torch.no_grad()
def fit_latent_rgb(codec, clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares map from a codec's normalised latent pixels to RGB in [-1, 1] -> (factors
    `[C, 3]`, bias `[3]`). clips: frames `[T, H, W, 3]` in [0, 1] (1 + 4k frames, sizes multiples
    of 8); each latent frame is matched with the 8x-downscaled mean of the frames it covers."""
    xs, ys = [], []
    for frames in clips:
        latent = codec.encode_frames(frames)[0]  # [C, T', h, w]
        t, h, w = latent.shape[1:]
        groups = [frames[:1]] + [frames[1 + FRAME_STEP * i: 1 + FRAME_STEP * (i + 1)]
                                for i in range(t - 1)]
        for i, group in enumerate(groups):
            small = torch.nn.functional.avg_pool2d(group.mean(0).permute(2, 0, 1), 8)  # [3, h, w]
            xs.append(latent[:, i].reshape(latent.shape[0], -1).T)
            ys.append((small * 2 - 1).reshape(3, -1).T)
    x, y = torch.cat(xs).double(), torch.cat(ys).double()
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution
    return solution[:-1].float(), solution[-1].float()
