"""fp8 weight storage: the transformer blocks' Linear weights kept in float8 (e4m3fn) with one scale
per tensor, cast to the compute dtype on the fly. Compute stays in bf16 (GPU) or fp32 (CPU).

The stored form is ComfyUI's scaled-fp8 convention: `<linear>.weight` in float8_e4m3fn and
`<linear>.scale_weight` (float32, one value), weight = weight_fp8 * scale_weight; so our fp8 files
are read by the same rule as ComfyUI's own `*_fp8_scaled` files.

Block Linears are 98.1% of Vera-1.3B's parameters (98.3% at 14B), so the three branches' weights go
from 8.51 GB in bf16 to 4.34 GB (85.7 -> 43.6 GB at 14B); counted on the meta device, 2026-11-21.

Embeddings, norms, modulation and the output heads keep the compute dtype (they are small and
sensitive).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight -> (float8_e4m3fn weight, float32 scale `[]`): the largest magnitude maps to 448."""
    w = weight.detach().float()
    scale = (w.abs().amax().clamp(min=1e-12) / FP8_MAX).reshape(())
    return (w / scale).to(FP8), scale


def dequantize(
    weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """float8 weight (times its scale, when there is one) -> `dtype`."""
    w = weight.float()
    return (w * scale.float() if scale is not None else w).to(dtype)


class FP8Linear(nn.Module):
    """A Linear whose weight `[out, in]` is stored as fp8 * scale_weight.
    Forward: x @ (weight_fp8 * scale_weight).T + bias, in x's dtype."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer(
            "weight", torch.empty(out_features, in_features, dtype=FP8, device=device)
        )
        self.register_buffer("scale_weight", torch.ones((), dtype=torch.float32, device=device))
        self.bias = (
            nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False)
            if bias
            else None
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "FP8Linear":
        out = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            linear.weight.device,
            linear.weight.dtype,
        )
        weight, scale = quantize(linear.weight)
        out.weight, out.scale_weight = weight, scale.to(linear.weight.device)
        if linear.bias is not None:
            out.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Weights are cast to x's device too: under block swap or partial loading they may be
        elsewhere."""
        to = dict(device=x.device, dtype=x.dtype)
        weight = self.weight.to(**to) * self.scale_weight.to(**to)
        bias = None if self.bias is None else self.bias.to(**to)
        return F.linear(x, weight, bias)


def _block_linears(model: nn.Module):
    """(parent module, child name, Linear) for every Linear (of any operations' class) inside
    `*.blocks.*`."""
    for name, module in list(model.named_modules()):
        if ".blocks." not in f".{name}.":
            continue
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                yield module, child_name, child


def fp8_shells(model: nn.Module, linear_class=None) -> int:
    """Replace every block Linear with an empty fp8 Linear of the same size (on the Linear's
    device, e.g. meta), for a loader that fills it; returns how many were replaced.
    linear_class: FP8Linear, or another with its signature and state (ComfyUI's scaled-fp8
    Linear, whose `weight` and `scale_weight` follow the same convention)."""
    linear_class = linear_class or FP8Linear
    replaced = 0
    for parent, name, linear in _block_linears(model):
        shell = linear_class(linear.in_features, linear.out_features, linear.bias is not None,
                             device=linear.weight.device, dtype=linear.weight.dtype)
        setattr(parent, name, shell)
        replaced += 1
    return replaced


def quantize_blocks(model: nn.Module) -> int:
    """Replace every block Linear with its FP8Linear in place; returns how many were replaced."""
    replaced = 0
    for parent, name, linear in _block_linears(model):
        setattr(parent, name, FP8Linear.from_linear(linear))
        replaced += 1
    if replaced == 0:
        raise ValueError("fp8: the model has no transformer-block Linear layers to store in fp8")
    return replaced
