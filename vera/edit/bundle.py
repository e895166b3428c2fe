"""A loaded model and what travels with it: the one thing the CLI runs and Load Vera Model returns.

`load_bundle(name_or_path, weight_dtype, device)` is the one loader: the embedded `vera-tiny`
(model, its small VAE, tiny UMT5 and the sampling defaults tuned by its recipe, from
`vera/assets/vera-tiny/`), or a Vera / Wan2.1 file (plus a VAE and a text encoder when given).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoints.weights import TINY_DIR, TINY_NAME
from ..sampling.settings import WAN_DEFAULTS, SamplingSettings

log = logging.getLogger(__name__)


@dataclass
class Bundle:
    """model: a `VeraModel`. vae: a diffusers AutoencoderKLWan (or any `FrameCodec`); text_encoder:
    a `TextEncoder` (or anything with `encode(list[str]) -> [B, L, D]`); both None when the user
    brings their own (ComfyUI's VAE and CLIPTextEncode). defaults: the sampling settings the model
    was tuned with. work_size (height, width) and frames: the clip shape it was trained at, when
    it is a small model that only works there (vera-tiny), else None. latent_rgb: (factors
    `[16, 3]`, bias `[3]`) for previews when its VAE is not Wan2.1's (see `vera.sampling.preview`).
    manager: whoever moves the model between devices (ComfyUI's ModelPatcher), else None.
    loras: one line per LoRA applied at load ("LoRA x: applied N of M tensors ..."). lora_patches:
    LoRAs kept beside the model rather than on it (a Vera LoRA node outside ComfyUI: the sampler
    attaches them for its run, so the loaded model is shared unchanged)."""

    model: torch.nn.Module
    name: str
    defaults: SamplingSettings = WAN_DEFAULTS
    vae: object | None = None
    text_encoder: object | None = None
    work_size: tuple[int, int] | None = None
    frames: int | None = None
    latent_rgb: tuple[torch.Tensor, torch.Tensor] | None = None
    manager: object | None = None
    loras: list[str] = field(default_factory=list)  # what each LoRA load applied
    lora_patches: list = field(default_factory=list)  # LoRAs to attach while sampling (nodes)


def tiny_available(folder: Path = TINY_DIR) -> bool:
    return (folder / "vera.safetensors").is_file()


def tiny_recipe(folder: Path = TINY_DIR) -> dict:
    """vera-tiny's recipe.json: how it was trained, its clip shape and its sampling defaults."""
    if not tiny_available(folder):
        raise FileNotFoundError(f"{folder}: the vera-tiny weights are missing (train them with "
                                "python -m vera.training.tiny_recipe)")
    return json.loads((folder / "recipe.json").read_text())


def tiny_defaults(folder: Path = TINY_DIR) -> SamplingSettings:
    """The sampling settings vera-tiny's recipe picked on its validation split."""
    return SamplingSettings.from_dict(tiny_recipe(folder)["sampling"], f"{folder}/recipe.json")


def load_bundle(name_or_path: str | Path, weight_dtype: str | torch.dtype = "auto",
                device: str | torch.device = "auto", attention: str = "auto",
                vae: str | Path | None = None, text_encoder: str | Path | None = None,
                num_heads: int | None = None, keymap: str | Path | None = None,
                from_wan: bool = False, conditioning: str = "add", swap_layers: int = 0,
                weights_device: str | torch.device | None = None, operations=None,
                compiled: bool = False, loras=(), merge_loras: bool = False,
                branches: tuple[str, ...] | None = None, shard_mesh=None,
                encoders: bool = True) -> Bundle:
    """Load `vera-tiny` or a model file, under a weight-dtype policy (see `vera.model.precision`),
    to run on `device`.

    vae / text_encoder: a Wan2.1 VAE file and a UMT5 folder to load beside a model file (the CLI
    needs them; ComfyUI brings its own). vera-tiny brings both and ignores these. keymap,
    from_wan, conditioning, operations: see `vera.checkpoints.weights.load_model`. swap_layers:
    keep that many layers in CPU memory and bring each in as it runs (`vera.model.blockswap`).
    weights_device: where the weights go when not `device` (ComfyUI's offload device: its manager
    moves them). compiled: run each layer's per-branch work through torch.compile
    (`vera.model.compile`; where that cannot work, the reason is logged and it runs uncompiled).
    loras: `LoraSpec`s or 'PATH[:STRENGTH[:BRANCHES]]' texts (`vera.checkpoints.lora`), applied
    unmerged (they run beside the layers: fp8 and block swap keep working) or, with merge_loras,
    folded into float weights; each load's "applied N of M tensors" is logged and kept in
    `bundle.loras`. branches, shard_mesh: load only these branches, or only this process's shards
    of the blocks (see `load_model`). encoders False: no VAE or text encoder (a parallel run's
    processes other than the writer only sample).
    """
    from ..checkpoints.weights import load_model
    from ..encoders.text import TextEncoder
    from ..encoders.vae import load_vae
    from ..model.precision import resolve_device

    device = resolve_device(device)
    # swapped layers start on the CPU; BlockSwap moves the rest to the device
    place = torch.device("cpu") if swap_layers else resolve_device(weights_device or device)
    model = load_model(name_or_path, weight_dtype, place, num_heads=num_heads,
                       attention_backend=attention, from_wan=from_wan, keymap=keymap,
                       conditioning=conditioning, operations=operations, compute_device=device,
                       branches=branches, shard_mesh=shard_mesh)
    model.source_name = Path(name_or_path).name
    lora_lines = apply_loras(model, loras, merge_loras, device) if loras else []
    if swap_layers:
        from ..model.blockswap import BlockSwap

        BlockSwap(model, swap_layers, device)
    if compiled:
        from ..model.compile import compile_blocks

        compile_blocks(model, device)
    if str(name_or_path) == TINY_NAME:
        recipe = tiny_recipe()
        rgb = recipe.get("latent_rgb")
        latent_rgb = None if rgb is None else (torch.tensor(rgb["factors"]),
                                               torch.tensor(rgb["bias"]))
        return Bundle(model, TINY_NAME, tiny_defaults(),
                      load_vae(TINY_DIR / "vae.safetensors", device=device) if encoders else None,
                      TextEncoder.from_folder(TINY_DIR / "text_encoder", device=device)
                      if encoders else None,
                      tuple(recipe["resolution"]), int(recipe["frames"]), latent_rgb,
                      loras=lora_lines)
    vae = None if vae is None or not encoders else load_vae(vae, device=device)
    text = (None if text_encoder is None or not encoders
            else TextEncoder.from_folder(text_encoder, device=device))
    return Bundle(model, Path(name_or_path).name, WAN_DEFAULTS, vae, text, loras=lora_lines)


def apply_loras(model, loras, merge: bool = False, device=None) -> list[str]:
    """Read every LoRA (all checked before any is applied), then attach or merge them; returns
    each one's report line ("LoRA x: applied N of M tensors ...")."""
    from ..checkpoints.lora import LoraSpec, read_lora
    from ..model import lora

    specs = [s if isinstance(s, LoraSpec) else LoraSpec.parse(str(s)) for s in loras]
    read = [read_lora(spec, model) for spec in specs]
    lines = []
    for patches, report in read:
        if merge:
            lora.merge(model, patches)
        else:
            lora.attach(model, patches, device)
        lines.append(report.line() + (" (merged)" if merge else ""))
        log.info(lines[-1])
    return lines
