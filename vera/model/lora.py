"""LoRAs on a Vera model: low-rank (or full) weight deltas on its Linear layers, unmerged or merged.

    handle = attach(model, patches)          # forward hooks; the weights stay as they are
    handle.remove()                          # gone again
    merge(model, patches)                    # folded into the (float) weights instead

A patch targets one module of one branch (`branches.<branch>.<Wan name>`) with either a low-rank
pair (`up` `[out, r]`, `down` `[r, in]`, output += scale * x @ down.T @ up.T) or full deltas
(`diff` `[out, in]`, `diff_b` `[out]`). Unmerged, the layer's own weights are untouched, so fp8
weights, block swap and ComfyUI's weight casting keep working; the LoRA tensors live on the compute
device (their own size in memory) and run in the input's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LoraPatch:
    """One delta on one Linear: `target` is the module's name in the model
    (`branches.edit.blocks.3.self_attn.q`)."""

    target: str
    scale: float = 1.0
    up: torch.Tensor | None = None  # [out, r]
    down: torch.Tensor | None = None  # [r, in]
    diff: torch.Tensor | None = None  # [out, in]
    diff_b: torch.Tensor | None = None  # [out]

    def delta_weight(self) -> torch.Tensor | None:
        """The weight delta `[out, in]` in float32 (scale included), or None (bias only)."""
        delta = None
        if self.up is not None:
            delta = self.scale * (self.up.float() @ self.down.float())
        if self.diff is not None:
            full = self.scale * self.diff.float()
            delta = full if delta is None else delta + full
        return delta

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """What the patch adds to the layer's output for input x `[..., in]` -> `[..., out]`."""
        out = 0
        if self.up is not None:
            out = F.linear(F.linear(x, self.down.to(x.dtype)), self.up.to(x.dtype)) * self.scale
        if self.diff is not None or self.diff_b is not None:
            weight = None if self.diff is None else self.diff.to(x.dtype) * self.scale
            bias = None if self.diff_b is None else self.diff_b.to(x.dtype) * self.scale
            if weight is None:
                out = out + bias
            else:
                out = out + F.linear(x, weight, bias)
        return out

    def to(self, device, moved: dict | None = None) -> "LoraPatch":
        """On `device`; `moved` (id -> tensor) lets patches that share tensors (one Wan LoRA on
        three branches) share their copies too."""
        moved = {} if moved is None else moved

        def move(t):
            if t is None:
                return None
            key = (id(t), str(device))
            if key not in moved:
                moved[key] = t.to(device)
            return moved[key]

        return LoraPatch(self.target, self.scale, move(self.up), move(self.down), move(self.diff),
                         move(self.diff_b))


@dataclass
class ParamDiff:
    """A full delta on a parameter that is no Linear's weight (a norm, a modulation table, a patch
    or layer embedding): added to the parameter itself, also when attached (it is small; `remove`
    puts the original back)."""

    target: str  # the parameter's name in the model (`branches.edit.blocks.0.modulation`)
    diff: torch.Tensor
    scale: float = 1.0


def _module(model: nn.Module, name: str) -> nn.Module:
    module = model.get_submodule(name)
    if not hasattr(module, "in_features"):  # nn.Linear, FP8Linear, ComfyUI's Linears
        raise ValueError(f"LoRA target {name!r} is a {type(module).__name__}, not a Linear layer")
    return module


class AttachedLoras:
    """The forward hooks `attach` installed and the parameters it changed; `remove()` undoes
    both."""

    def __init__(self, handles: list, originals: list, held: list):
        self.handles, self.originals, self.held = handles, originals, held

    def held_bytes(self) -> int:
        """Bytes of LoRA tensors the hooks hold (each distinct tensor once)."""
        return sum(t.numel() * t.element_size() for t in {id(t): t for t in self.held}.values())

    @torch.no_grad()
    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        for parameter, original in self.originals:
            parameter.copy_(original)
        self.handles, self.originals, self.held = [], [], []


@torch.no_grad()
def _add_diff(parameter: torch.Tensor, patch: ParamDiff) -> None:
    """Add a ParamDiff to its parameter."""
    if tuple(parameter.shape) != tuple(patch.diff.shape):
        raise ValueError(f"LoRA diff for {patch.target}: shape {tuple(patch.diff.shape)}, the "
                         f"parameter is {tuple(parameter.shape)}")
    parameter += (patch.scale * patch.diff.float()).to(parameter)


def attach(model: nn.Module, patches: list, device=None) -> AttachedLoras:
    """Run the patches beside their layers (unmerged); ParamDiffs are added to their parameters
    until `remove`. device: where the LoRA tensors live (the compute device; default: where each
    layer's weight is)."""
    by_target: dict[str, list[LoraPatch]] = {}
    originals = []
    for patch in patches:
        if isinstance(patch, ParamDiff):
            parameter = model.get_parameter(patch.target)
            originals.append((parameter, parameter.detach().clone()))
            _add_diff(parameter, patch)
            continue
        by_target.setdefault(patch.target, []).append(patch)
    handles, moved = [], {}
    for target, group in by_target.items():
        module = _module(model, target)
        where = device if device is not None else module.weight.device
        group = [p.to(where, moved) for p in group]

        def add(mod, inputs, output, group=group):
            x = inputs[0]
            for patch in group:
                output = output + patch.output(x).to(output.dtype)
            return output

        handles.append(module.register_forward_hook(add))
    return AttachedLoras(handles, originals, list(moved.values()))


@torch.no_grad()
def merge(model: nn.Module, patches: list) -> None:
    """Fold the patches into their layers' weights (float weights only: an fp8 layer would be
    requantised, losing the LoRA's small changes; keep those unmerged)."""
    for patch in patches:
        if isinstance(patch, ParamDiff):
            _add_diff(model.get_parameter(patch.target), patch)
            continue
        module = _module(model, patch.target)
        if module.weight.element_size() == 1:
            raise ValueError(f"{patch.target}: its weights are fp8; a merged LoRA would be lost to "
                             "rounding, so fp8 weights take LoRAs unmerged (the default)")
        delta = patch.delta_weight()
        if delta is not None:
            module.weight += delta.to(module.weight)
        if patch.diff_b is not None:
            if module.bias is None:
                raise ValueError(f"{patch.target}: the LoRA has a bias delta but the layer has no "
                                 "bias")
            module.bias += (patch.scale * patch.diff_b.float()).to(module.bias)
