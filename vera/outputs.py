"""Write an edit's deliverables: RGBA edit layer, alpha matte, final composite, previews, report."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from . import layers, metrics, video
from .files import save_json
from .pipeline import EditResult

RGBA_FORMATS = ("mov", "webm", "both")


def side_by_side(result: EditResult) -> torch.Tensor:
    """uint8 `[T, H, 5W, 3]`: source | edit layer over a checkerboard | alpha | composite | difference heatmap."""
    source = result.source.float() / 255
    final = result.final.float() / 255
    panels = [source, layers.over_checkerboard(result.edit_layer, result.alpha), result.alpha.expand(-1, -1, -1, 3),
              final, layers.difference_heatmap(source, final)]
    return layers.to_uint8(torch.cat(panels, dim=2))


def write_layer_files(edit_layer: torch.Tensor, alpha: torch.Tensor, final: torch.Tensor, out: str | Path,
                      fps: float, rgba_format: str = "mov", name: str = "") -> dict[str, str]:
    """Write the layers an artist composites with into `out` (each file atomically).

    edit_layer `[T, H, W, 3]` and alpha `[T, H, W, 1]` float in [0, 1]; final uint8 `[T, H, W, 3]`.
    Files: {name}edit_layer_rgba/ (PNG, straight alpha) and {name}edit_layer_rgba.mov (ProRes 4444)
    and/or .webm (VP9), {name}alpha/ (8-bit grey PNG) and .mp4, {name}final_composite/ (PNG, lossless)
    and .mp4 (H.264, for viewing). Returns {kind: relative path}.
    """
    if rgba_format not in RGBA_FORMATS:
        raise ValueError(f"rgba_format {rgba_format!r} is not one of {RGBA_FORMATS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    alpha_u8 = layers.to_uint8(alpha)
    rgba = torch.cat([layers.to_uint8(edit_layer), alpha_u8], dim=-1)
    files = {}
    video.write_png_sequence(rgba, out / f"{name}edit_layer_rgba", "edit")
    files["edit_layer_png"] = f"{name}edit_layer_rgba/"
    for suffix in (("mov", "webm") if rgba_format == "both" else (rgba_format,)):
        video.write_rgba_video(rgba, out / f"{name}edit_layer_rgba.{suffix}", fps)
        files[f"edit_layer_{suffix}"] = f"{name}edit_layer_rgba.{suffix}"
    video.write_png_sequence(alpha_u8, out / f"{name}alpha", "alpha")
    video.write_mp4(alpha_u8.expand(-1, -1, -1, 3), out / f"{name}alpha.mp4", fps)
    video.write_png_sequence(final, out / f"{name}final_composite", "final")
    video.write_mp4(final, out / f"{name}final_composite.mp4", fps)
    files.update(alpha_png=f"{name}alpha/", alpha_mp4=f"{name}alpha.mp4", final_png=f"{name}final_composite/",
                 final_mp4=f"{name}final_composite.mp4")
    return files


def write_outputs(result: EditResult, out: str | Path, fps: float, rgba_format: str = "mov",
                  report_extra: dict | None = None) -> tuple[dict[str, str], dict]:
    """Write every file of an edit into `out` (each atomically; existing inputs are never touched):
    the layer files (see `write_layer_files`), side_by_side.png/.mp4 and report.json.
    Returns (files written, the report).
    """
    out = Path(out)
    files = write_layer_files(result.edit_layer, result.alpha, result.final, out, fps, rgba_format)
    panel = side_by_side(result)
    video.write_png(panel[panel.shape[0] // 2], out / "side_by_side.png")
    video.write_mp4(panel, out / "side_by_side.mp4", fps)
    files.update(side_by_side_png="side_by_side.png", side_by_side_mp4="side_by_side.mp4")
    preservation = metrics.edit_metrics(result.final, result.source, result.alpha,
                                        model_composite=result.model_composite)
    report = dict(
        date=time.strftime("%Y-%m-%d %H:%M:%S"), frames=int(result.final.shape[0]),
        size=[int(result.final.shape[2]), int(result.final.shape[1])], fps=fps,
        settings={**result.settings.to_dict(), **result.details}, timings=result.timings,
        preservation=preservation, edited_fraction=float((result.alpha > 0).float().mean()),
        files=files, **(report_extra or {}),
    )
    save_json(out / "report.json", report)
    files["report"] = "report.json"
    return files, report
