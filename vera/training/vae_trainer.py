"""Train a small Wan-architecture VAE (diffusers `AutoencoderKLWan`) on the frames of a layered dataset.

Only needed for small self-made models such as `vera-tiny`; real users keep Wan2.1's VAE.
Loss: L1 + MSE reconstruction plus a small KL term; clips are random 1 + 4k frame windows of every
video kind in the dataset (source, edit, alpha as grey, composite), so mattes and flat layers
reconstruct as well as footage. Afterwards the latent mean/std per channel are measured and stored
in the config, which is how Wan normalises latents.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..data.layout import VIDEO_KEYS, load_manifest, load_sample
from ..encoders.vae import save_vae_original
from ..media.files import atomic_path, relative_to, save_json

SMALL_VAE = dict(base_dim=12, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True])


def _clips(root: Path, limit: int | None) -> torch.Tensor:
    """Every video of the dataset as `[N, 3, T, H, W]` in [-1, 1] (float16 to save memory)."""
    videos = []
    for entry in load_manifest(root)[:limit]:
        lay = load_sample(root, entry).float_layers()
        for key in VIDEO_KEYS:
            v = lay[key].expand(*lay[key].shape[:3], 3)
            videos.append((v.permute(3, 0, 1, 2) * 2 - 1).half())
    return torch.stack(videos)


KINDS = VIDEO_KEYS


def opponent(video: torch.Tensor) -> torch.Tensor:
    """`[B, 3, T, H, W]` RGB -> `[B, 2, T, H, W]` opponent chroma (red-green, yellow-blue): zero on
    greys, so a loss on it sees only colour."""
    r, g, b = video.unbind(1)
    return torch.stack([r - g, (r + g) / 2 - b], dim=1)


def permute_channels(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """`[B, 3, T, H, W]` -> each clip with its RGB channels in a random order: the synthetic
    footage is mostly warm and grey, so without this the VAE rarely sees a saturated green or blue
    and learns to decode them as grey."""
    order = torch.from_numpy(np.stack([rng.permutation(3) for _ in range(x.shape[0])]))
    return torch.gather(x, 1, order.view(-1, 3, 1, 1, 1).expand_as(x))


def colour_patches(count: int, frames: int, size: tuple[int, int], rng: np.random.Generator,
                   motion: int = 0) -> torch.Tensor:
    """`[count, 3, frames, H, W]` in [-1, 1]: one to four flat rectangles of random saturated
    colours on a random background, each moving by up to `motion` pixels per frame along each
    axis (0: still). The footage has few saturated pixels, so a VAE trained on it alone learns
    luminance long before colour; these give every batch colour. The objects Vera adds move, and
    the VAE folds four frames into one latent, so colour must also survive motion."""
    h, w = size
    out = np.empty((count, 3, frames, h, w), dtype=np.float32)
    for i in range(count):
        out[i] = rng.uniform(-1, 1, (3, 1, 1, 1))
        for _ in range(int(rng.integers(1, 5))):
            rh, rw = rng.integers(4, h // 2 + 1), rng.integers(4, w // 2 + 1)
            y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
            vy, vx = rng.integers(-motion, motion + 1, 2)
            colour = rng.uniform(-1, 1, (3, 1, 1))
            for t in range(frames):
                y, x = int(y0 + vy * t), int(x0 + vx * t)
                out[i, :, t, max(y, 0):max(y + rh, 0), max(x, 0):max(x + rw, 0)] = colour
    return torch.from_numpy(out)


def reconstruction_error(recon: torch.Tensor, target: torch.Tensor,
                         saturation_weight: float = 0.0) -> torch.Tensor:
    """L1 + squared error per element of `[B, 3, T, H, W]` clips in [-1, 1], each pixel weighted by
    1 + saturation_weight x the target's saturation (max - min channel, scaled to [0, 1]), then
    averaged: with weight 0 it is mean L1 + MSE."""
    error = (recon - target).abs() + (recon - target) ** 2
    if saturation_weight:
        saturation = (target.max(1, keepdim=True).values - target.min(1, keepdim=True).values) / 2
        error = error * (1 + saturation_weight * saturation)
    return error.mean()


def train_vae(data: str | Path, out: str | Path, steps: int = 1500, batch_size: int = 4, windows: tuple[int, ...] = (5,),
              lr: float = 3e-4, kl_weight: float = 1e-6, seed: int = 0, limit: int | None = 256, config: dict | None = None,
              init: str | Path | None = None, kind_weights: dict[str, float] | None = None,
              progress=None, chroma_weight: float = 0.0, posterior_noise: float = 1.0,
              permute_colours: bool = False, patch_share: float = 0.0,
              patch_motion: int = 0, crop: int | None = None,
              saturation_weight: float = 0.0) -> Path:
    """Train, measure latent statistics, save `out/vae.safetensors` (ComfyUI/original key names) and a loss log.

    windows: clip lengths (1 + 4k) used in turn, one per step; single frames use a 4x larger batch.
    Windows longer than 5 frames teach the causal cache of chunks after the second, which 17-frame
    clips need. init: continue from a VAE file. kind_weights: sampling weight per video kind.
    Colour (see BENCHMARKS.md, "vera-tiny's VAE and colour"): chroma_weight adds an L1 loss on the
    opponent channels; posterior_noise scales the sampling noise (0 = train on the mean);
    permute_colours shuffles RGB per clip; patch_share replaces that share of each batch by
    `colour_patches` clips whose rectangles move up to patch_motion pixels per frame.
    crop: train on random crop x crop squares (a multiple of 8; cheaper steps, same convolutions).
    saturation_weight: weight each pixel's reconstruction error by 1 + this x the target's
    saturation (max - min channel, in [0, 1]), so small saturated objects count.
    """
    from diffusers import AutoencoderKLWan

    from ..encoders.vae import load_vae

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    clips = _clips(Path(data), limit)
    if crop is not None and (crop % 8 or not 8 <= crop <= min(clips.shape[-2:])):
        raise ValueError(f"crop {crop} must be a multiple of 8 (the VAE's spatial step) from 8 to "
                         f"the frame size {min(clips.shape[-2:])}")
    vae = (load_vae(init) if init else AutoencoderKLWan(**(config or SMALL_VAE))).train()
    weights = np.array([(kind_weights or {}).get(k, 1.0) for k in KINDS] * (len(clips) // len(KINDS)))
    weights = weights / weights.sum()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))))
    log, start = [], time.perf_counter()
    frames = clips.shape[2]
    for step in range(steps):
        window = windows[step % len(windows)]
        count = batch_size * (4 if window == 1 else 1)
        idx = rng.integers(0, len(clips), count) if kind_weights is None else rng.choice(len(clips), count, p=weights)
        idx = torch.from_numpy(idx)
        t0 = int(rng.integers(0, frames - window + 1))
        x = clips[idx, :, t0: t0 + window].float()
        if crop:
            y0, x0 = (int(rng.integers(0, n - crop + 1)) for n in x.shape[-2:])
            x = x[..., y0: y0 + crop, x0: x0 + crop].contiguous()
        if permute_colours:
            x = permute_channels(x, rng)
        patches = int(round(patch_share * len(x)))
        if patches:
            x[:patches] = colour_patches(patches, window, tuple(x.shape[-2:]), rng, patch_motion)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior_noise * posterior.std * torch.randn_like(posterior.mean)
        recon = vae.decode(z).sample
        rec = reconstruction_error(recon, x, saturation_weight)
        if chroma_weight:
            rec = rec + chroma_weight * (opponent(recon) - opponent(x)).abs().mean()
        loss = rec + kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        log.append(dict(step=step + 1, loss=loss.item(), reconstruction=rec.item(), seconds=time.perf_counter() - start))
        if progress is not None:
            progress(step + 1, steps, loss.item())
    vae.eval()
    with torch.no_grad():
        mus = torch.cat([vae.encode(clips[i: i + 8].float()).latent_dist.mode() for i in range(0, min(len(clips), 256), 8)])
        psnr = {}
        for k, kind in enumerate(KINDS):  # whole clips, so every causal chunk is measured
            x = clips[k: 32: len(KINDS)].float()
            mse = ((vae.decode(vae.encode(x).latent_dist.mode()).sample - x) ** 2).mean().item()
            psnr[kind] = 10 * math.log10(4.0 / max(mse, 1e-12))  # signal range is [-1, 1]
    dims = (0, 2, 3, 4)
    vae.register_to_config(latents_mean=mus.mean(dims).tolist(), latents_std=mus.std(dims).tolist())
    path = save_vae_original(vae, out / "vae.safetensors")
    with atomic_path(out / "vae_log.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in log))
    summary = dict(steps=steps, windows=list(windows), lr=lr, init=relative_to(init, out),
                   kind_weights=kind_weights, chroma_weight=chroma_weight,
                   posterior_noise=posterior_noise, permute_colours=permute_colours,
                   patch_share=patch_share, patch_motion=patch_motion, crop=crop,
                   saturation_weight=saturation_weight,
                   reconstruction_psnr_db=psnr,
                   seconds=time.perf_counter() - start, config=dict(vae.config))
    save_json(out / "vae_summary.json", summary)
    return path
