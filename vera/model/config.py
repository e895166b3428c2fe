"""One dataclass describes a Vera model; everything else reads its sizes from here.

A Vera model is three Wan2.1 T2V DiTs (edit, alpha, composite) of identical shape,
so the config is a Wan config plus the Vera-specific input-conditioning mode.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import VeraError

BRANCHES = ("edit", "alpha", "composite")
CONDITIONING_MODES = ("add", "sequence")


@dataclass(frozen=True)
class VeraConfig:
    dim: int = 1536
    num_heads: int = 12
    num_layers: int = 30
    ffn_dim: int = 8960
    text_dim: int = 4096
    freq_dim: int = 256
    in_channels: int = 16
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    cross_attn_norm: bool = True
    rope_theta: float = 10000.0
    rope_max_seq_len: int = 1024
    # "add": source tokens are added to composite tokens and mask tokens to alpha tokens
    # (zero-initialised patch embeddings, the paper's main design).
    # "sequence": source / mask tokens are appended to the composite / alpha token
    # sequences with the same RoPE positions and dropped at the output.
    conditioning: str = "add"
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.dim % self.num_heads:
            raise ValueError(f"VeraConfig: dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"VeraConfig: head_dim={self.head_dim} must be even for rotary embeddings")
        if self.conditioning not in CONDITIONING_MODES:
            raise ValueError(
                f"VeraConfig: conditioning={self.conditioning!r} is not one of {CONDITIONING_MODES}"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def replace(self, **changes) -> "VeraConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "VeraConfig") -> "VeraConfig":
        """From JSON text; errors name `source` (a file) and, for bad JSON, the line."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            where = f"line {error.lineno}, column {error.colno}"
            raise ValueError(f"{source}: not valid JSON ({where}: {error.msg})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a config is a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown config fields {unknown}; this needs a newer "
                             "ComfyUI-Vera")
        try:
            return cls(**data)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "VeraConfig":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 JSON text") from None
        return cls.from_json(text, str(path))


PRESETS: dict[str, VeraConfig] = {
    "wan2.1-1.3B": VeraConfig(name="wan2.1-1.3B"),
    "wan2.1-14B": VeraConfig(dim=5120, num_heads=40, num_layers=40, ffn_dim=13824, name="wan2.1-14B"),
}

WAN_HEAD_DIM = 128  # every released Wan2.1 model uses 128-dim heads


class HeadCountUnknown(VeraError, ValueError):
    """A checkpoint's shapes fix every size but its attention head count; `sizes` holds what they
    do fix (VeraConfig field -> value, num_heads absent)."""

    def __init__(self, message: str, sizes: dict | None = None):
        super().__init__(message)
        self.sizes = dict(sizes or {})


def config_from_shapes(shapes: dict[str, tuple[int, ...]], num_heads: int | None = None, **overrides) -> VeraConfig:
    """Infer a config from the tensor shapes of one Wan branch (original key names, no prefix).

    Shapes fix every size but the head count; that comes from `num_heads`, else from a preset
    with the same width, else from Wan's 128-dim heads.
    """
    try:
        dim, in_channels, *patch = shapes["patch_embedding.weight"]
        text_dim = shapes["text_embedding.0.weight"][1]
        freq_dim = shapes["time_embedding.0.weight"][1]
        ffn_dim = shapes["blocks.0.ffn.0.weight"][0]
        head_out = shapes["head.head.weight"][0]
    except KeyError as missing:
        raise ValueError(f"cannot infer a Wan config: tensor {missing} is missing") from None
    num_layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
    patch_volume = patch[0] * patch[1] * patch[2]
    sizes = dict(
        dim=dim, num_layers=num_layers, ffn_dim=ffn_dim, text_dim=text_dim,
        freq_dim=freq_dim, in_channels=in_channels, out_channels=head_out // patch_volume,
        patch_size=tuple(patch), cross_attn_norm="blocks.0.norm3.weight" in shapes,
    )
    sizes.update(overrides)
    if num_heads is None:
        preset = next((p for p in PRESETS.values() if p.dim == dim), None)
        if preset is not None:
            num_heads = preset.num_heads
        elif dim % WAN_HEAD_DIM == 0:
            num_heads = dim // WAN_HEAD_DIM
        else:
            raise HeadCountUnknown(
                f"the head count of a width-{dim} model cannot be read from its shapes (not a "
                f"Wan2.1 size, and {dim} is not a multiple of {WAN_HEAD_DIM}); pass it "
                "(--num-heads N)",
                sizes,
            )
    values = dict(num_heads=num_heads, **sizes)
    match = next((n for n, p in PRESETS.items() if p == VeraConfig(**values)), "custom")
    return VeraConfig(name=match, **values)
