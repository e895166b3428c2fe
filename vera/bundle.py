"""`vera-tiny`, the embedded default model: weights committed in `vera/assets/vera-tiny/`.

It is a small Vera (same MoT code), a small Wan-architecture VAE and a tiny UMT5 text encoder, all
trained by `python -m vera.training.tiny_recipe` on this repo's synthetic layered data at 64x64,
17 frames. It knows the synthetic tasks' vocabulary only (see `vera.data.synthetic`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

TINY_NAME = "vera-tiny"
TINY_DIR = Path(__file__).resolve().parent / "assets" / "vera-tiny"
# sampling defaults for Vera checkpoints (Wan2.1's); vera-tiny's come from its recipe.json
CHECKPOINT_DEFAULTS = dict(steps=50, cfg=5.0, shift=5.0, sampler="unipc", negative_prompt="", alpha_cutoff=0.0)


@dataclass
class Bundle:
    model: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: object
    work_size: tuple[int, int] | None  # (height, width) the model was trained at
    defaults: dict
    name: str


def tiny_available() -> bool:
    return (TINY_DIR / "vera.safetensors").is_file()


def load_tiny(dtype=torch.float32, device="cpu", attention_backend: str = "auto", folder: Path = TINY_DIR) -> Bundle:
    from .text import TextEncoder
    from .vae import load_vae
    from .weights import load_model

    if not (folder / "vera.safetensors").is_file():
        raise FileNotFoundError(f"{folder}: the vera-tiny weights are missing (train them with python -m vera.training.tiny_recipe)")
    recipe = json.loads((folder / "recipe.json").read_text())  # resolution and sampling defaults it was tuned with
    height, width = recipe["resolution"]
    model = load_model(folder / "vera.safetensors", dtype=dtype, device=device, attention_backend=attention_backend).eval()
    vae = load_vae(folder / "vae.safetensors", dtype=torch.float32, device=device)
    text = TextEncoder.from_folder(folder / "text_encoder", device=device)
    return Bundle(model, vae, text, (height, width), recipe["sampling"], TINY_NAME)
