"""Attention backends. All take and return `[B, L, H, D]` tensors.

xformers is used only on CUDA tensors and only when it imports cleanly (its CPU path raises);
SDPA works everywhere; `naive` is the textbook formula, kept as the reference for tests.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

BACKEND_CHOICES = ("auto", "xformers", "sdpa")  # what users pick from
BACKENDS = BACKEND_CHOICES + ("naive",)  # naive: the reference, for tests


@functools.lru_cache(maxsize=1)
def _xformers_ops():
    """The xformers.ops module when its CUDA kernels really load, else None.

    A wheel built for another torch imports fine but has no kernels (`xformers._has_cpp_library`
    is False, the flag ComfyUI checks too), so one tiny attention call is made before it is used.
    Imported lazily: on CPU-only machines it warns on import."""
    if not torch.cuda.is_available():
        return None
    try:
        import xformers
        import xformers.ops as xops

        if not getattr(xformers, "_has_cpp_library", False):
            return None
        q = torch.zeros(1, 8, 1, 64, device="cuda", dtype=torch.float16)
        xops.memory_efficient_attention(q, q, q)
    except Exception:  # a broken or mismatched build must not take the pack down
        return None
    return xops


def xformers_available() -> bool:
    return _xformers_ops() is not None


def resolve_backend(name, device: torch.device):
    """Pick the concrete backend for `name` on `device`, with a clear error when it cannot run."""
    if callable(check_backend(name)):
        return name
    if name == "auto":
        return "xformers" if device.type == "cuda" and xformers_available() else "sdpa"
    if name == "xformers" and (device.type != "cuda" or not xformers_available()):
        raise ValueError(
            "attention backend 'xformers' needs a CUDA device and an xformers build whose kernels "
            "load with this torch; choose 'sdpa' or 'auto' instead"
        )
    return name


def check_backend(backend):
    """A backend name from BACKENDS, or a function (q, k, v) -> out on `[B, L, H, D]` tensors."""
    if callable(backend):
        return backend
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not one of {', '.join(BACKENDS)}")
    return backend


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend="auto") -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v over the token axis. q, k, v: [B, L, H, D] -> [B, L, H, D].
    backend: a name (see `resolve_backend`) or a function of (q, k, v), e.g. ComfyUI's dispatch."""
    if callable(backend):
        return backend(q, k, v)
    backend = resolve_backend(backend, q.device)
    if backend == "xformers":
        return _xformers_ops().memory_efficient_attention(q, k, v)
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    return naive_attention(q, k, v)


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reference implementation in float32. [B, L, H, D] -> [B, L, H, D]."""
    scores = torch.einsum("blhd,bmhd->bhlm", q.float(), k.float()) / math.sqrt(q.shape[-1])
    return torch.einsum("bhlm,bmhd->blhd", scores.softmax(dim=-1), v.float()).to(q.dtype)


def joint_attention(streams: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], backend="auto",
                    joint: bool = True) -> list[torch.Tensor]:
    """Self-attention over several token streams, each `(q, k, v)` of `[B, L_i, H, D]`.

    joint=True concatenates the streams along the token axis for one attention call (every token
    sees every stream) and splits the result back; joint=False attends within each stream only.
    """
    if not joint or len(streams) == 1:
        return [attention(q, k, v, backend) for q, k, v in streams]
    lengths = [q.shape[1] for q, _, _ in streams]
    q, k, v = (torch.cat([s[i] for s in streams], dim=1) for i in range(3))
    return list(attention(q, k, v, backend).split(lengths, dim=1))
