"""LoRA files: read any common layout and map it onto Vera's branches.

    spec = LoraSpec.parse("lightx2v.safetensors:0.8:edit,composite")
    patches, report = read_lora(spec, model)      # -> vera.model.lora.attach / merge

Layouts read (safetensors only; a pickle could run code):
- `diffusion_model.blocks.N.self_attn.q.lora_A.weight` / `lora_B` (peft names, A = down), with or
  without `model.` / `transformer.` / `base_model.model.` wrappers;
- `lora_down.weight` / `lora_up.weight` with an optional `.alpha` (scale alpha / rank);
- kohya's `lora_unet_blocks_N_self_attn_q.lora_down.weight`;
- diffusers module names (`blocks.N.attn1.to_q`, `ffn.net.0.proj`, `condition_embedder...`);
- `.diff` / `.diff_b`: full weight and bias deltas;
- Vera's own per-branch LoRAs: `branches.<edit|alpha|composite>.<any of the above>`.
A Wan2.1 T2V LoRA goes onto the branches asked for (all three by default: that is how a Wan LoRA, a
step-distill one for instance, is used on a model fine-tuned from Wan); a Vera LoRA's tensors go to
their own branch. Strength is per LoRA, or per branch.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..model.config import BRANCHES
from ..model.lora import LoraPatch, ParamDiff
from .detect import DIFFUSERS_TO_WAN, rename
from .detect import WRAPPERS as DETECT_WRAPPERS
from .safetensors_io import CheckpointError, load_tensors, read_header

MAX_STRENGTH = 10.0
ROLES = (  # suffix -> role, longest first where one ends another
    (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora_down.weight", "down"), (".lora_up.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    (".alpha", "alpha"), (".diff_b", "diff_b"), (".diff", "diff"),
)
WRAPPERS = ("base_model.model.", *DETECT_WRAPPERS)  # peft's, then those of any checkpoint
KOHYA = "lora_unet_"
I2V = re.compile(r"(^|\.)(k_img|v_img|img_emb|norm_k_img)(\.|$)")


class LoraError(CheckpointError):
    """A LoRA file or setting that cannot be used; the message names the file and the keys."""


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA file with its strength (one number, or {branch: number}) and the branches a Wan LoRA
    goes onto (a Vera LoRA's tensors go to their own branch, among these)."""

    path: str | Path
    strength: float | dict = 1.0
    branches: tuple[str, ...] = BRANCHES

    def __post_init__(self):
        unknown = [b for b in self.branches if b not in BRANCHES]
        if unknown or not self.branches:
            raise LoraError(f"LoRA {self.path}: branches {','.join(self.branches) or '(none)'}: "
                            f"each must be one of {', '.join(BRANCHES)}")
        strengths = self.strength if isinstance(self.strength, dict) else {"": self.strength}
        for branch, value in strengths.items():
            if branch and branch not in BRANCHES:
                raise LoraError(f"LoRA {self.path}: strength for {branch!r}: not a branch "
                                f"({', '.join(BRANCHES)})")
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or abs(value) > MAX_STRENGTH:
                raise LoraError(f"LoRA {self.path}: strength {value!r}: must be a finite number "
                                f"from -{MAX_STRENGTH:g} to {MAX_STRENGTH:g} (1 = as trained)")

    def strength_for(self, branch: str) -> float:
        if isinstance(self.strength, dict):
            return float(self.strength.get(branch, 1.0))
        return float(self.strength)

    @classmethod
    def parse(cls, text: str) -> "LoraSpec":
        """'PATH[:STRENGTH[:BRANCHES]]' (BRANCHES a comma list), as `--lora` takes it; a colon
        inside PATH (C:\\...) stays part of it."""
        head, sep, last = text.rpartition(":")
        if sep and head and _number(last):
            return cls(head, float(last))
        before, sep2, middle = head.rpartition(":")
        if sep and sep2 and before and _number(middle):
            return cls(before, float(middle), tuple(b.strip() for b in last.split(",")))
        return cls(text)


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@dataclass
class LoraReport:
    """What one LoRA did: tensors applied of those in the file, and the first keys left out.
    key_maps: per branch, the file's key prefix of each layer -> our weight's name
    (`branches.edit.blocks.0.self_attn.q.weight`), as ComfyUI's LoRA loader takes them;
    strengths: per branch; tensors: the file's tensors that were used, by their names in the file
    (what ComfyUI's loader reads, so the file is read once)."""

    path: str
    applied: int = 0
    total: int = 0
    targets: int = 0
    left_out: list[str] = field(default_factory=list)
    key_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    strengths: dict[str, float] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def line(self) -> str:
        text = (f"LoRA {Path(self.path).name}: applied {self.applied} of {self.total} tensors "
                f"({self.targets} layers)")
        if self.left_out:
            text += f"; not applied (no layer of Vera's): {', '.join(self.left_out[:5])}"
        return text


def _split_role(key: str) -> tuple[str, str] | None:
    for suffix, role in ROLES:
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


def _strip(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for wrapper in WRAPPERS:
            if name.startswith(wrapper):
                name, changed = name[len(wrapper):], True
    return name


def _wan_name(name: str, linears: dict[str, nn.Module], underscored: dict[str, str]) -> str | None:
    """A module name in any layout -> its Wan original name in a branch, or None. underscored:
    kohya's names of the linears (dots as underscores) -> their names."""
    if name.startswith(KOHYA):
        return underscored.get(name[len(KOHYA):])
    if name in linears:
        return name
    renamed = rename(name + ".", DIFFUSERS_TO_WAN)[:-1]
    return renamed if renamed in linears else None


def _linears(model) -> dict[str, nn.Module]:
    branch = model.branches[BRANCHES[0]]
    return {n: m for n, m in branch.named_modules() if hasattr(m, "in_features")}


def _check_finite(path, key: str, tensor: torch.Tensor) -> None:
    if tensor.is_floating_point() and not torch.isfinite(tensor.float()).all():
        raise LoraError(f"{path}: tensor {key} holds NaN or infinite values; the file is damaged")


# Vera's own parameters outside the branches, and the branch whose stream each one feeds
VERA_PARAMETERS = {"source_embedding": "composite", "mask_embedding": "alpha",
                   "layer_embedding_alpha": "alpha", "layer_embedding_composite": "composite"}


def _parameter_owner(names: dict, branch: str | None, name: str) -> tuple[str | None, str] | None:
    """Where a full delta on something other than a Linear goes: (branch, Wan name) for a
    parameter of a branch (None: every branch asked for), ("vera", name) for Vera's own. names:
    the model's parameters by name."""
    has = lambda base: base in names or f"{base}.weight" in names
    if branch is None and name.split(".")[0] in VERA_PARAMETERS and has(name):
        return ("vera", name)
    if has(f"branches.{branch or BRANCHES[0]}.{name}"):
        return (branch, name)
    return None


def _parameter_diffs(path, spec: LoraSpec, names: dict, diffs: dict, tensors: dict,
                     report: "LoraReport") -> list:
    """ParamDiff patches (norms, modulation, patch and layer embeddings), shape-checked."""
    patches = []
    for (scope, name), roles in diffs.items():
        if scope == "vera":
            onto = [(VERA_PARAMETERS[name.split(".")[0]], name)]
        else:
            onto = [(b, f"branches.{b}.{name}") for b in ([scope] if scope else spec.branches)]
        onto = [(b, full) for b, full in onto if b in spec.branches]
        for role, key in roles.items():
            _check_finite(path, key, tensors[key])
        for branch, full in onto:
            strength = spec.strength_for(branch)
            for role, key in roles.items():
                kind = "weight" if role == "diff" else "bias"
                parameter = full if full in names else f"{full}.{kind}"
                if role == "diff_b" and parameter not in names:
                    raise LoraError(f"{path}: {key}: {full} has no bias in this model")
                want = tuple(names[parameter].shape)
                if tuple(tensors[key].shape) != want:
                    raise LoraError(f"{path}: {key} {tuple(tensors[key].shape)}: {parameter} "
                                    f"is {list(want)} in this model: a LoRA for another model or "
                                    "width")
                if strength:
                    patches.append(ParamDiff(parameter, tensors[key], strength))
                    # ComfyUI's loader takes the weight's name and finds the bias beside it
                    weight = full if full in names else f"{full}.weight"
                    report.key_maps.setdefault(branch, {})[key[: -len("." + role)]] = weight
                    report.strengths[branch] = strength
        if onto:
            report.applied += len(roles)
    return patches


def read_lora(spec: LoraSpec, model) -> tuple[list[LoraPatch], LoraReport]:
    """The patches `spec`'s file makes on `model` (a VeraModel), checked against its layers' shapes,
    and a report. Refuses, naming the file and keys: not safetensors, not a LoRA, an I2V LoRA, ranks
    that differ between down and up, shapes of another model or width, NaNs, nothing that
    matches."""
    path = Path(spec.path)
    if path.suffix.lower() != ".safetensors":
        raise LoraError(f"{path}: LoRAs are read from .safetensors files only (a pickle such as "
                        ".pt / .ckpt / .bin can run code when loaded); convert it first")
    if not path.is_file():
        raise LoraError(f"{path}: no such LoRA file")
    entries, _ = read_header(path)
    linears = _linears(model)
    underscored = {n.replace(".", "_"): n for n in linears}
    names = dict(model.named_parameters())
    groups: dict[tuple[str | None, str], dict[str, str]] = {}
    prefixes: dict[tuple[str | None, str], str] = {}
    diffs: dict[tuple[str | None, str], dict[str, str]] = {}  # (scope, name) -> {role: key}
    report = LoraReport(str(path), total=len(entries))
    i2v = [k for k in entries if I2V.search(k)]
    if i2v:
        raise LoraError(f"{path}: an image-to-video (I2V) LoRA ({', '.join(i2v[:3])}); Vera is "
                        "built from Wan2.1 T2V, which has no image layers: use a T2V LoRA")
    for key in entries:
        split = _split_role(key)
        if split is None:
            report.left_out.append(key)
            continue
        prefix, role = split
        name, branch = _strip(prefix), None
        found = re.match(r"branches\.(\w+)\.(.*)$", name)
        if found and found.group(1) in BRANCHES:
            branch, name = found.group(1), _strip(found.group(2))
        target = _wan_name(name, linears, underscored)
        if target is None:
            owner = _parameter_owner(names, branch, name) if role in ("diff", "diff_b") else None
            if owner is None:
                report.left_out.append(key)
            else:
                diffs.setdefault(owner, {})[role] = key
            continue
        groups.setdefault((branch, target), {})[role] = key
        prefixes[(branch, target)] = prefix
    if not groups and not diffs:
        shown = ", ".join(list(entries)[:5])
        raise LoraError(f"{path}: no tensor matches a layer of Vera / Wan2.1 (first keys: "
                        f"{shown}); is it a LoRA for another model (SD, Flux, Wan2.2...)?")
    wanted = [k for g in (*groups.values(), *diffs.values()) for k in g.values()]
    tensors = load_tensors(entries, wanted)
    report.tensors = tensors
    patches = _parameter_diffs(path, spec, names, diffs, tensors, report)
    for (branch, target), roles in groups.items():
        layer = linears[target]
        out_f, in_f = layer.out_features, layer.in_features
        values = {role: tensors[key] for role, key in roles.items()}
        for role, key in roles.items():
            _check_finite(path, key, values[role])
        up, down = values.get("up"), values.get("down")
        if (up is None) != (down is None):
            missing = "up (B)" if up is None else "down (A)"
            raise LoraError(f"{path}: {next(iter(roles.values()))}: its {missing} half is missing")
        scale = 1.0
        if up is not None:
            if up.ndim != 2 or down.ndim != 2 or up.shape[1] != down.shape[0]:
                raise LoraError(f"{path}: {roles['up']} {tuple(up.shape)} and {roles['down']} "
                                f"{tuple(down.shape)}: their ranks differ")
            if (up.shape[0], down.shape[1]) != (out_f, in_f):
                raise LoraError(
                    f"{path}: {roles['down']}: a [{up.shape[0]} x {down.shape[1]}] update for "
                    f"{target}, which is [{out_f} x {in_f}] in this model: a LoRA for another "
                    "model or width (e.g. 14B on 1.3B)")
            if "alpha" in values:
                scale = float(values["alpha"]) / down.shape[0]
        for role, want in (("diff", (out_f, in_f)), ("diff_b", (out_f,))):
            if role in values and tuple(values[role].shape) != want:
                raise LoraError(f"{path}: {roles[role]} {tuple(values[role].shape)}: {target} is "
                                f"{list(want)} in this model: a LoRA for another model or width")
        onto = [branch] if branch is not None else list(spec.branches)
        onto = [b for b in onto if b in spec.branches]
        for b in onto:
            strength = spec.strength_for(b)
            if strength == 0:
                continue
            patches.append(LoraPatch(f"branches.{b}.{target}", scale * strength, up, down,
                                     values.get("diff"), values.get("diff_b")))
            report.key_maps.setdefault(b, {})[prefixes[(branch, target)]] = \
                f"branches.{b}.{target}.weight"
            report.strengths[b] = strength
        if onto:
            report.applied += len(roles)
            report.targets += 1
    return patches, report
