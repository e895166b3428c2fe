"""What travels between Vera nodes on our own socket types.

VERA_MODEL  -> vera.edit.bundle.Bundle: the MoT model plus what travels with it (vera-tiny: its VAE,
               text encoder and sampling defaults).
VERA_SOURCE -> vera.edit.pipeline.EncodedSource: source (and mask) latents and how to map
               outputs back.
VERA_LAYERS -> VeraLayers: the three sampled latents with the source they belong to.
VERA_SHOT   -> VeraShot: the source clip's rate and sound, and how the shot was made.
VERA_STACK  -> VeraStack: a shot's source frames and its edits so far, each an RGBA layer.
VERA_CACHE, VERA_WINDOWS -> dicts of `SamplingSettings` fields (step caching, context windows),
               checked by the node that makes them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..vera.edit.pipeline import EncodedSource
from ..vera.media.clip import SourceClip
from ..vera.sampling.settings import SamplingSettings

VERA_MODEL = "VERA_MODEL"
VERA_SOURCE = "VERA_SOURCE"
VERA_LAYERS = "VERA_LAYERS"
VERA_SHOT = "VERA_SHOT"
VERA_STACK = "VERA_STACK"
VERA_CACHE = "VERA_CACHE"  # {"cache_method", "cache_threshold", "cache_start", "cache_end"}
VERA_WINDOWS = "VERA_WINDOWS"  # {"window", "window_overlap", "window_fuse", "window_noise"}


@dataclass
class VeraLayers:
    latents: dict[str, torch.Tensor]  # "edit", "alpha", "composite": normalised `[1, 16, T', h, w]`, CPU float32
    source: EncodedSource
    settings: SamplingSettings | None = None
    model_name: str = ""
    evaluations: dict | None = None  # model evaluations {"full": N, "cached": M}
    loras: tuple[str, ...] = ()  # what each LoRA on the model applied
    windows: list[list[int]] | None = None  # context windows, [[first, last], ...] source frames


@dataclass(frozen=True)
class VeraShot:
    clip: SourceClip  # rate, start, stride, audio, source file name
    settings: SamplingSettings | None  # as sampled, with the alpha cutoff used
    model_name: str
    evaluations: dict | None = None  # model evaluations {"full": N, "cached": M}
    loras: tuple[str, ...] = ()  # what each LoRA on the model applied
    windows: list[list[int]] | None = None  # context windows, [[first, last], ...] source frames


@dataclass(frozen=True)
class VeraStack:
    """Edits stacked on one shot: the first edit's source frames (uint8 `[T, H, W, 3]`) with its
    clip, the layers bottom to top (straight RGBA uint8 `[T, H, W, 4]`, each with the
    settings.json record of its edit, or None) and their composite (uint8 `[T, H, W, 3]`)."""

    source: torch.Tensor
    clip: SourceClip
    layers: tuple[tuple[torch.Tensor, dict | None], ...]
    final: torch.Tensor

