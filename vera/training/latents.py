"""Encode a layered dataset to VAE latents once, so training steps only run the DiT."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..data.layout import VIDEO_KEYS, load_manifest, load_sample
from ..encoders import vae as vae_ops
from ..encoders.vae import frames_to_video
from ..media.files import atomic_path

LATENT_KEYS = (*VIDEO_KEYS, "mask")


def _video(frames: torch.Tensor) -> torch.Tensor:
    """`[T, H, W, C]` in [0, 1] (C = 1 greys are expanded) -> `[1, 3, T, H, W]` in [-1, 1]."""
    return frames_to_video(frames.expand(*frames.shape[:3], 3))


def cache_key(root: Path, vae_file: Path | None) -> str:
    """A digest of the manifest, the size and mtime of every file it points to, and the VAE file."""
    root = Path(root)
    digest = hashlib.sha256((root / "manifest.jsonl").read_bytes())
    for entry in load_manifest(root):
        for key in LATENT_KEYS:
            if entry.get(key):
                path = root / entry[key]
                for f in sorted(path.iterdir()) if path.is_dir() else [path]:
                    st = f.stat()
                    digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
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
        source = vae_ops.encode(vae, torch.cat([_video(lay["source"]) for lay in layers])).cpu()
        out["source"].append(source)
        for key in LATENT_KEYS[1:]:
            present = [i for i, lay in enumerate(layers) if key in lay]
            latent = torch.zeros_like(source)
            if present:
                latent[present] = vae_ops.encode(vae, torch.cat([_video(layers[i][key]) for i in present])).cpu()
            out[key].append(latent)
        meta["has_mask"] += [s.mask is not None for s in samples]
        meta["task"] += [s.task for s in samples]
        meta["instruction"] += [s.instruction for s in samples]
        meta["id"] += [s.id for s in samples]
        if progress is not None:
            progress(min(start + batch_size, len(entries)), len(entries))
    cache = {k: torch.cat(v) for k, v in out.items()}
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
