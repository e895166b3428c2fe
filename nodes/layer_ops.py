"""Nodes that work on finished layers: Vera Composite, Vera Alpha Refine, Vera Difference Heatmap.

ComfyUI types: IMAGE `[T, H, W, C]` float 0..1; MASK `[T, H, W]`. Our mattes are named `alpha` and use
1 = edit layer opaque (the opposite of LoadImage's MASK, which is 1 - alpha).
"""
from __future__ import annotations

import torch

from ..vera.frames import layers
from ..vera.media.clip import SourceClip
from . import host
from .handles import VERA_SHOT
from .previews import layer_previews

CATEGORY = "Vera/layers"


def as_alpha_frames(alpha: torch.Tensor, like: torch.Tensor, name: str = "alpha") -> torch.Tensor:
    """MASK `[T, H, W]` (or `[H, W]`) -> `[T, H, W, 1]` matching the frames of `like` `[T, H, W, C]`."""
    a = alpha if alpha.ndim == 3 else alpha.unsqueeze(0)
    if a.shape[0] == 1 and like.shape[0] > 1:
        a = a.expand(like.shape[0], -1, -1)
    if tuple(a.shape) != tuple(like.shape[:3]):
        raise ValueError(f"{name}: matte is {tuple(a.shape)} (frames, height, width) but the images are "
                         f"{tuple(like.shape[:3])}; decode both from the same latents or resize the matte")
    return a.unsqueeze(-1).to(like)


class VeraComposite:
    DESCRIPTION = ("Paper eq. 2: (1 - alpha) * source + alpha * edit layer. Wherever alpha is 0 the output is the "
                   "source frame exactly, so untouched pixels never change.")
    CATEGORY = CATEGORY
    FUNCTION = "composite"
    RETURN_TYPES = ("IMAGE", "IMAGE", "VIDEO")
    RETURN_NAMES = ("final", "edit_rgba", "final_video")
    OUTPUT_TOOLTIPS = (
        "The final video: the source, with the edit layer placed where the matte is above 0.",
        "The edit layer with the matte as a 4-channel IMAGE (straight alpha), for Save Image and "
        "other packs' video writers.",
        "The final video as a VIDEO at the source's exact frame rate with its sound (connect "
        "vera_shot; 16 fps and silent without it), for Save Video and previews.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "source": ("IMAGE", {"tooltip": "The original frames (the ones that were encoded)."}),
                "edit_layer": ("IMAGE", {"tooltip": "Vera's edit layer (RGB)."}),
                "alpha": ("MASK", {"tooltip": "The matte, 1 = edit layer opaque, 0 = source untouched."}),
            },
            "optional": {
                "model_composite": ("IMAGE", {"tooltip": "Vera's own composite; with recovery on, used to "
                                                         "recover the source under semi-transparent edits (eq. 3)."}),
                "recover_semi_transparent": ("BOOLEAN", {"default": False, "tooltip": (
                    "Where 0 < alpha < 1, replace the source by (composite - alpha * edit) / (1 - alpha), so "
                    "effects such as shadows change what lies under them. Needs model_composite.")}),
                "vera_shot": (VERA_SHOT, {"tooltip": (
                    "From Vera Decode Layers: the source's frame rate and sound for "
                    "final_video.")}),
            },
        }

    def composite(self, source, edit_layer, alpha, model_composite=None,
                  recover_semi_transparent=False, vera_shot=None):
        if edit_layer.shape != source.shape:
            raise ValueError(f"edit_layer {tuple(edit_layer.shape)} and source {tuple(source.shape)} differ in shape")
        a = as_alpha_frames(alpha, source)
        if recover_semi_transparent and model_composite is None:
            raise ValueError("recover_semi_transparent needs the model_composite input connected")
        final = layers.final_composite(source, edit_layer, a, model_composite,
                                       recover_semi_transparent)
        previews = layer_previews(source, edit_layer, a, final)
        clip = vera_shot.clip if vera_shot is not None else SourceClip()
        rgba = torch.cat([edit_layer[..., :3], a], dim=-1)
        final_video = host.make_video(final, clip.rate, clip.audio)
        return {"ui": {"vera_layers": [previews]}, "result": (final, rgba, final_video)}


class VeraAlphaRefine:
    DESCRIPTION = "Clean up a matte: threshold, grow or shrink, feather, and smooth over time (in that order)."
    CATEGORY = CATEGORY
    FUNCTION = "refine"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("alpha",)
    OUTPUT_TOOLTIPS = ("The refined matte, 1 = edit layer opaque.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "alpha": ("MASK", {"tooltip": "The matte to refine, 1 = edit layer opaque."}),
                "threshold": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                    "Above 0: make the matte hard, 1 where alpha >= threshold and 0 elsewhere. 0 keeps it soft.")}),
                "grow": ("INT", {"default": 0, "min": -64, "max": 64, "tooltip": (
                    "Pixels to dilate (positive) or erode (negative) the matte by.")}),
                "feather": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 64.0, "step": 0.5, "tooltip": (
                    "Edge softness in pixels (Gaussian). 0 leaves edges as they are.")}),
                "temporal_window": ("INT", {"default": 1, "min": 1, "max": 31, "step": 2, "tooltip": (
                    "Frames in the moving average that calms flicker (odd; 1 = off).")}),
            }
        }

    def refine(self, alpha, threshold=0.0, grow=0, feather=0.0, temporal_window=1):
        if temporal_window % 2 == 0:
            raise ValueError(f"temporal_window must be odd, got {temporal_window}")
        a = (alpha if alpha.ndim == 3 else alpha.unsqueeze(0)).unsqueeze(-1).float()
        if threshold > 0:
            a = layers.threshold(a, threshold)
        a = layers.grow(a, grow)
        a = layers.feather(a, feather)
        a = layers.temporal_smooth(a, temporal_window)
        return (a[..., 0].clamp(0, 1),)


class VeraDifferenceHeatmap:
    DESCRIPTION = ("Where and how much the output differs from the source: black = identical, then red, yellow, "
                   "white. Untouched pixels are exactly black.")
    CATEGORY = CATEGORY
    FUNCTION = "heatmap"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("heatmap",)
    OUTPUT_TOOLTIPS = ("Per-pixel |source - output| (largest channel) times gain, as a colour ramp.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "source": ("IMAGE", {"tooltip": "The original frames."}),
                "output": ("IMAGE", {"tooltip": "The edited frames to compare with the source."}),
                "gain": ("FLOAT", {"default": 4.0, "min": 1.0, "max": 64.0, "step": 0.5, "tooltip": (
                    "Amplifies small differences; 4 shows a 1/4-range change at full brightness.")}),
            }
        }

    def heatmap(self, source, output, gain=4.0):
        if source.shape != output.shape:
            raise ValueError(f"source {tuple(source.shape)} and output {tuple(output.shape)} differ in shape")
        return (layers.difference_heatmap(source[..., :3].float(), output[..., :3].float(), gain),)


NODES = {"VeraComposite": ("Vera Composite", VeraComposite), "VeraAlphaRefine": ("Vera Alpha Refine", VeraAlphaRefine),
         "VeraDifferenceHeatmap": ("Vera Difference Heatmap", VeraDifferenceHeatmap)}
