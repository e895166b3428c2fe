"""Checkpoints in and out: what a file is (`detect`), the model from it in one copy's worth of
memory (`load_model`), and our own file format (`save_vera`, `convert`).

Files read: see `vera.checkpoints.containers` (safetensors, shards, diffusers folders,
weights-only pickles) and `vera.checkpoints.detect` (Vera recognised by structure, plain Wan2.1 T2V
files, key maps); dtypes fp32 / bf16 / fp16 / fp8 e4m3fn incl. ComfyUI's scaled fp8.

Our file (`format=vera` in the metadata, `config` = VeraConfig JSON):
  branches.{edit,alpha,composite}.<Wan original key>   (branches.alpha.blocks.3.self_attn.q.weight)
  source_embedding.{weight,bias}      Conv3d [D, 16, 1, 2, 2], the source-latent patch embedding
  mask_embedding.{weight,bias}        Conv3d [D, 16, 1, 2, 2], the mask-latent patch embedding
  layer_embedding_alpha, layer_embedding_composite   [1, 1, D]
  fp8 files: block Linear weights in float8_e4m3fn with `<linear>.scale_weight` beside each, and
  a `scaled_fp8` marker tensor (ComfyUI's scaled-fp8 convention).

Loading reads one tensor at a time into the target dtype and device (fp8 kept as fp8, or quantised
one tensor at a time), so the peak is the finished model plus the tensor being converted; a Wan
file that starts all three branches is read once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..model.config import BRANCHES, VeraConfig
from ..model.fp8 import FP8, FP8_DTYPES, dequantize, fp8_shells, quantize
from ..model.mot import TorchOps, VeraModel
from .containers import Checkpoint, open_checkpoint
from .detect import (
    DIFFUSERS_TO_WAN,
    FP8_MARKER,
    Plan,
    keymap_beside,
    plan_from_shapes,
    read_keymap,
    rename,  # noqa: F401  (re-exported: tests build diffusers-named files with it)
)
from .safetensors_io import DTYPES, CheckpointError, atomic_save

VERA_FORMAT_VERSION = "1"
TINY_NAME = "vera-tiny"  # the embedded model, a name every loader takes in place of a path
TINY_DIR = Path(__file__).resolve().parents[1] / "assets" / "vera-tiny"
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}

__all__ = [
    "CheckpointInfo",
    "DIFFUSERS_TO_WAN",
    "checkpoint_kind",
    "convert",
    "detect",
    "load_model",
    "read_wan_branch",
    "save_vera",
]


@dataclass
class CheckpointInfo:
    """What `detect` found: the container, the layout (`format`: vera, wan-original,
    wan-diffusers), the config (None when its head count is unknown; `note` says so), stored
    dtypes, parameter count, and the plan that maps our model's keys to the file's tensors."""

    path: Path
    container: str
    format: str
    config: VeraConfig | None
    dtypes: dict[str, int]
    num_parameters: int
    scaled_fp8: bool
    plan: Plan = field(repr=False)
    checkpoint: Checkpoint = field(repr=False)
    keymap: Path | None = None
    note: str = ""

    def explain(self) -> list[str]:
        """Every decision, one line each, for `python -m vera info --explain`."""
        lines = [f"container: {self.checkpoint.container}", *self.checkpoint.notes]
        if self.keymap is not None:
            lines.append(f"key map: {self.keymap}")
        lines += self.plan.explain
        if self.plan.scales:
            lines.append(
                f"fp8: {len(self.plan.scales)} weights with scale_weight (ComfyUI scaled fp8)"
            )
        source = (
            "its metadata"
            if "config" in self.checkpoint.metadata
            else ("config.json" if self.checkpoint.config else "the tensor shapes")
        )
        lines.append(f"config from {source}" + (f" ({self.note})" if self.note else ""))
        return lines


def _stored_config(checkpoint: Checkpoint) -> VeraConfig | None:
    """The VeraConfig a file of ours carries in its metadata (other files' "config", such as a
    VAE's, is not one: it has no "dim")."""
    text = checkpoint.metadata.get("config")
    if text is None or '"dim"' not in text:
        return None
    try:
        return VeraConfig.from_json(text, f"{checkpoint.path} (its config metadata)")
    except ValueError as error:
        raise CheckpointError(str(error)) from None


def _heads(checkpoint: Checkpoint, num_heads: int | None) -> int | None:
    heads = (
        num_heads
        or checkpoint.config.get("num_attention_heads")
        or checkpoint.metadata.get("num_attention_heads")
    )
    return int(heads) if heads is not None else None


def detect(
    path: str | Path,
    num_heads: int | None = None,
    require_config: bool = True,
    keymap: str | Path | None = None,
) -> CheckpointInfo:
    """Identify a checkpoint from its headers alone (no tensor is read).

    keymap: a key-map JSON file; by default one found beside the weights or their container is
    used (`<weights>.vera-keymap.json`; see `vera.checkpoints.detect.keymap_candidates` for every
    place).
    require_config=False describes a file whose head count is unknown.
    """
    path = Path(path)
    checkpoint = open_checkpoint(path)
    if not checkpoint.tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    keymap = Path(keymap) if keymap is not None else keymap_beside(path, checkpoint.path)
    rules = read_keymap(keymap) if keymap is not None else None
    try:
        plan = plan_from_shapes(
            path,
            checkpoint.shapes,
            _heads(checkpoint, num_heads),
            _stored_config(checkpoint),
            rules,
            require_config,
        )
    except CheckpointError:
        raise
    except ValueError as error:  # a head count the shapes do not fix
        raise CheckpointError(f"{path}: {error}") from None
    dtypes: dict[str, int] = {}
    for ref in checkpoint.tensors.values():
        name = _DTYPE_NAMES.get(ref.dtype, str(ref.dtype))
        dtypes[name] = dtypes.get(name, 0) + 1
    params = sum(
        t.nbytes // t.dtype.itemsize
        for k, t in checkpoint.tensors.items()
        if not k.endswith((".scale_weight", ".scale_input")) and k != FP8_MARKER
    )
    scaled = bool(plan.scales) or FP8_MARKER in checkpoint.tensors
    return CheckpointInfo(
        path,
        checkpoint.container,
        plan.format,
        plan.config,
        dtypes,
        params,
        scaled,
        plan,
        checkpoint,
        keymap,
        plan.note,
    )


_SNIFFED: dict[tuple[str, int, int], tuple] = {}  # (path, size, mtime) -> what _sniff found


def _sniff(path: Path) -> tuple[str | None, Path, Path]:
    """(kind or None, the checkpoint `path` belongs to, the container its key maps sit beside)."""
    try:
        info = detect(path, require_config=False)
    except (ValueError, OSError):  # CheckpointError included: not a model we can load
        try:  # a shard detect refused still belongs to its index (a key map may go there)
            container = open_checkpoint(path).path
        except (ValueError, OSError):
            container = path
        return None, path, container
    return info.plan.kind, info.checkpoint.path, info.checkpoint.path


def _keymap_stamp(path: Path, container: Path) -> tuple[str, int, int] | None:
    """(path, size, mtime) of the key map `detect` picks up for `path` in `container` (a few
    stats, no file read); None when there is none."""
    try:
        keymap = keymap_beside(path, container)
        stat = keymap.stat() if keymap is not None else None
    except OSError:  # removed between the two looks
        return None
    return None if stat is None else (str(keymap), stat.st_size, stat.st_mtime_ns)


def checkpoint_kind(path: str | Path) -> tuple[str | None, Path]:
    """("vera" | "wan" | None, the checkpoint the file belongs to) from headers alone: what file
    lists (the ComfyUI loader) show. Cached by the file's size and modification time; looked at
    again when the key map beside it (or beside its shard index) is added, edited or removed.
    A shard belongs to its index, so the shards of one model show once."""
    path = Path(path)
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    known = _SNIFFED.get(key)
    if known is None or _keymap_stamp(path, known[2]) != known[3]:
        if len(_SNIFFED) >= 1024:  # a bound, as the earlier lru_cache had
            _SNIFFED.clear()
        kind, owner, container = _sniff(path)
        known = _SNIFFED[key] = (kind, owner, container, _keymap_stamp(path, container))
    return known[0], known[1]


# -- loading ---------------------------------------------------------------------------------------
class _Reader:
    """Reads the file's tensors one at a time, converted for their place in the model.

    on_tensor(tensor, kind) is told of every tensor the loader creates ("temporary" while
    converting, "final" for what the model keeps), so a benchmark can count the peak."""

    def __init__(self, info: CheckpointInfo, device: torch.device, on_tensor: Callable | None):
        self.refs, self.scales = info.checkpoint.tensors, info.plan.scales
        self.device, self.on_tensor = device, on_tensor or (lambda tensor, kind: None)

    def raw(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A stored tensor and its fp8 scale (None unless the file has one)."""
        tensor = self.refs[name].read()
        self.on_tensor(tensor, "temporary")
        scale = self.refs[self.scales[name]].read().float() if name in self.scales else None
        return tensor, scale

    def converted(self, name: str, shape, dtype: torch.dtype) -> torch.Tensor:
        """The stored tensor in the model's shape and `dtype`, on the target device."""
        out = self.whole(name, shape, dtype).to(self.device)
        self.on_tensor(out, "final")
        return out

    def whole(self, name: str, shape, dtype: torch.dtype) -> torch.Tensor:
        """The stored tensor in the model's shape and `dtype`, where it was read (the CPU)."""
        tensor, scale = self.raw(name)
        if tensor.dtype in FP8_DTYPES:
            tensor = dequantize(tensor, scale, dtype)
        return tensor.to(dtype).reshape(shape)

    def quantized(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A block Linear weight as (float8 weight, scale): kept as stored when it is fp8 already,
        quantised from this one tensor otherwise."""
        tensor, scale = self.raw(name)
        if tensor.dtype == FP8:
            weight, scale = tensor, scale if scale is not None else torch.ones(())
        elif tensor.dtype in FP8_DTYPES:
            weight, scale = quantize(dequantize(tensor, scale, torch.float32))
        else:
            weight, scale = quantize(tensor)
        weight, scale = weight.to(self.device), scale.reshape(()).to(self.device)
        self.on_tensor(weight, "final")
        return weight, scale


def _empty_model(config: VeraConfig, fp8: bool, dtype: torch.dtype, operations=None) -> VeraModel:
    """The model on the meta device, built from `operations` (see `vera.model.mot.TorchOps`)."""
    operations = operations or TorchOps
    with torch.device("meta"):
        model = VeraModel(config, operations).to(dtype)
        if fp8:
            fp8_shells(model, operations.FP8Linear)
    return model


CONDITIONING = ("source_embedding.", "mask_embedding.", "layer_embedding_")


def _keep_branches(model: VeraModel, branches: tuple[str, ...] | None) -> VeraModel:
    """The (meta) model with only `branches` (None: all)."""
    if branches is not None:
        unknown = [b for b in branches if b not in model.branches]
        if unknown:
            raise ValueError(f"branches {unknown}: not among {list(model.branches)}")
        model.branches = torch.nn.ModuleDict({b: model.branches[b] for b in branches})
    return model


def _fill(model: VeraModel, targets: dict[str, list[str]], reader: _Reader, path: Path,
          dtype: torch.dtype) -> None:
    """targets: file tensor name -> the model keys it fills. Each is read once and converted once:
    fp8 block weights to fp8 (with their scale), all else to `dtype`; conditioning the file does
    not have starts at zero (the paper's initialisation). Keys the model does not have (branches
    left out, see `load_model`) are not read."""
    want = model.state_dict()
    state = {}
    targets = {name: [k for k in keys if k in want] for name, keys in targets.items()}
    for name, keys in ((n, k) for n, k in targets.items() if k):
        like = want[keys[0]]
        if like.dtype == FP8 and keys[0].endswith(".weight"):
            weight, scale = reader.quantized(name)
            for i, key in enumerate(keys):
                state[key] = weight if i == 0 else weight.clone()
                state[key[: -len("weight")] + "scale_weight"] = scale.clone()
        else:
            tensor = reader.converted(name, like.shape, dtype)
            for i, key in enumerate(keys):
                state[key] = tensor if i == 0 else tensor.clone()
    for key in _unfilled_conditioning(want, state, path):
        state[key] = torch.zeros(want[key].shape, dtype=dtype, device=reader.device)
    model.load_state_dict(state, strict=True, assign=True)


def _unfilled_conditioning(want: dict, filled, path: Path) -> list[str]:
    """The model keys the file did not fill: an error unless they are all conditioning (which
    starts at zero, the paper's initialisation)."""
    missing = [k for k in want if k not in filled]
    if any(not k.startswith(CONDITIONING) for k in missing):
        shown = ", ".join(k for k in missing if not k.startswith(CONDITIONING))
        raise CheckpointError(f"{path}: no tensor for {shown[:300]}")
    return missing


def _load(model: VeraModel, targets: dict, reader: _Reader, path: Path, dtype: torch.dtype,
          shard_mesh, policy: str) -> None:
    if shard_mesh is None:
        _fill(model, targets, reader, path, dtype)
        return
    if policy == "fp8":
        raise CheckpointError("--shard-weights with fp8 weights is not supported: shard bf16 "
                              "weights (or use fp8 without sharding)")
    from ..model.parallel import shard_blocks

    shard_blocks(model, shard_mesh)
    _fill_sharded(model, targets, reader, path, dtype)


def _fill_sharded(model: VeraModel, targets: dict[str, list[str]], reader: _Reader, path: Path,
                  dtype: torch.dtype) -> None:
    """`_fill` for a model whose blocks FSDP2 sharded on the meta device: storage for this
    process's shards and the unsharded rest is allocated on the reader's device, and each file
    tensor is read once (on the CPU), this process's rows copied in."""
    from torch.distributed.tensor import DTensor

    model.to_empty(device=reader.device)
    want = model.state_dict()
    filled = set()
    with torch.no_grad():
        for name, keys in targets.items():
            keys = [k for k in keys if k in want]
            if not keys:
                continue
            full = reader.whole(name, want[keys[0]].shape, dtype)  # once for all its keys
            for key in keys:
                target = want[key]
                if isinstance(target, DTensor):
                    local = target.to_local()
                    local.copy_(full[_local_rows(target)])
                else:
                    target.copy_(full)
                filled.add(key)
        for key in _unfilled_conditioning(want, filled, path):
            target = want[key]
            (target.to_local() if isinstance(target, DTensor) else target).zero_()


def _local_rows(tensor) -> slice:
    """The rows of a dim-0-sharded DTensor this process holds (FSDP2 splits as torch.chunk)."""
    mesh = tensor.device_mesh
    chunks = torch.arange(tensor.shape[0]).chunk(mesh.size())
    rank = mesh.get_local_rank()
    if rank >= len(chunks):
        return slice(0, 0)
    return slice(int(chunks[rank][0]), int(chunks[rank][-1]) + 1)


def _wan_targets(sources: dict[str, str], conditioning: str) -> dict[str, list[str]]:
    """A Wan file's tensors into all three branches; in sequence conditioning the source and mask
    patch embeddings also start from the pretrained one."""
    targets = {name: [f"branches.{b}.{key}" for b in BRANCHES] for key, name in sources.items()}
    if conditioning == "sequence":
        for part in ("weight", "bias"):
            targets[sources[f"patch_embedding.{part}"]] += [
                f"source_embedding.{part}",
                f"mask_embedding.{part}",
            ]
    return targets


def load_model(
    path_or_name: str | Path,
    weight_dtype: str | torch.dtype = "auto",
    device="cpu",
    num_heads: int | None = None,
    conditioning: str = "add",
    attention_backend: str = "auto",
    from_wan: bool = False,
    keymap: str | Path | None = None,
    on_tensor: Callable | None = None,
    operations=None,
    compute_device=None,
    branches: tuple[str, ...] | None = None,
    shard_mesh=None,
) -> VeraModel:
    """Load a Vera checkpoint (or `vera-tiny`), or, with `from_wan`, start an untrained Vera model
    from a Wan2.1 T2V file (all three branches from its weights, conditioning zeroed: the paper's
    starting point for training, which edits nothing useful before it).

    weight_dtype: a policy of `vera.model.precision` (auto / bf16 / fp16 / fp8 / fp32) or a torch
    dtype.
    keymap: see `detect`. `conditioning` applies only with `from_wan` (a Vera file has its own).
    on_tensor: see `_Reader` (benchmarks). operations: the layer classes (`vera.model.mot.TorchOps`,
    or ComfyUI's `comfy.ops`). compute_device: the device the model will run on, when the
    weights are placed elsewhere (`device`, e.g. ComfyUI's offload device): it picks the dtype.
    branches: load only these branches (a branch-parallel process; `vera.model.parallel`): the
    others are never read, and the model holds just these and the conditioning embeddings.
    shard_mesh: a DeviceMesh to shard every block over with FSDP2 (`--shard-weights`): the model
    is sharded before any weight exists, and this process allocates and keeps only its rows of
    each block tensor (each file tensor is read once, whole, then cut).
    """
    from ..model.attention import resolve_backend
    from ..model.precision import compute_dtype, resolve_device, weight_dtype_name

    device = resolve_device(device)
    compute_device = device if compute_device is None else torch.device(compute_device)
    resolve_backend(attention_backend, compute_device)  # a clear error now, not at the first step
    policy = weight_dtype_name(weight_dtype)
    dtype = compute_dtype(policy, compute_device)
    info = detect(resolve_model_path(path_or_name), num_heads, keymap=keymap)
    reader = _Reader(info, device, on_tensor)
    if info.plan.kind == "wan":
        if not from_wan:
            raise CheckpointError(
                f"{info.path}: a plain Wan2.1 T2V file, not Vera weights. Three branches started "
                "from it are an untrained Vera that edits nothing useful; load Vera weights, or "
                "start one for training on purpose (python -m vera train --init FILE, "
                "--untrained-from-wan, or the node 'Untrained Vera from Wan2.1')"
            )
        config = info.config.replace(conditioning=conditioning)
        model = _keep_branches(_empty_model(config, policy == "fp8", dtype, operations), branches)
        _load(model, _wan_targets(info.plan.sources, conditioning), reader, info.path, dtype,
              shard_mesh, policy)
    else:
        if from_wan:
            raise CheckpointError(
                f"{info.path}: Vera weights, not a plain Wan2.1 T2V file; load it "
                "without --untrained-from-wan"
            )
        model = _keep_branches(_empty_model(info.config, policy == "fp8", dtype, operations),
                               branches)
        targets = {name: [key] for key, name in info.plan.sources.items()}
        _load(model, targets, reader, info.path, dtype, shard_mesh, policy)
    model.attention_backend = attention_backend
    return model


def resolve_model_path(path_or_name: str | Path) -> Path:
    """`vera-tiny` -> the embedded model's file; any other value is a path."""
    if str(path_or_name) == TINY_NAME:
        return TINY_DIR / "vera.safetensors"
    return Path(path_or_name)


def read_wan_branch(
    path: str | Path, dtype: torch.dtype = torch.float32, num_heads: int | None = None
) -> tuple[VeraConfig, dict[str, torch.Tensor]]:
    """A Wan2.1 T2V file as (config, one DiT's state dict in Wan original names, `dtype`): what the
    single-branch models (T2V stand-in, baseline) start from."""
    info = detect(path, num_heads)
    if info.plan.kind != "wan":
        raise CheckpointError(
            f"{path}: a {info.format} file cannot start a single-branch model; "
            "give a Wan2.1 T2V file"
        )
    reader = _Reader(info, torch.device("cpu"), None)
    state = {}
    for key, name in info.plan.sources.items():
        tensor, scale = reader.raw(name)
        state[key] = (
            dequantize(tensor, scale, dtype) if tensor.dtype in FP8_DTYPES else tensor.to(dtype)
        )
    return info.config, state


# -- writing ---------------------------------------------------------------------------------------
def save_vera(
    model: VeraModel, path: str | Path, extra_metadata: dict[str, str] | None = None
) -> Path:
    """Write `model` as one Vera safetensors file, tensor by tensor and atomically. An fp8 model is
    written in ComfyUI's scaled-fp8 convention (see `vera.model.fp8`)."""
    metadata = {
        "format": "vera",
        "format_version": VERA_FORMAT_VERSION,
        "config": model.config.to_json(),
    }
    metadata.update(extra_metadata or {})
    state = model.state_dict()
    if any(t.dtype == FP8 for t in state.values()):
        state[FP8_MARKER] = torch.zeros(0, dtype=FP8)
    return atomic_save(state, Path(path), metadata)


def convert(
    source: str | Path,
    target: str | Path,
    weight_dtype: str = "bf16",
    num_heads: int | None = None,
    keymap: str | Path | None = None,
    from_wan: bool = False,
) -> Path:
    """Any loadable checkpoint -> our single-file format in `weight_dtype` (bf16, fp16, fp32 or
    fp8), so later loads are fast and need no key map. Never writes over `source`."""
    source, target = Path(source), Path(target)
    if target.exists() and target.resolve() == source.resolve():
        raise ValueError(f"convert: the output {target} is the input; choose another name")
    if weight_dtype == "auto":
        raise ValueError("convert: name the dtype to store (bf16, fp16, fp32 or fp8)")
    model = load_model(
        source, weight_dtype, "cpu", num_heads=num_heads, keymap=keymap, from_wan=from_wan
    )
    return save_vera(model, target, {"converted_from": source.name})
