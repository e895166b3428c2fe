"""OpenEXR sequences for compositors (Nuke, Resolve, After Effects): half float, one file per frame,
written with the `openexr` package.

transfer  "linear": the 8-bit sRGB values decoded to linear light (the sRGB curve, Rec.709/sRGB
          primaries), what a compositor expects an EXR to hold; "srgb": the sRGB-encoded values
          as they are (for pipelines that read EXRs as sRGB).
alpha     "premultiplied" (EXR's own convention and Nuke's default: colour already multiplied by
          alpha) or "straight" (colour as generated, alpha beside it).
Both choices, and the primaries, are written into each file's header (`vera:transfer`,
`vera:alpha`, `chromaticities`). Alpha is never transferred: it is coverage, linear by nature.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .files import atomic_path

TRANSFERS = ("linear", "srgb")
ALPHA_MODES = ("premultiplied", "straight")
# Rec.709 / sRGB primaries and D65 white: red xy, green xy, blue xy, white xy
REC709_CHROMATICITIES = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)


def _openexr():
    try:
        import OpenEXR
    except ImportError:
        raise RuntimeError("EXR output needs the openexr package: pip install openexr (it is in "
                           "requirements.txt)") from None
    return OpenEXR


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """The sRGB decoding curve (IEC 61966-2-1) on values in [0, 1]."""
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=0) ** (1 / 2.4) - 0.055)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} {value!r}: choose one of {', '.join(choices)}")
    return value


def write_exr(path: str | Path, channels: dict[str, np.ndarray], attributes: dict | None = None
              ) -> Path:
    """{channel name: float `[H, W]` or, for "RGB"/"RGBA", `[H, W, 3 or 4]`} -> a half-float,
    ZIP-compressed scanline EXR, written atomically."""
    exr = _openexr()
    header = {"compression": exr.ZIP_COMPRESSION, "type": exr.scanlineimage,
              **(attributes or {})}
    pixels = {name: np.ascontiguousarray(value, dtype=np.float16)
              for name, value in channels.items()}
    with atomic_path(Path(path)) as tmp:
        with exr.File(header, pixels) as file:
            file.write(str(tmp))
    return Path(path)


def read_exr(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """An EXR -> ({channel or channel group: array}, header)."""
    exr = _openexr()
    with exr.File(str(path)) as file:  # copies: closing the file clears what it handed out
        channels = {name: channel.pixels.copy() for name, channel in file.channels().items()}
        return channels, dict(file.header())


class LayerExrWriter:
    """Three EXR sequences in `out`, written chunk by chunk: {name}edit_layer_exr/edit_00000.exr
    (RGBA), {name}alpha_exr/ (the matte as one grey channel `Y`) and {name}final_composite_exr/
    (RGB). Each `write` continues the frame numbers (`count`: frames written so far). Every
    header also carries the text `attributes` given."""

    def __init__(self, out: str | Path, name: str = "", transfer: str = "linear",
                 alpha_mode: str = "premultiplied", attributes: dict[str, str] | None = None):
        self.transfer = check_choice("exr_transfer", transfer, TRANSFERS)
        self.alpha_mode = check_choice("exr_alpha", alpha_mode, ALPHA_MODES)
        _openexr()
        self.out, self.count, self.attributes = Path(out), 0, dict(attributes or {})
        self._folders = {"edit_layer_exr": f"{name}edit_layer_exr",
                         "alpha_exr": f"{name}alpha_exr",
                         "final_exr": f"{name}final_composite_exr"}

    def folders(self) -> dict[str, str]:
        """{kind: relative folder} of the three sequences."""
        return {kind: folder + "/" for kind, folder in self._folders.items()}

    def write(self, edit_layer: torch.Tensor, alpha: torch.Tensor, final: torch.Tensor) -> None:
        """edit_layer `[t, H, W, 3]` and alpha `[t, H, W, 1]` float in [0, 1] (the values the PNGs
        hold, straight alpha); final uint8 `[t, H, W, 3]`."""
        encode = srgb_to_linear if self.transfer == "linear" else (lambda x: x)
        attributes = {**self.attributes, "vera:transfer": self.transfer,
                      "chromaticities": REC709_CHROMATICITIES}
        edit = encode(edit_layer.float().clamp(0, 1))
        matte = alpha.float().clamp(0, 1)
        if self.alpha_mode == "premultiplied":
            edit = edit * matte
        rgba = torch.cat([edit, matte], dim=-1).numpy()
        final_values = encode(final.float() / 255).numpy()
        folder = {kind: self.out / path for kind, path in self._folders.items()}
        for t in range(rgba.shape[0]):
            number = f"{self.count:05d}"
            write_exr(folder["edit_layer_exr"] / f"edit_{number}.exr", {"RGBA": rgba[t]},
                      {**attributes, "vera:alpha": self.alpha_mode})
            write_exr(folder["alpha_exr"] / f"alpha_{number}.exr", {"Y": rgba[t, ..., 3]},
                      {**self.attributes, "vera:transfer": "linear (coverage)"})
            write_exr(folder["final_exr"] / f"final_{number}.exr", {"RGB": final_values[t]},
                      attributes)
            self.count += 1


def write_layer_exrs(edit_layer: torch.Tensor, alpha: torch.Tensor, final: torch.Tensor,
                     out: Path, name: str = "", transfer: str = "linear",
                     alpha_mode: str = "premultiplied") -> dict[str, str]:
    """Three EXR sequences in `out` (see `LayerExrWriter`) of edit_layer `[T, H, W, 3]` and alpha
    `[T, H, W, 1]` float in [0, 1] (the values the PNGs hold, straight alpha) and final uint8
    `[T, H, W, 3]`. Returns {kind: relative folder}."""
    writer = LayerExrWriter(out, name, transfer, alpha_mode)
    writer.write(edit_layer, alpha, final)
    return writer.folders()
