"""What travels between Vera nodes on our own socket types.

VERA_MODEL  -> vera.bundle.Bundle: the MoT model plus what travels with it (vera-tiny: its VAE,
               text encoder and sampling defaults).
VERA_SOURCE -> vera.pipeline.EncodedSource: source (and mask) latents and how to map outputs back.
VERA_LAYERS -> VeraLayers: the three sampled latents with the source they belong to.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..vera.pipeline import EncodedSource

VERA_MODEL = "VERA_MODEL"
VERA_SOURCE = "VERA_SOURCE"
VERA_LAYERS = "VERA_LAYERS"


@dataclass
class VeraLayers:
    latents: dict[str, torch.Tensor]  # "edit", "alpha", "composite": normalised `[1, 16, T', h, w]`, CPU float32
    source: EncodedSource
