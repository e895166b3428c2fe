"""Nodes that load models: Load Vera Model, Untrained Vera from Wan2.1, Vera Text Encode (bundled),
Vera Bundled VAE."""
from __future__ import annotations

import torch

from ..vera.checkpoints.weights import TINY_NAME, checkpoint_kind
from ..vera.edit.bundle import Bundle, load_bundle
from ..vera.model.attention import BACKEND_CHOICES
from ..vera.model.config import CONDITIONING_MODES
from ..vera.model.precision import WEIGHT_DTYPES
from . import host
from .handles import VERA_MODEL
from .vae_bridge import BundledVAE

CATEGORY = "Vera/loaders"


def checkpoints_of_kind(kind: str) -> list[str]:
    """Files in models/diffusion_models whose headers show `kind` ("vera" or "wan"); the shards of
    one model are listed once. Nothing but headers is read (cached by size and time)."""
    listed, owners = [], set()
    for name in host.model_files("diffusion_models"):
        try:
            found, owner = checkpoint_kind(host.model_path("diffusion_models", name))
        except OSError:
            continue
        if found == kind and owner not in owners:
            owners.add(owner)
            listed.append(name)
    return listed


FOLLOW_COMFYUI = "comfyui"
ATTENTION_CHOICES = (FOLLOW_COMFYUI, *BACKEND_CHOICES)


def load_vera_bundle(model_name: str, weight_dtype: str = "auto", attention: str = FOLLOW_COMFYUI,
                     from_wan: bool = False, conditioning: str = "add",
                     compiled: bool = False) -> Bundle:
    """vera-tiny, or a file listed under models/diffusion_models, built from ComfyUI's layers with
    its weights on ComfyUI's offload device and handed to its model manager (the sampler asks it
    for the device). A key map beside the file (`<name>.vera-keymap.json`) is used when present."""
    is_tiny = model_name == TINY_NAME
    path = model_name if is_tiny else host.model_path("diffusion_models", model_name)
    comfy_attention = host.attention() if attention == FOLLOW_COMFYUI else None
    backend = comfy_attention or ("auto" if attention == FOLLOW_COMFYUI else attention)
    bundle = load_bundle(path, weight_dtype, host.device(), backend, from_wan=from_wan,
                         conditioning=conditioning, weights_device=host.offload_device(),
                         operations=host.operations(), compiled=compiled)
    bundle.model.eval().requires_grad_(False)
    bundle.manager = host.manage(bundle.model)
    host.free_memory()
    return bundle


WEIGHT_DTYPE = (list(WEIGHT_DTYPES), {
    "default": "auto",
    "tooltip": "Precision of the weights. auto: bf16 on GPU, fp32 on CPU. fp8: transformer "
               "weights stored in float8 (about half of bf16's memory), computed in bf16; an fp8 "
               "file stays fp8."})
ATTENTION = (list(ATTENTION_CHOICES), {
    "default": FOLLOW_COMFYUI,
    "tooltip": "Attention kernel. comfyui: what ComfyUI was started with (sage, flash, xformers "
               "or PyTorch). auto: xformers on CUDA when its kernels load, else PyTorch SDPA."})


class VeraLoadModel:
    DESCRIPTION = ("Load a Vera model: the embedded vera-tiny (runs on CPU, knows only simple "
                   "shapes and patterns), or Vera weights from models/diffusion_models in any "
                   "layout or container (safetensors, shards, .pt). Plain Wan2.1 T2V files are not "
                   "listed here: see 'Untrained Vera from Wan2.1'.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (VERA_MODEL,)
    RETURN_NAMES = ("vera_model",)
    OUTPUT_TOOLTIPS = ("The three-branch Vera model (edit, alpha, composite).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": ([TINY_NAME] + checkpoints_of_kind("vera"), {
                    "tooltip": "vera-tiny, or Vera weights in models/diffusion_models (recognised "
                               "by their structure; a <name>.vera-keymap.json beside a file "
                               "renames its tensors first)."}),
                "weight_dtype": WEIGHT_DTYPE,
                "attention": ATTENTION,
            },
            "optional": {
                "compile": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "torch.compile each layer's per-branch work (one graph serves every "
                               "layer; the first run compiles, later runs are faster). Where it "
                               "cannot work (no C++ compiler, no Triton, a GPU older than compute "
                               "capability 7.0) the console says why and it runs uncompiled."}),
            },
        }

    def load(self, model_name, weight_dtype="auto", attention="auto", compile=False):
        return (load_vera_bundle(model_name, weight_dtype, attention, compiled=compile),)


class VeraFromWan:
    DESCRIPTION = ("Untrained Vera from Wan2.1, for training: all three branches start from a "
                   "Wan2.1 T2V file (the paper's starting point), the conditioning at zero. It "
                   "edits nothing useful until it is trained; for editing, load Vera weights with "
                   "Load Vera Model.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (VERA_MODEL,)
    RETURN_NAMES = ("vera_model",)
    OUTPUT_TOOLTIPS = ("An untrained three-branch Vera model.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "wan_name": (checkpoints_of_kind("wan"), {
                    "tooltip": "A Wan2.1 T2V file in models/diffusion_models (ComfyUI, original or "
                               "diffusers keys; fp32/bf16/fp16/fp8)."}),
                "conditioning": (list(CONDITIONING_MODES), {
                    "default": "add",
                    "tooltip": "add: source and mask tokens added to the composite / alpha tokens "
                               "(the paper's design). sequence: appended."}),
                "weight_dtype": WEIGHT_DTYPE,
                "attention": ATTENTION,
            }
        }

    def load(self, wan_name, conditioning="add", weight_dtype="auto", attention="auto"):
        return (load_vera_bundle(wan_name, weight_dtype, attention, True, conditioning),)


def _require_bundle(vera_model: Bundle, part: str, instead: str):
    value = getattr(vera_model, part)
    if value is None:
        raise ValueError(f"vera_model: {vera_model.name} has no bundled {part.replace('_', ' ')}; {instead}")
    return value


class VeraTextEncode:
    DESCRIPTION = ("Encode a prompt with the text encoder bundled with vera-tiny. For Wan-based Vera weights use "
                   "ComfyUI's CLIPTextEncode with CLIPLoader (umt5_xxl, type wan) instead.")
    CATEGORY = "Vera/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Text embeddings for the Vera Sampler's positive or negative input.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vera_model": (VERA_MODEL, {"tooltip": "A model with a bundled text encoder (vera-tiny)."}),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": (
                    "The instruction, e.g. 'add a large red circle moving from left to right'. vera-tiny knows "
                    "only its training vocabulary; unknown words are ignored.")}),
            }
        }

    def encode(self, vera_model, text):
        encoder = _require_bundle(vera_model, "text_encoder", "use CLIPTextEncode with the Wan umt5 text encoder")
        with torch.no_grad():
            context = encoder.encode([text]).float().cpu()  # the length the model was trained with
        return ([[context, {}]],)


class VeraBundledVAE:
    DESCRIPTION = ("The VAE bundled with vera-tiny, as a ComfyUI VAE (also usable by VAEEncode / VAEDecode). "
                   "For Wan-based Vera weights use VAELoader with wan_2.1_vae.safetensors instead.")
    CATEGORY = CATEGORY
    FUNCTION = "vae"
    RETURN_TYPES = ("VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("vera-tiny's video VAE.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vera_model": (VERA_MODEL, {"tooltip": "A model with a bundled VAE (vera-tiny)."})}}

    def vae(self, vera_model):
        return (BundledVAE(_require_bundle(vera_model, "vae", "use VAELoader with wan_2.1_vae.safetensors")),)


NODES = {
    "VeraLoadModel": ("Load Vera Model", VeraLoadModel),
    "VeraFromWan": ("Untrained Vera from Wan2.1 (for training)", VeraFromWan),
    "VeraTextEncode": ("Vera Text Encode (bundled)", VeraTextEncode),
    "VeraBundledVAE": ("Vera Bundled VAE", VeraBundledVAE),
}
