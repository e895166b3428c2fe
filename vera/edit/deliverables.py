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
from ..media.files import ClosedOnExit, save_json
from ..sampling.settings import SamplingSettings
from .pipeline import EditResult

RGBA_FORMATS = ("mov", "webm", "both")


def side_by_side(result: EditResult) -> torch.Tensor:
    """uint8 `[T, H, 5W, 3]`: source | edit layer over a checkerboard | alpha | composite | difference heatmap."""
    return side_by_side_panel(result.source, result.edit_layer, result.alpha, result.final)


def side_by_side_panel(source: torch.Tensor, edit_layer: torch.Tensor, alpha: torch.Tensor,
                       final: torch.Tensor) -> torch.Tensor:
    """The `side_by_side` panel of any frames (each on its own): source and final uint8
    `[t, H, W, 3]`, edit_layer float `[t, H, W, 3]`, alpha float `[t, H, W, 1]` ->
    uint8 `[t, H, 5W, 3]`."""
    source, final = source.float() / 255, final.float() / 255
    panels = [source, layers.over_checkerboard(edit_layer, alpha), alpha.expand(-1, -1, -1, 3),
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


class LayerFileWriter(ClosedOnExit):
    """Write the layers an artist composites with into `out`, chunk by chunk, so a long shot is
    never held whole: `add` each chunk of frames in order, then `close` (or use it as a context
    manager: an exception inside the block aborts).

    fps: exact rate (a Fraction such as 24000/1001, or a number). audio: ComfyUI AUDIO for the
    final composite's (and the side by side's) mp4. metadata: text (prompt, workflow) embedded in
    every file, with `vera:compositing` (how the final is made, `layers.COMPOSITING`). Files:
    {name}edit_layer_rgba/ (PNG, straight alpha) and
    {name}edit_layer_rgba.mov (ProRes 4444) and/or .webm (VP9), {name}alpha/ (8-bit grey PNG)
    and .mp4, {name}final_composite/ (PNG, lossless) and .mp4 (H.264, for viewing), with
    `exr_options` the EXR sequences (see `exr.LayerExrWriter`), with `side_by_side`
    side_by_side.mp4 and side_by_side.png (the panel of frame `middle_frame`, default 0), with
    `source_copy` {name}source/ (the source frames the layers line up with, lossless PNG). When
    chunks come with their source, `tally` gathers the preservation metrics.

    Every file is written atomically: PNGs and EXRs as each frame comes, videos renamed into
    place at `close`. `abort` drops the videos; frames already saved as PNG/EXR stay.
    """

    def __init__(self, out: str | Path, fps, rgba_format: str = "mov", name: str = "", *,
                 audio: dict | None = None, metadata: dict | None = None,
                 exr_options: ExrOptions | None = None, side_by_side: bool = False,
                 middle_frame: int | None = None, source_copy: bool = False):
        if rgba_format not in RGBA_FORMATS:
            raise ValueError(f"rgba_format {rgba_format!r} is not one of {RGBA_FORMATS}")
        self.out, self.name, self.side_by_side = Path(out), name, side_by_side
        metadata = {"vera:compositing": layers.COMPOSITING, **(metadata or {})}
        self.middle_frame = middle_frame or 0
        self.out.mkdir(parents=True, exist_ok=True)
        self.frames_written, self.size = 0, None  # size: (H, W) of the first chunk
        self.tally: metrics.PreservationTally | None = None
        self._files: dict[str, str] | None = None
        self._closed = False
        suffixes = ("mov", "webm") if rgba_format == "both" else (rgba_format,)
        self._pngs = {prefix: video.PngSequenceWriter(self.out / f"{name}{folder}", prefix,
                                                      metadata)
                      for prefix, folder in (("edit", "edit_layer_rgba"), ("alpha", "alpha"),
                                             ("final", "final_composite"))}
        if source_copy:
            self._pngs["source"] = video.PngSequenceWriter(self.out / f"{name}source", "source",
                                                           metadata)
        self._rgba = {suffix: video.VideoWriter(self.out / f"{name}edit_layer_rgba.{suffix}",
                                                fps, alpha=True, metadata=metadata)
                      for suffix in suffixes}
        self._alpha_mp4 = video.VideoWriter(self.out / f"{name}alpha.mp4", fps,
                                            metadata=metadata)
        self._final_mp4 = video.VideoWriter(self.out / f"{name}final_composite.mp4", fps,
                                            audio=audio, metadata=metadata)
        self._panel_mp4 = (video.VideoWriter(self.out / "side_by_side.mp4", fps, audio=audio,
                                             metadata=metadata) if side_by_side else None)
        self._exr = None if exr_options is None else exr.LayerExrWriter(
            self.out, name, exr_options.transfer, exr_options.alpha,
            {"vera:compositing": layers.COMPOSITING})

    def _videos(self) -> list[video.VideoWriter]:
        found = [*self._rgba.values(), self._alpha_mp4, self._final_mp4, self._panel_mp4]
        return [v for v in found if v is not None]

    def add(self, edit_layer: torch.Tensor, alpha: torch.Tensor, final: torch.Tensor,
            source: torch.Tensor | None = None, model_composite: torch.Tensor | None = None
            ) -> None:
        """The next t frames: edit_layer float `[t, H, W, 3]` in [0, 1], alpha float
        `[t, H, W, 1]` (on the 8-bit grid), final uint8 `[t, H, W, 3]`; source uint8
        `[t, H, W, 3]` (needed for the side by side; with it `tally` is fed) and the model's own
        composite float `[t, H, W, 3]` (for the tally)."""
        if self._closed:
            raise ValueError(f"{self.out}: the layer files are already closed")
        if source is None and (self.side_by_side or self.tally is not None
                               or "source" in self._pngs):
            raise ValueError("the side by side, the source copy and the preservation tally need "
                             "every chunk's source frames")
        if source is not None and self.tally is None:
            if self.frames_written:
                raise ValueError("source frames must come with every chunk or with none")
            self.tally = metrics.PreservationTally()
        alpha_u8 = layers.to_uint8(alpha)
        edit_u8 = layers.to_uint8(edit_layer)
        rgba = torch.cat([edit_u8, alpha_u8], dim=-1)
        self._pngs["edit"].write(rgba)
        for writer in self._rgba.values():
            writer.write(rgba)
        self._pngs["alpha"].write(alpha_u8)
        self._alpha_mp4.write(alpha_u8.expand(-1, -1, -1, 3))
        self._pngs["final"].write(final)
        self._final_mp4.write(final)
        if "source" in self._pngs:
            self._pngs["source"].write(source)
        if self._exr is not None:
            self._exr.write(edit_u8.float() / 255, alpha_u8.float() / 255, final)
        if self.side_by_side:
            self._add_panel(side_by_side_panel(source, edit_layer, alpha, final))
        if self.tally is not None:
            self.tally.add(final, source, alpha, model_composite)
        self.frames_written += final.shape[0]
        self.size = self.size or tuple(final.shape[1:3])

    def _add_panel(self, panel: torch.Tensor) -> None:
        """side_by_side.mp4 gets every panel, side_by_side.png the one of `middle_frame`."""
        self._panel_mp4.write(panel)
        index = self.middle_frame - self.frames_written
        if 0 <= index < panel.shape[0]:
            video.write_png(panel[index], self.out / "side_by_side.png")

    def close(self, settings: dict | None = None) -> dict[str, str]:
        """Finish every video (renamed into place), write {name}settings.json when `settings` is
        given, and return {kind: path relative to `out`} (the same on later calls)."""
        if self._files is not None:
            return self._files
        if self._closed:
            raise ValueError(f"{self.out}: the layer files were aborted")
        if self.side_by_side and not 0 <= self.middle_frame < self.frames_written:
            self.abort()
            raise ValueError(f"middle_frame {self.middle_frame} is not one of the "
                             f"{self.frames_written} frames written")
        self._closed = True
        try:
            for writer in self._videos():
                writer.close()
        except BaseException:
            self.abort()
            raise
        name, files = self.name, {"edit_layer_png": f"{self.name}edit_layer_rgba/"}
        files.update({f"edit_layer_{suffix}": f"{name}edit_layer_rgba.{suffix}"
                      for suffix in self._rgba})
        files.update(alpha_png=f"{name}alpha/", alpha_mp4=f"{name}alpha.mp4",
                     final_png=f"{name}final_composite/", final_mp4=f"{name}final_composite.mp4")
        if self._exr is not None:
            files.update(self._exr.folders())
        if "source" in self._pngs:
            files["source_png"] = f"{name}source/"
        if settings is not None:
            save_json(self.out / f"{name}settings.json", settings)
            files["settings"] = f"{name}settings.json"
        if self.side_by_side:
            files.update(side_by_side_png="side_by_side.png", side_by_side_mp4="side_by_side.mp4")
        self._files = files
        return files

    def abort(self) -> None:
        """Stop without publishing the videos (their temporary files are removed)."""
        self._closed = True
        for writer in self._videos():
            writer.abort()


def write_layer_files(edit_layer: torch.Tensor, alpha: torch.Tensor, final: torch.Tensor,
                      out: str | Path, fps, rgba_format: str = "mov", name: str = "", *,
                      audio: dict | None = None, metadata: dict | None = None,
                      exr_options: ExrOptions | None = None,
                      settings: dict | None = None) -> dict[str, str]:
    """Write the layers an artist composites with into `out` (each file atomically; see
    `LayerFileWriter`, which writes them chunk by chunk).

    edit_layer `[T, H, W, 3]` and alpha `[T, H, W, 1]` float in [0, 1]; final uint8 `[T, H, W, 3]`.
    fps: exact rate (a Fraction such as 24000/1001, or a number). audio: ComfyUI AUDIO for the
    final composite's mp4. metadata: text (prompt, workflow) embedded in every PNG and the .mov.
    With `settings` also settings.json. Returns {kind: relative path}.
    """
    with LayerFileWriter(out, fps, rgba_format, name, audio=audio, metadata=metadata,
                         exr_options=exr_options) as writer:
        writer.add(edit_layer, alpha, final)
        return writer.close(settings)


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
    with LayerFileWriter(out, rate, rgba_format, audio=audio, metadata=metadata,
                         exr_options=exr_options, side_by_side=True,
                         middle_frame=result.final.shape[0] // 2) as writer:
        writer.add(result.edit_layer, result.alpha, result.final, result.source,
                   result.model_composite)
        files = writer.close(settings)
    details = {k: v for k, v in result.details.items() if k != "model_evaluations"}
    report = shot_report(writer, files, result.settings, details, result.timings,
                         result.details.get("model_evaluations"), clip, loras, report_extra)
    return files, report


def shot_report(writer: LayerFileWriter, files: dict[str, str], settings: SamplingSettings,
                details: dict, timings: dict, model_evaluations, clip: SourceClip,
                loras: list[str] | None = None, extra: dict | None = None) -> dict:
    """Write report.json beside a closed writer's files (`files`: what `close` returned; "report"
    is added to it) and return the report: frames, size [width, height], exact rate, the sampling
    `settings` with the run's `details` (prompt, geometry, options), timings, the preservation
    metrics and edited fraction of the writer's tally (None without source frames), what each
    LoRA load applied and `extra`."""
    tally = writer.tally
    report = dict(
        date=time.strftime("%Y-%m-%d %H:%M:%S"), frames=int(writer.frames_written),
        size=[int(writer.size[1]), int(writer.size[0])], fps=float(clip.rate),
        fps_exact=str(clip.rate),
        settings={**settings.to_dict(),
                  **{k: v for k, v in details.items() if k != "model_evaluations"}},
        timings=timings, preservation=None if tally is None else tally.result(),
        model_evaluations=model_evaluations, loras=loras or [],
        edited_fraction=None if tally is None else tally.edited_fraction, files=files,
        **(extra or {}),
    )
    save_json(writer.out / "report.json", report)
    files["report"] = "report.json"
    return report
