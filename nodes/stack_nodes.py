"""Vera Layer Stack: keep each edit as its own layer and feed the composite to the next edit."""
from __future__ import annotations

import torch

from ..vera.frames import layers
from ..vera.media.clip import SourceClip
from .handles import VERA_SHOT, VERA_STACK, VeraStack
from .layer_ops import as_alpha_frames
from .save_nodes import run_record


class VeraLayerStack:
    DESCRIPTION = ("Stack edits on one shot: this edit's layer goes over the frames it was made "
                   "on, and `final` is the composite to feed into the next Vera Encode (frames "
                   "input) for another edit on top. Connect the stack to Vera Save Layers to "
                   "write every layer with its matte and settings, the source frames, stack.json "
                   "and the Nuke / Blender comp scripts.")
    CATEGORY = "Vera/layers"
    FUNCTION = "stack"
    RETURN_TYPES = (VERA_STACK, "IMAGE")
    RETURN_NAMES = ("stack", "final")
    OUTPUT_TOOLTIPS = (
        "The source and every edit so far, bottom to top (for the next Vera Layer Stack and for "
        "Vera Save Layers).",
        "This edit over the frames it was made on (eq. 2 on the 8-bit layers): the input for the "
        "next edit's Vera Encode, and the final to save.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "source": ("IMAGE", {"tooltip": (
                    "The frames this edit was made on (Vera Decode Layers' source): the shot "
                    "itself for the first edit, the stack below's final for the next.")}),
                "edit_layer": ("IMAGE", {"tooltip": "This edit's layer (Vera Decode Layers)."}),
                "alpha": ("MASK", {"tooltip": "This edit's matte, 1 = edit layer opaque."}),
            },
            "optional": {
                "below": (VERA_STACK, {"tooltip": (
                    "The stack this edit goes on top of (an earlier Vera Layer Stack); leave "
                    "unconnected for the first edit.")}),
                "vera_shot": (VERA_SHOT, {"tooltip": (
                    "From Vera Decode Layers: this edit's settings (kept with its layer) and, "
                    "for the first edit, the shot's rate and sound.")}),
            },
            "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"},
        }

    def stack(self, source, edit_layer, alpha, below=None, vera_shot=None, prompt=None,
              unique_id=None):
        if edit_layer.shape[:3] != source.shape[:3]:
            raise ValueError(f"edit_layer {tuple(edit_layer.shape)} and source "
                             f"{tuple(source.shape)} must have the same frames and size")
        source_u8 = layers.to_uint8(source[..., :3].float())
        if below is not None and not torch.equal(source_u8, below.final):
            raise ValueError("source: these are not the frames of the stack connected to "
                             "`below`; feed that Vera Layer Stack's final into this edit's Vera "
                             "Encode (frames input) and its source here")
        edit_u8 = layers.to_uint8(edit_layer[..., :3].float())
        alpha_u8 = layers.to_uint8(as_alpha_frames(alpha, edit_layer).float())
        final = layers.final_composite(source_u8, edit_u8.float() / 255, alpha_u8.float() / 255)
        frames, height, width = final.shape[:3]
        record = (run_record(vera_shot, prompt, frames, (height, width), vera_shot.clip.rate,
                             None, unique_id) if vera_shot is not None else None)
        layer = (torch.cat([edit_u8, alpha_u8], dim=-1), record)
        if below is None:
            clip = vera_shot.clip if vera_shot is not None else SourceClip()
            stacked = VeraStack(source_u8, clip, (layer,), final)
        else:
            stacked = VeraStack(below.source, below.clip, (*below.layers, layer), final)
        return (stacked, final.float() / 255)


NODES = {"VeraLayerStack": ("Vera Layer Stack", VeraLayerStack)}
