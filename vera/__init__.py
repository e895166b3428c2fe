"""Vera: layered video editing (edit layer + alpha matte + composite) on Wan2.1. No ComfyUI imports here."""
from __future__ import annotations

import torch


def _hide_xformers_from_diffusers_without_cuda() -> None:
    # diffusers imports xformers at module load whenever it is installed; the CUDA-only wheels then
    # print a "please reinstall" warning on every CPU machine. xformers is only useful on CUDA.
    if torch.cuda.is_available():
        return
    try:
        from diffusers.utils import import_utils
    except ImportError:
        return
    import_utils._xformers_available = False


_hide_xformers_from_diffusers_without_cuda()

__version__ = "0.1.0"
