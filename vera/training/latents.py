"""Encode a layered dataset to VAE latents once, so training steps only run the DiT."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .. import vae as vae_ops
from ..data.layout import load_manifest, load_sample
from ..pipeline import frames_to_video
from ..video import atomic_path

LATENT_KEYS = ("source", "edit", "alpha", "composite", "mask")


def _video(frames: torch.Tensor) -> torch.Tensor:
    """`[T, H, W, C]` in [0, 1] (C = 1 greys are expanded) -> `[1, 3, T, H, W]` in [-1, 1]."""
    return frames_to_video(frames.expand(*frames.shape[:3], 3))


def cache_key(root: Path, vae_file: Path | None) -> str:
    digest = hashlib.sha256((Path(root) / "manifest.jsonl").read_bytes())
    if vae_file is not None:
        digest.update(Path(vae_file).read_bytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def encode_dataset(root: str | Path, vae, batch_size: int = 8, progress=None, tolerance: float = 2 / 255) -> dict:
    """Validate and encode every sample -> dict of latents `[N, 16, T', h, w]` (float32, CPU) plus
    `has_mask` `[N]` bool, `task`, `instruction`, `id` lists. Missing masks get zero latents."""
    root = Path(root)
    entries = load_manifest(root)
    out = {k: [] for k in LATENT_KEYS}
    meta = dict(has_mask=[], task=[], instruction=[], id=[])
    for start in range(0, len(entries), batch_size):
        samples = [load_sample(root, e, tolerance) for e in entries[start: start + batch_size]]
        layers = [s.float_layers() for s in samples]
        for key in LATENT_KEYS:
            present = [lay[key] for lay in layers if key in lay]
            if not present:
                out[key].append(None)
                continue
            latent = vae_ops.encode(vae, torch.cat([_video(f) for f in present]))
            if len(present) < len(layers):  # some samples have no mask
                full = torch.zeros(len(layers), *latent.shape[1:])
                full[torch.tensor([key in lay for lay in layers])] = latent.cpu()
                latent = full
            out[key].append(latent.cpu())
        meta["has_mask"] += [s.mask is not None for s in samples]
        meta["task"] += [s.task for s in samples]
        meta["instruction"] += [s.instruction for s in samples]
        meta["id"] += [s.id for s in samples]
        if progress is not None:
            progress(min(start + batch_size, len(entries)), len(entries))
    ref = next(x for x in out["source"] if x is not None)
    cache = {k: torch.cat([x if x is not None else torch.zeros(batch_size, *ref.shape[1:]) for x in v])[: len(entries)]
             for k, v in out.items()}
    cache["has_mask"] = torch.tensor(meta.pop("has_mask"))
    cache.update(meta)
    return cache


def cached_latents(root: str | Path, vae, vae_file: str | Path | None, cache_dir: str | Path, progress=None) -> dict:
    """`encode_dataset`, stored under cache_dir keyed by the manifest and VAE file contents."""
    path = Path(cache_dir) / f"latents-{cache_key(Path(root), None if vae_file is None else Path(vae_file))}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    cache = encode_dataset(root, vae, progress=progress)
    with atomic_path(path) as tmp:
        torch.save(cache, tmp)
    return cache
