"""Checkpoint formats in and out.

Formats read (safetensors only, fp32/bf16/fp16/fp8 e4m3fn incl. ComfyUI `scaled_fp8`):
  wan-original   Wan2.1 T2V in the original / ComfyUI key names, with or without `model.diffusion_model.`
  wan-diffusers  Wan2.1 T2V in diffusers names: one file, or a diffusers folder (config.json + shards)
  vera           our own single file (layout below), config in the metadata
  + any entry of VERA_LAYOUTS (third-party Vera files), which map their names onto ours

Vera file layout (`format=vera` in the metadata, `config` = VeraConfig JSON):
  branches.{edit,alpha,composite}.<Wan original key>   e.g. branches.alpha.blocks.3.self_attn.q.weight
  source_embedding.{weight,bias}      Conv3d [D, 16, 1, 2, 2], the source-latent patch embedding
  mask_embedding.{weight,bias}        Conv3d [D, 16, 1, 2, 2], the mask-latent patch embedding
  layer_embedding_alpha, layer_embedding_composite   [1, 1, D]
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import BRANCHES, HeadCountUnknown, VeraConfig, config_from_shapes
from .model import VeraModel
from .safetensors_io import CheckpointError, TensorEntry, atomic_save, load_tensors, read_header

COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
VERA_FORMAT_VERSION = "1"

# diffusers Wan name -> Wan original name, applied in order to each key.
DIFFUSERS_TO_WAN = [
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"\.attn1\.", ".self_attn."),
    (r"\.attn2\.", ".cross_attn."),
    (r"\.to_q\.", ".q."), (r"\.to_k\.", ".k."), (r"\.to_v\.", ".v."), (r"\.to_out\.0\.", ".o."),
    (r"^(blocks\.\d+)\.norm2\.", r"\1.norm3."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."),
    (r"\.ffn\.net\.2\.", ".ffn.2."),
    (r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation"),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
]


def rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


@dataclass(frozen=True)
class VeraLayout:
    """How a third-party Vera file names things. `rules` map its keys to ours (regex, in order);
    `branch_names` says whether keys inside a branch then use Wan original or diffusers names."""

    name: str
    marker: str  # a key only this layout has
    rules: list = field(default_factory=list)
    branch_names: str = "wan-original"


VERA_LAYOUTS = [
    VeraLayout("vera", marker="branches.edit.patch_embedding.weight"),
    # A diffusers-style export: one transformer per layer under its own prefix. The official
    # netflix/Vera-MoT-* names are not public yet; once they are, they go here as one more entry.
    VeraLayout(
        "vera-diffusers",
        marker="transformer_edit.patch_embedding.weight",
        rules=[
            (r"^transformer_(edit|alpha|composite)\.", r"branches.\1."),
            (r"^source_patch_embedding\.", "source_embedding."),
            (r"^mask_patch_embedding\.", "mask_embedding."),
            (r"^(alpha|composite)_layer_embedding$", r"layer_embedding_\1"),
        ],
        branch_names="wan-diffusers",
    ),
]


@dataclass
class CheckpointInfo:
    path: Path
    format: str
    config: VeraConfig | None
    dtypes: dict[str, int]
    num_parameters: int
    scaled_fp8: bool
    entries: dict[str, TensorEntry] = field(repr=False)
    metadata: dict[str, str] = field(repr=False)
    layout: VeraLayout | None = None
    note: str = ""  # why config is None, when it is


def _gather_entries(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str], dict]:
    """Header entries of a file, or of every shard of a diffusers folder (plus its config.json)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{path}: folder has no .safetensors files")
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        entries, metadata = {}, {}
        for f in files:
            e, m = read_header(f)
            entries.update(e)
            metadata.update(m)
        return entries, metadata, config
    if path.suffix.lower() in (".ckpt", ".pt", ".pth", ".bin"):
        raise CheckpointError(
            f"{path}: pickle-based checkpoints are never loaded (they can run code); convert it to .safetensors"
        )
    entries, metadata = read_header(path)
    return entries, metadata, {}


def strip_prefix(key: str) -> str:
    """Drop ComfyUI's `model.diffusion_model.` (or `diffusion_model.`) from a key."""
    for prefix in COMFY_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _refuse_wrong_kind(path: Path, keys: set[str], shapes: dict) -> None:
    def has(fragment):
        return any(fragment in k for k in keys)

    if has("decoder.") and has("encoder.") and not has("blocks.0."):
        raise CheckpointError(f"{path}: this is a VAE file, not a diffusion model; load it as the VAE instead")
    if has("shared.weight") or has("encoder.block.0."):
        raise CheckpointError(f"{path}: this is a text encoder (UMT5) file, not a diffusion model")
    if has("img_emb.") or has("k_img") or has("add_k_proj") or has("image_embedder"):
        raise CheckpointError(
            f"{path}: this is a Wan image-to-video (I2V) model; Vera is built from a Wan2.1 text-to-video (T2V) model"
        )
    if has("vace_blocks") or has("vace_patch_embedding"):
        raise CheckpointError(f"{path}: this is a Wan VACE model; Vera is built from a plain Wan2.1 T2V model")
    pe = shapes.get("patch_embedding.weight")
    if pe is not None and pe[1] != 16:
        raise CheckpointError(
            f"{path}: patch embedding takes {pe[1]} input channels; a Wan2.1 T2V model takes 16 "
            "(36 means I2V/FLF2V, 48 Wan2.2-5B): use a Wan2.1 T2V file"
        )


def _config_or_none(shapes, num_heads, require: bool) -> tuple[VeraConfig | None, str]:
    try:
        return config_from_shapes(shapes, num_heads), ""
    except HeadCountUnknown as error:
        if require:
            raise
        return None, str(error)


def detect(path: str | Path, num_heads: int | None = None,
           require_config: bool = True) -> CheckpointInfo:
    """require_config=False: describe a file whose head count cannot be inferred (config None and a
    note saying how to pass it) instead of refusing it; loading always needs the config."""
    """Identify a checkpoint's format and config from its header alone (no tensor is read)."""
    path = Path(path)
    entries, metadata, folder_config = _gather_entries(path)
    if not entries:
        raise CheckpointError(f"{path}: file holds no tensors")
    dtypes: dict[str, int] = {}
    for e in entries.values():
        dtypes[e.dtype] = dtypes.get(e.dtype, 0) + 1
    scaled = "scaled_fp8" in entries or any(k.endswith(".scale_weight") for k in entries)
    params = sum(e.numel for k, e in entries.items() if not _is_scale_key(k))
    stripped = {strip_prefix(k): v for k, v in entries.items()}

    layout = next((lay for lay in VERA_LAYOUTS if lay.marker in stripped), None)
    if metadata.get("format") == "vera" or layout is not None:
        note = ""
        if "config" in metadata:
            try:
                config = VeraConfig.from_json(metadata["config"], f"{path} (its config metadata)")
            except ValueError as error:
                raise CheckpointError(str(error)) from None
        else:
            branch = _branch_shapes(stripped, layout or VERA_LAYOUTS[0], "edit")
            config, note = _config_or_none(branch, num_heads, require_config)
        return CheckpointInfo(path, (layout or VERA_LAYOUTS[0]).name, config, dtypes, params, scaled,
                              entries, metadata, layout or VERA_LAYOUTS[0], note)

    is_diffusers = any(k.startswith("condition_embedder.") for k in stripped)
    wan_keys = {rename(k, DIFFUSERS_TO_WAN) if is_diffusers else k: v for k, v in stripped.items()}
    shapes = {k: v.shape for k, v in wan_keys.items()}
    _refuse_wrong_kind(path, set(stripped), shapes)
    if "head.modulation" not in shapes or "blocks.0.self_attn.q.weight" not in shapes:
        sample = ", ".join(sorted(entries)[:5])
        raise CheckpointError(
            f"{path}: not a Wan2.1 T2V or Vera checkpoint (no Wan head/blocks found; first keys: {sample})"
        )
    # our own Wan-format files (vera.single.WanVideoModel) record their head count in the metadata
    heads = num_heads or folder_config.get("num_attention_heads") or metadata.get("num_attention_heads")
    heads = int(heads) if heads is not None else None
    config, note = _config_or_none(shapes, heads, require_config)
    fmt = "wan-diffusers" if is_diffusers else "wan-original"
    return CheckpointInfo(path, fmt, config, dtypes, params, scaled, entries, metadata, note=note)


def _is_scale_key(key: str) -> bool:
    return key.endswith((".scale_weight", ".scale_input")) or key.endswith("scaled_fp8")


def _branch_shapes(stripped: dict, layout: VeraLayout, branch: str) -> dict:
    ours = {rename(k, layout.rules): v for k, v in stripped.items()}
    prefix = f"branches.{branch}."
    inner = {k[len(prefix):]: v.shape for k, v in ours.items() if k.startswith(prefix)}
    if layout.branch_names == "wan-diffusers":
        inner = {rename(k, DIFFUSERS_TO_WAN): v for k, v in inner.items()}
    return inner


def _dequantize(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Cast to `dtype`; fp8 weights are multiplied by their ComfyUI `scale_weight` first."""
    out = {}
    for key, value in tensors.items():
        if _is_scale_key(key):
            continue
        scale = tensors.get(key[: -len("weight")] + "scale_weight") if key.endswith("weight") else None
        if value.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            value = value.float() * (scale.float() if scale is not None else 1.0)
        out[key] = value.to(dtype)
    return out


def _check_keys(path: Path, have: set[str], want: set[str], what: str) -> None:
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:4])})")
        raise CheckpointError(
            f"{path}: keys do not match {what}: {'; '.join(parts)}. "
            "Is this the right model file and size (1.3B vs 14B)?"
        )


def read_wan_branch(info: CheckpointInfo, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The tensors of a Wan2.1 T2V file as one branch's state dict (Wan original names, `dtype`)."""
    diffusers = info.format == "wan-diffusers"
    tensors = load_tensors(info.entries)
    return _dequantize({rename(strip_prefix(k), DIFFUSERS_TO_WAN) if diffusers else strip_prefix(k): t
                        for k, t in tensors.items()}, dtype)


def _build(config: VeraConfig, state: dict[str, torch.Tensor], device, dtype) -> VeraModel:
    """Instantiate on the meta device and take the given tensors as parameters (no random init)."""
    with torch.device("meta"):
        model = VeraModel(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype)


def model_from_wan(info: CheckpointInfo, dtype=torch.float32, device="cpu", conditioning: str = "add") -> VeraModel:
    """A fresh Vera model: all three branches initialised from one Wan2.1 T2V file, extras zeroed."""
    config = info.config.replace(conditioning=conditioning)
    branch = read_wan_branch(info, dtype)
    _check_keys(info.path, set(branch), _branch_keys(config), "a Wan2.1 T2V model")
    state = {}
    for i, name in enumerate(BRANCHES):
        for k, v in branch.items():
            state[f"branches.{name}.{k}"] = v if i == 0 else v.clone()
    for emb in ("source_embedding", "mask_embedding"):
        for p in ("weight", "bias"):
            pretrained = branch[f"patch_embedding.{p}"]
            # "add": zero-init (the paper). "sequence": appended tokens are clean video latents,
            # so they start from the pretrained patch embedding.
            state[f"{emb}.{p}"] = pretrained.clone() if conditioning == "sequence" else torch.zeros_like(pretrained)
    d = config.dim
    for layer in ("alpha", "composite"):
        state[f"layer_embedding_{layer}"] = torch.zeros(1, 1, d, dtype=dtype)
    return _build(config, state, device, dtype)


def _branch_keys(config: VeraConfig) -> set[str]:
    with torch.device("meta"):
        return set(VeraModel(config).branches["edit"].state_dict())


def model_from_vera(info: CheckpointInfo, dtype=torch.float32, device="cpu") -> VeraModel:
    layout = info.layout
    raw = load_tensors(info.entries)
    state = {}
    for key, value in raw.items():
        key = rename(strip_prefix(key), layout.rules)
        if layout.branch_names == "wan-diffusers" and key.startswith("branches."):
            _, branch, inner = key.split(".", 2)
            key = f"branches.{branch}.{rename(inner, DIFFUSERS_TO_WAN)}"
        state[key] = value
    state = _dequantize(state, dtype)
    with torch.device("meta"):
        expected = set(VeraModel(info.config).state_dict())
    _check_keys(info.path, set(state), expected, f"a Vera model ({info.config.name} config)")
    return _build(info.config, state, device, dtype)


def resolve_model_path(path_or_name: str | Path) -> Path:
    """`vera-tiny` -> the embedded model's file; any other value is a path."""
    from .bundle import TINY_DIR, TINY_NAME

    if str(path_or_name) == TINY_NAME:
        return TINY_DIR / "vera.safetensors"
    return Path(path_or_name)


def load_model(path_or_name: str | Path, weight_dtype: str | torch.dtype = "auto", device="cpu",
               num_heads: int | None = None, conditioning: str = "add",
               attention_backend: str = "auto") -> VeraModel:
    """Load a Vera checkpoint (or `vera-tiny`), or build a fresh Vera model from a Wan2.1 T2V file.

    weight_dtype: a policy of `vera.precision` (auto / bf16 / fp16 / fp8 / fp32) or a torch dtype.
    fp8 models are built on the CPU, quantised there and only then moved to `device`.
    `conditioning` applies only when initialising from Wan (a Vera file carries its own).
    """
    from .attention import resolve_backend
    from .fp8 import quantize_blocks
    from .precision import compute_dtype, resolve_device, weight_dtype_name

    device = resolve_device(device)
    resolve_backend(attention_backend, device)  # a clear error now rather than at the first step
    policy = weight_dtype_name(weight_dtype)
    dtype = compute_dtype(policy, device)
    build_on = torch.device("cpu") if policy == "fp8" else device
    info = detect(resolve_model_path(path_or_name), num_heads)
    if info.format.startswith("wan-"):
        model = model_from_wan(info, dtype, build_on, conditioning)
    else:
        model = model_from_vera(info, dtype, build_on)
    if policy == "fp8":
        quantize_blocks(model)
        model = model.to(device)
    model.attention_backend = attention_backend
    return model


def save_vera(model: VeraModel, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    """Write `model` as one Vera safetensors file (atomic: a crash never leaves a half-written file)."""
    metadata = {"format": "vera", "format_version": VERA_FORMAT_VERSION, "config": model.config.to_json()}
    metadata.update(extra_metadata or {})
    return atomic_save(model.state_dict(), Path(path), metadata)
