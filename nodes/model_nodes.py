"""Nodes that load models: Load Vera Model, Vera Text Encode (bundled), Vera Bundled VAE."""
from __future__ import annotations

import torch

from ..vera import attention as attention_ops
from ..vera.bundle import TINY_NAME, load_tiny
from . import host
from .handles import VERA_MODEL, VeraModelHandle
from .vae_bridge import BundledVAE

CATEGORY = "Vera/loaders"
WEIGHT_DTYPES = ("auto", "bf16", "fp16", "fp8", "fp32")
ATTENTION = ("auto", "xformers", "sdpa")


def compute_dtype(weight_dtype: str, device: torch.device) -> torch.dtype:
    """The dtype activations run in: auto and fp8 pick bf16 on GPUs that have it, fp16 on older GPUs,
    fp32 on the CPU."""
    if weight_dtype in ("auto", "fp8"):
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if host.supports_bf16(device) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[weight_dtype]


def load_handle(model_name: str, weight_dtype: str = "auto", attention: str = "auto") -> VeraModelHandle:
    from ..vera.fp8 import quantize_blocks
    from ..vera.weights import load_model

    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype {weight_dtype!r} is not one of {WEIGHT_DTYPES}")
    device = host.device()
    if attention == "xformers":
        attention_ops.resolve_backend("xformers", device)  # a clear error now rather than at the first step
    dtype = compute_dtype(weight_dtype, device)
    # fp8: build on the CPU and quantize there, so the device never holds the full-precision copy
    build_on = torch.device("cpu") if weight_dtype == "fp8" else device
    if model_name == TINY_NAME:
        bundle = load_tiny(dtype=dtype, device=build_on, attention_backend=attention)
        handle = VeraModelHandle(bundle.model, TINY_NAME, bundle.text_encoder, bundle.vae.to(device))
    else:
        model = load_model(host.model_path("diffusion_models", model_name), dtype=dtype, device=build_on,
                           attention_backend=attention).eval()
        handle = VeraModelHandle(model, model_name)
    if weight_dtype == "fp8":
        quantize_blocks(handle.model)
        handle.model.to(device)
    handle.model.requires_grad_(False)
    host.free_memory()
    return handle


class VeraLoadModel:
    DESCRIPTION = ("Load a Vera model: the embedded vera-tiny (runs on CPU, knows only simple shapes and "
                   "patterns), a Vera checkpoint, or a Wan2.1 T2V file from models/diffusion_models, whose "
                   "weights then start all three branches (an untrained Vera: for fine-tuning, not editing).")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (VERA_MODEL,)
    RETURN_NAMES = ("vera_model",)
    OUTPUT_TOOLTIPS = ("The three-branch Vera model (edit, alpha, composite).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": ([TINY_NAME] + host.model_files("diffusion_models"), {"tooltip": (
                    "vera-tiny, or a .safetensors file in models/diffusion_models: Vera weights or a Wan2.1 T2V "
                    "checkpoint (ComfyUI, original or diffusers keys; fp32/bf16/fp16/fp8).")}),
                "weight_dtype": (list(WEIGHT_DTYPES), {"default": "auto", "tooltip": (
                    "Precision of the weights. auto: bf16 on GPU, fp32 on CPU. fp8: transformer weights stored "
                    "in float8 (about half of bf16's memory), computed in bf16.")}),
                "attention": (list(ATTENTION), {"default": "auto", "tooltip": (
                    "Attention kernel. auto: xformers on CUDA when installed, else PyTorch SDPA.")}),
            }
        }

    def load(self, model_name, weight_dtype="auto", attention="auto"):
        return (load_handle(model_name, weight_dtype, attention),)


def _require_bundle(vera_model: VeraModelHandle, part: str, instead: str):
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
    "VeraTextEncode": ("Vera Text Encode (bundled)", VeraTextEncode),
    "VeraBundledVAE": ("Vera Bundled VAE", VeraBundledVAE),
}
