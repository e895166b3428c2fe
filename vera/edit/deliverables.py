"""Write an edit's deliverables: RGBA edit layer, alpha matte, final composite, previews, report."""
from __future__ import annotations

import importlib.metadata
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..frames import layers, metrics
from ..media import exr, video
from ..media.clip import SourceClip
from ..media.files import save_json
from ..sampling.settings import SamplingSettings
from .pipeline import EditResult

RGBA_FORMATS = ("mov", "webm", "both")


def side_by_side(result: EditResult) -> torch.Tensor:
    """uint8 `[T, H, 5W, 3]`: source | edit layer over a checkerboard | alpha | composite | difference heatmap."""
    source = result.source.float() / 255
    final = result.final.float() / 255
    panels = [source, layers.over_checkerboard(result.edit_layer, result.alpha), result.alpha.expand(-1, -1, -1, 3),
              final, layers.difference_heatmap(source, final)]
    return layers.to_uint8(torch.cat(panels, dim=2))


@dataclass(frozen=True)
class ExrOptions:
    """Half-float OpenEXR sequences beside the PNGs: transfer "linear" (sRGB decoded to linear
    light, what Nuke expects of EXR) or "srgb" (the PNG values as they are); the edit layer's
    alpha "premultiplied" or "straight"."""

    transfer: str = "linear"
    alpha: str = "premultiplied"

    def __post_init__(self):
        exr.check_choice("exr_transfer", self.transfer, exr.TRANSFERS)
        exr.check_choice("exr_alpha", self.alpha, exr.ALPHA_MODES)


def versions() -> dict[str, str]:
    """The software that made a run (for settings.json); ComfyUI's when it is the host."""
    import platform

    from .. import __version__

    found = {"vera": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for package in ("diffusers", "av"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    host = sys.modules.get("comfyui_version")  # ComfyUI's own version module, when it runs us
    if host is not None:
        found["comfyui"] = str(getattr(host, "__version__", "unknown"))
    return found


def run_settings(settings: SamplingSettings | None, *, model: str | None, prompt: str | None,
                 frames: int, size: tuple[int, int], clip: SourceClip | None = None,
                 extra: dict | None = None) -> dict:
    """What settings.json records: model, seed, prompt, steps, cfg, shift, sampler, size
    [width, height], frames, the source clip (rate, start, stride) and software versions.
    settings None: the sampling was not recorded (layers that did not come from a Vera Sampler)."""
    sampling = settings.to_dict() if settings is not None else {}
    return dict(model=model, prompt=prompt, **sampling, frames=int(frames),
                size=[int(size[1]), int(size[0])], clip=(clip or SourceClip()).to_dict(),
                **(extra or {}), versions=versions(),
                date=time.strftime("%Y-%m-%d %H:%M:%S"))


def write_layer_files(edit_layer: torch.Tensor, alpha: torch.Tensor, final: torch.Tensor,
                      out: str | Path, fps, rgba_format: str = "mov", name: str = "", *,
                      audio: dict | None = None, metadata: dict | None = None,
                      exr_options: ExrOptions | None = None,
                      settings: dict | None = None) -> dict[str, str]:
    """Write the layers an artist composites with into `out` (each file atomically).

    edit_layer `[T, H, W, 3]` and alpha `[T, H, W, 1]` float in [0, 1]; final uint8 `[T, H, W, 3]`.
    fps: exact rate (a Fraction such as 24000/1001, or a number). audio: ComfyUI AUDIO for the
    final composite's mp4. metadata: text (prompt, workflow) embedded in every PNG and the .mov.
    Files: {name}edit_layer_rgba/ (PNG, straight alpha) and {name}edit_layer_rgba.mov (ProRes 4444)
    and/or .webm (VP9), {name}alpha/ (8-bit grey PNG) and .mp4, {name}final_composite/ (PNG, lossless)
    and .mp4 (H.264, for viewing), with `exr_options` the EXR sequences (see
    `exr.write_layer_exrs`), with `settings` settings.json. Returns {kind: relative path}.
    """
    if rgba_format not in RGBA_FORMATS:
        raise ValueError(f"rgba_format {rgba_format!r} is not one of {RGBA_FORMATS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    alpha_u8 = layers.to_uint8(alpha)
    rgba = torch.cat([layers.to_uint8(edit_layer), alpha_u8], dim=-1)
    files = {}
    video.write_png_sequence(rgba, out / f"{name}edit_layer_rgba", "edit", metadata)
    files["edit_layer_png"] = f"{name}edit_layer_rgba/"
    for suffix in (("mov", "webm") if rgba_format == "both" else (rgba_format,)):
        video.write_rgba_video(rgba, out / f"{name}edit_layer_rgba.{suffix}", fps, metadata)
        files[f"edit_layer_{suffix}"] = f"{name}edit_layer_rgba.{suffix}"
    video.write_png_sequence(alpha_u8, out / f"{name}alpha", "alpha", metadata)
    video.write_mp4(alpha_u8.expand(-1, -1, -1, 3), out / f"{name}alpha.mp4", fps)
    video.write_png_sequence(final, out / f"{name}final_composite", "final", metadata)
    video.write_mp4(final, out / f"{name}final_composite.mp4", fps, audio)
    files.update(alpha_png=f"{name}alpha/", alpha_mp4=f"{name}alpha.mp4", final_png=f"{name}final_composite/",
                 final_mp4=f"{name}final_composite.mp4")
    if exr_options is not None:
        files.update(exr.write_layer_exrs(layers.to_uint8(edit_layer).float() / 255,
                                          alpha_u8.float() / 255, final, out, name,
                                          exr_options.transfer, exr_options.alpha))
    if settings is not None:
        save_json(out / f"{name}settings.json", settings)
        files["settings"] = f"{name}settings.json"
    return files


def write_outputs(result: EditResult, out: str | Path, clip: SourceClip,
                  rgba_format: str = "mov", report_extra: dict | None = None, *,
                  model: str = "", exr_options: ExrOptions | None = None,
                  loras: list[str] | None = None) -> tuple[dict[str, str], dict]:
    """Write every file of an edit into `out` (each atomically; existing inputs are never touched):
    the layer files (see `write_layer_files`, with settings.json), side_by_side.png/.mp4 and
    report.json. clip: the source's name, the frames used (start, stride), their exact rate and
    the sound under them (for the final composite). loras: what each LoRA load applied, recorded in
    settings.json and report.json. Returns (files written, the report).
    """
    out = Path(out)
    rate, audio = clip.rate, clip.audio
    settings = run_settings(result.settings, model=model, prompt=result.details.get("prompt"),
                            frames=result.final.shape[0], size=tuple(result.final.shape[1:3]),
                            clip=clip, extra=dict(work_size=result.details.get("work_size"),
                                                  loras=loras or []))
    metadata = {"prompt": result.details.get("prompt") or "", "vera:settings": settings}
    files = write_layer_files(result.edit_layer, result.alpha, result.final, out, rate, rgba_format,
                              audio=audio, metadata=metadata, exr_options=exr_options,
                              settings=settings)
    panel = side_by_side(result)
    video.write_png(panel[panel.shape[0] // 2], out / "side_by_side.png")
    video.write_mp4(panel, out / "side_by_side.mp4", rate, audio)
    files.update(side_by_side_png="side_by_side.png", side_by_side_mp4="side_by_side.mp4")
    preservation = metrics.edit_metrics(result.final, result.source, result.alpha,
                                        model_composite=result.model_composite)
    report = dict(
        date=time.strftime("%Y-%m-%d %H:%M:%S"), frames=int(result.final.shape[0]),
        size=[int(result.final.shape[2]), int(result.final.shape[1])], fps=float(rate),
        fps_exact=str(rate),
        settings={**result.settings.to_dict(),
                  **{k: v for k, v in result.details.items() if k != "model_evaluations"}},
        timings=result.timings, preservation=preservation,
        model_evaluations=result.details.get("model_evaluations"), loras=loras or [],
        edited_fraction=float((result.alpha > 0).float().mean()), files=files,
        **(report_extra or {}),
    )
    save_json(out / "report.json", report)
    files["report"] = "report.json"
    return files, report
