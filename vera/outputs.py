"""Write an edit's deliverables: RGBA edit layer, alpha matte, final composite, previews, report."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from . import layers, metrics, video
from .pipeline import EditResult

RGBA_FORMATS = ("mov", "webm", "both")


def side_by_side(result: EditResult) -> torch.Tensor:
    """uint8 `[T, H, 5W, 3]`: source | edit layer over a checkerboard | alpha | composite | difference heatmap."""
    source = result.source.float() / 255
    final = result.final.float() / 255
    panels = [source, layers.over_checkerboard(result.edit_layer, result.alpha), result.alpha.expand(-1, -1, -1, 3),
              final, layers.difference_heatmap(source, final)]
    return layers.to_uint8(torch.cat(panels, dim=2))


def write_outputs(result: EditResult, out: str | Path, fps: float, rgba_format: str = "mov",
                  report_extra: dict | None = None) -> tuple[dict[str, str], dict]:
    """Write every file of an edit into `out` (each atomically; existing inputs are never touched).

    edit_layer_rgba/ (PNG, straight alpha) and edit_layer_rgba.mov (ProRes 4444) and/or .webm (VP9),
    alpha/ (8-bit grey PNG) and alpha.mp4, final_composite/ (PNG, lossless: untouched pixels are the
    source's bytes) and final_composite.mp4 (H.264 for viewing), side_by_side.png/.mp4, report.json.
    Returns (files written, the report).
    """
    if rgba_format not in RGBA_FORMATS:
        raise ValueError(f"rgba_format {rgba_format!r} is not one of {RGBA_FORMATS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    alpha_u8 = layers.to_uint8(result.alpha)
    rgba = torch.cat([layers.to_uint8(result.edit_layer), alpha_u8], dim=-1)
    files = {}
    video.write_png_sequence(rgba, out / "edit_layer_rgba", "edit")
    files["edit_layer_png"] = "edit_layer_rgba/"
    for suffix in (("mov", "webm") if rgba_format == "both" else (rgba_format,)):
        video.write_rgba_video(rgba, out / f"edit_layer_rgba.{suffix}", fps)
        files[f"edit_layer_{suffix}"] = f"edit_layer_rgba.{suffix}"
    video.write_png_sequence(alpha_u8, out / "alpha", "alpha")
    video.write_mp4(alpha_u8.expand(-1, -1, -1, 3), out / "alpha.mp4", fps)
    video.write_png_sequence(result.final, out / "final_composite", "final")
    video.write_mp4(result.final, out / "final_composite.mp4", fps)
    files.update(alpha_png="alpha/", alpha_mp4="alpha.mp4", final_png="final_composite/", final_mp4="final_composite.mp4")
    panel = side_by_side(result)
    video.write_png(panel[panel.shape[0] // 2], out / "side_by_side.png")
    video.write_mp4(panel, out / "side_by_side.mp4", fps)
    files.update(side_by_side_png="side_by_side.png", side_by_side_mp4="side_by_side.mp4")
    report = dict(
        date=time.strftime("%Y-%m-%d %H:%M:%S"), frames=int(result.final.shape[0]),
        size=[int(result.final.shape[2]), int(result.final.shape[1])], fps=fps, settings=result.settings,
        timings=result.timings, preservation=metrics.edit_metrics(result.final, result.source, result.alpha,
                                                                  model_composite=result.model_composite),
        edited_fraction=float((result.alpha > 0).float().mean()), files=files, **(report_extra or {}),
    )
    with video.atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(metrics.json_safe(report), indent=2, default=str))
    files["report"] = "report.json"
    return files, report
