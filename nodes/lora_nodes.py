"""Vera LoRA: a LoRA on a loaded Vera model, chained like ComfyUI's LoraLoaderModelOnly.

Inside ComfyUI the LoRA becomes ComfyUI's own weight patches on a clone of the model's ModelPatcher
(partial loading, /free and other packs see it as they see core LoRAs); the loaded model itself is
never changed, so the same Load Vera Model can feed LoRA'd and plain samplers.
"""
from __future__ import annotations

import dataclasses
import logging

from ..vera.checkpoints.lora import MAX_STRENGTH, LoraSpec, read_lora
from ..vera.model.config import BRANCHES
from . import host
from .handles import VERA_MODEL

log = logging.getLogger(__name__)
CATEGORY = "Vera/loaders"
BRANCH_CHOICES = {"all": BRANCHES, **{b: (b,) for b in BRANCHES},
                  "edit+alpha": ("edit", "alpha"), "edit+composite": ("edit", "composite"),
                  "alpha+composite": ("alpha", "composite")}


class VeraLoRA:
    DESCRIPTION = ("Add a LoRA to a Vera model (chain several). A Wan2.1 T2V LoRA (a style, or a "
                   "step-distill one such as lightx2v: then Vera Sampler with sampler lcm, 4 "
                   "steps, cfg 1) goes onto the branches chosen; a Vera LoRA's tensors onto their "
                   "own branch. The console says how many of the file's tensors were applied.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = (VERA_MODEL,)
    RETURN_NAMES = ("vera_model",)
    OUTPUT_TOOLTIPS = ("The Vera model with this LoRA (the input model is left as it was).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vera_model": (VERA_MODEL, {
                    "tooltip": "From Load Vera Model or another Vera LoRA."}),
                "lora_name": (host.model_files("loras"), {
                    "tooltip": "A LoRA in models/loras (.safetensors; Wan2.1 T2V or Vera layouts: "
                               "peft, lora_down/up, kohya, diffusers, .diff)."}),
                "strength": ("FLOAT", {
                    "default": 1.0, "min": -MAX_STRENGTH, "max": MAX_STRENGTH, "step": 0.05,
                    "tooltip": "1 = as trained; 0 turns it off."}),
                "branches": (list(BRANCH_CHOICES), {
                    "default": "all",
                    "tooltip": "Which of Vera's three transformers a Wan LoRA goes onto: all "
                               "(how a Wan LoRA is used on a model fine-tuned from Wan), or some "
                               "of edit, alpha, composite."}),
            }
        }

    def apply(self, vera_model, lora_name, strength=1.0, branches="all"):
        if branches not in BRANCH_CHOICES:
            raise ValueError(f"branches {branches!r}: must be one of {', '.join(BRANCH_CHOICES)}")
        spec = LoraSpec(lora_name, strength, BRANCH_CHOICES[branches])  # checked before any file
        spec = dataclasses.replace(spec, path=host.model_path("loras", lora_name))
        patches, report = read_lora(spec, vera_model.model)  # every check, in either case
        line = report.line()
        if vera_model.manager is not None:
            manager, patched = host.with_lora(vera_model.manager, report.tensors, report.key_maps,
                                              report.strengths)
            line += f"; ComfyUI patches {patched} weights"
            result = dataclasses.replace(vera_model, manager=manager)
        else:
            result = dataclasses.replace(vera_model,
                                         lora_patches=[*vera_model.lora_patches, *patches])
        log.info(line)
        return (dataclasses.replace(result, loras=[*vera_model.loras, line]),)


NODES = {
    "VeraLoRA": ("Vera LoRA", VeraLoRA),
}
