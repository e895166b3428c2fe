"""LoRA training option: the three branches share one frozen copy of the Wan base weights and each
learns its own low-rank adapters (peft) on attention and FFN projections.

Linear weights dominate a Wan DiT, so holding them once instead of three times cuts weight memory
about 3x (and the optimizer state to the adapters). Norms, modulation, patch/text/time embeddings'
non-Linear parts, heads and Vera's conditioning embeddings stay per branch and fully trainable.
`merge_lora` folds each branch's adapters into its own copy of the base, giving a standard Vera model.
"""
from __future__ import annotations

import torch
from torch import nn

from ..model.config import BRANCHES

TARGETS = r".*blocks\.\d+\.(self_attn|cross_attn)\.(q|k|v|o)|.*blocks\.\d+\.ffn\.(0|2)"


def _linear_paths(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(_get(module, parent) if parent else module, leaf, value)


def shared_base_lora(model, rank: int, alpha: float | None = None):
    """Tie every branch's Linear layers to the edit branch's (frozen), then add per-branch adapters."""
    from peft import LoraConfig, inject_adapter_in_model

    edit = model.branches["edit"]
    paths = _linear_paths(edit)
    for name in BRANCHES[1:]:  # check everything before changing anything
        if not all(torch.equal(_get(model.branches[name], p).weight, _get(edit, p).weight) for p in paths):
            raise ValueError(
                "LoRA training ties the branches to one shared base, so they must start identical: "
                "pass a Wan2.1 T2V file as --init (not a trained Vera file)"
            )
    for name in BRANCHES[1:]:
        for path in paths:
            _set(model.branches[name], path, _get(edit, path))  # the same module object: one copy of its weights
    for path in _linear_paths(edit):
        _get(edit, path).requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=TARGETS, lora_dropout=0.0)
    for name in BRANCHES:
        # injecting into a branch whose Linear modules are shared would wrap them once for all
        # branches, so give each branch its own thin wrapper module around the shared weights first
        branch = model.branches[name]
        for path in _linear_paths(branch):
            shared = _get(branch, path)
            wrapper = nn.Linear(shared.in_features, shared.out_features, bias=shared.bias is not None, device="meta")
            wrapper.weight, wrapper.bias = shared.weight, shared.bias
            _set(branch, path, wrapper)
        inject_adapter_in_model(config, branch)
    return model


def merge_lora(model):
    """Replace every LoRA-wrapped Linear with a plain Linear holding base + its adapter delta, and untie the rest:
    each branch ends with its own tensors (a standard Vera model)."""
    from peft.tuners.lora import LoraLayer

    for name in BRANCHES:
        branch = model.branches[name]
        for path, module in list(branch.named_modules()):
            if isinstance(module, LoraLayer):
                base = module.get_base_layer()
                merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
                with torch.no_grad():
                    delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
                    merged.weight.copy_(base.weight + delta.to(base.weight.dtype))
                    if base.bias is not None:
                        merged.bias.copy_(base.bias)
                _set(branch, path, merged.to(base.weight.device))
        # Linear layers without adapters (embeddings, head) still share the base tensors: give each branch its own
        for path in _linear_paths(branch):
            layer = _get(branch, path)
            layer.weight = nn.Parameter(layer.weight.detach().clone())
            if layer.bias is not None:
                layer.bias = nn.Parameter(layer.bias.detach().clone())
        for p in branch.parameters():
            p.requires_grad_(True)
    return model


def lora_file_tensors(model, base) -> dict[str, torch.Tensor]:
    """What training changed, as a Vera LoRA file's tensors (`vera.checkpoints.lora` reads it back
    onto `base`, the model training started from, equal to the merged model): each branch's
    adapters (`branches.<b>.<layer>.lora_down` / `lora_up` / `alpha`), and a full `.diff` /
    `.diff_b` for every other tensor that moved (norms, modulation, patch and Vera's conditioning
    embeddings). `model` is the adapter-wrapped model, before `merge_lora`."""
    import copy

    from peft.tuners.lora import LoraLayer

    tensors, adapted = {}, set()
    for name in BRANCHES:
        for path, module in model.branches[name].named_modules():
            if not isinstance(module, LoraLayer):
                continue
            for adapter in module.active_adapters:
                down = module.lora_A[adapter].weight.detach().float()
                key = f"branches.{name}.{path}"
                tensors[f"{key}.lora_down.weight"] = down.contiguous()
                tensors[f"{key}.lora_up.weight"] = module.lora_B[adapter].weight.detach().float()
                tensors[f"{key}.alpha"] = torch.tensor(module.scaling[adapter] * down.shape[0])
            adapted.add(f"branches.{name}.{path}")
    merged = merge_lora(copy.deepcopy(model)).state_dict()
    start = base.state_dict()
    for key, value in merged.items():
        owner, _, leaf = key.rpartition(".")
        if owner in adapted and leaf == "weight":
            continue
        change = value.float() - start[key].float()
        if not change.abs().max() > 0:
            continue
        if leaf == "weight":
            tensors[f"{owner}.diff"] = change
        elif leaf == "bias":
            tensors[f"{owner}.diff_b"] = change
        else:  # a parameter of its own (modulation, a layer embedding)
            tensors[f"{key}.diff"] = change
    return tensors


def weight_bytes(model) -> int:
    """Bytes of distinct parameter storage (shared tensors counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total
