"""Where a model runs and in what precision: the weight-dtype policy of the CLI and the nodes.

auto  bf16 on GPUs that have it, fp16 on older GPUs, fp32 on the CPU
bf16 / fp16 / fp32   weights and activations in that dtype
fp8   transformer-block Linear weights stored as float8 (see `vera.model.fp8`), computed in what
      `auto` picks; built on the CPU and quantised there, so the device never holds the
      full-precision copy
"""

from __future__ import annotations

import torch

WEIGHT_DTYPES = ("auto", "bf16", "fp16", "fp8", "fp32")
STORED_DTYPES = WEIGHT_DTYPES[1:]  # what a file can be written in
_NAMED = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
COMPUTE_DTYPES = tuple(_NAMED)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> the first CUDA device when there is one, else the CPU; a clear error for a CUDA
    device on a machine without CUDA."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r}: this machine has no CUDA device (torch "
            f"{torch.__version__}); use --device cpu, or install a CUDA build of "
            "torch"
        )
    return device


def weight_dtype_name(weight_dtype: str | torch.dtype) -> str:
    """A policy name from a name or a torch dtype (float32 -> "fp32"); errors name the choices."""
    if isinstance(weight_dtype, torch.dtype):
        names = {v: k for k, v in _NAMED.items()}
        if weight_dtype not in names:
            raise ValueError(f"weight dtype {weight_dtype}: use one of {', '.join(WEIGHT_DTYPES)}")
        return names[weight_dtype]
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype {weight_dtype!r} is not one of {', '.join(WEIGHT_DTYPES)}")
    return weight_dtype


def compute_dtype(weight_dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype activations (and non-fp8 weights) use under a policy on a device."""
    name = weight_dtype_name(weight_dtype)
    if name in ("auto", "fp8"):
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return _NAMED[name]
