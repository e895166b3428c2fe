"""A whole shot from disk to files in memory bounded by a window: `edit_shot()`.

The source is read twice as a stream and never held whole: the first pass fits each piece of
frames to the model's grid and feeds the causal VAE encoder (with the mask in lockstep); the
latents (48x smaller than the frames) are sampled in context windows; the second pass decodes
the three layers one latent frame at a time side by side, scales them back, reads the matching
source frames again and writes every file as the frames come (`LayerFileWriter`), the final
composite made over the source's own bytes. Peak memory is set by the window and the frame size,
not by the shot's length.

On a clip that fits one window this gives exactly what `pipeline.edit()` gives (tested).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..encoders import vae as vae_ops
from ..frames import layers
from ..frames.geometry import (
    FRAME_STEP,
    Geometry,
    fit_frames,
    plan_geometry,
    resize_frames,
    resize_uint8_frames,
    unfit_frames,
)
from ..media import video
from ..sampling.sampler import StepInfo, sample
from ..sampling.settings import SamplingSettings, check_prompt
from ..sampling.windows import source_spans, windows_for
from .bundle import Bundle
from .heap import return_freed_memory
from .pipeline import _text, fit_mask, resolve_work_size

PIECE = 2 * FRAME_STEP  # frames encoded per piece after the first frame


@dataclass
class ShotInput:
    """Where a shot's frames come from: a video file or PNG folder, from frame `start`, at most
    `count` frames (None: to the end). `name` is what errors call it ("--input")."""

    path: Path
    start: int = 0
    count: int | None = None
    name: str = "--input"

    def frames(self, count: int | None = None) -> Iterator[torch.Tensor]:
        """uint8 `[H, W, C]` frames, one at a time."""
        limit = self.count if count is None else count
        return video.iter_frames(self.path, self.start, limit, self.name)


@dataclass
class EncodedShot:
    """A shot as the sampler needs it. source_latent / mask_latent: `[1, 16, T', h, w]`
    (normalised, CPU). frames: the frames read; geometry: how they map onto the model's grid
    (Geometry.original holds the frames read, .model the frames encoded). work_size: (h, w) the
    model ran at, or None for the source's size. size: (H, W) of the source."""

    source_latent: torch.Tensor
    mask_latent: torch.Tensor | None
    geometry: Geometry
    size: tuple[int, int]
    work_size: tuple[int, int] | None

    @property
    def output_frames(self) -> int:
        """Frames the layers have: the frames read, or fewer when crop dropped trailing ones."""
        return min(self.geometry.original[0], self.geometry.model[0])


def _spatial(geometry: Geometry, frames: int) -> Geometry:
    """The spatial part of a plan, for a piece of `frames` frames."""
    return Geometry((frames, *geometry.original[1:]), (frames, *geometry.model[1:]),
                    geometry.crop_offset)


class _MaskStream:
    """A mask read in lockstep with the source: one frame used for every source frame, or one per
    source frame (a mask that ends first is an error naming both counts)."""

    def __init__(self, source: ShotInput | None):
        self.source = source
        self.frames = source.frames() if source is not None else None
        first = next(self.frames, None) if source is not None else None
        second = next(self.frames, None) if first is not None else None
        self.static = first is not None and second is None
        self._pending = [f for f in (first, second) if f is not None]
        self.read = 0

    def take(self, count: int) -> torch.Tensor | None:
        """The next `count` mask frames, uint8 `[count, H, W, C]` (None without a mask)."""
        if self.source is None:
            return None
        if self.static:
            return self._pending[0].unsqueeze(0).expand(count, *self._pending[0].shape)
        out = self._pending[:count]
        self._pending = self._pending[count:]
        out += list(itertools.islice(self.frames, count - len(out)))
        self.read += len(out)
        if len(out) < count:
            raise ValueError(f"{self.source.name} {self.source.path}: the mask has "
                             f"{self.read} frames from frame {self.source.start} but the source "
                             "has more; give a mask with one frame per source frame, or a single "
                             "frame to use for all")
        return torch.stack(out)


class _ShotEncoder:
    """Fits pieces of source (and mask) frames to the model's grid and encodes them."""

    def __init__(self, vae, first: torch.Tensor, frame_policy: str, work_size, name: str):
        self.vae, self.policy, self.name = vae, frame_policy, name
        height, width = first.shape[:2]
        self.size = (height, width)
        self.work_size = resolve_work_size(work_size, height, width)
        model_in = self.work_size or self.size
        self.spatial = plan_geometry(1, *model_in, frame_policy, name=name)
        self.source = vae_ops.CausalEncoder(vae)
        self.mask = vae_ops.CausalEncoder(vae)
        self.latents, self.mask_latents = [], []

    def encode(self, frames: torch.Tensor, mask: torch.Tensor | None) -> None:
        """uint8 `[t, H, W, 3]` (+ mask frames `[t, H, W, C]`) -> latent frames, kept."""
        count = frames.shape[0]
        model_in = (resize_uint8_frames(frames, self.work_size) if self.work_size
                    else frames.float() / 255)
        fitted = fit_frames(model_in, _spatial(self.spatial, count))
        self.latents.append(self.source.encode(vae_ops.frames_to_video(fitted)))
        if mask is not None:
            matte = fit_mask(mask.float().mean(-1, keepdim=True) / 255, count, self.size,
                             self.work_size, _spatial(self.spatial, count), "--mask")
            self.mask_latents.append(self.mask.encode(vae_ops.frames_to_video(
                matte.expand(*matte.shape[:3], 3))))

    def result(self, frames_read: int) -> EncodedShot:
        geo = plan_geometry(frames_read, *(self.work_size or self.size), self.policy,
                            name=self.name)
        geo = Geometry((frames_read, *self.spatial.original[1:]),
                       (geo.model[0], *self.spatial.model[1:]), self.spatial.crop_offset)
        normalise = lambda parts: (vae_ops.normalise(self.vae, torch.cat(parts, 2)).cpu()
                                   if parts else None)
        return EncodedShot(normalise(self.latents), normalise(self.mask_latents), geo, self.size,
                           self.work_size)


@torch.no_grad()
def encode_shot(vae, source: ShotInput, mask: ShotInput | None = None,
                frame_policy: str = "pad", work_size=None) -> EncodedShot:
    """Read the source (and mask) once, piece by piece, and VAE-encode it: frame 0 alone, then
    `PIECE` frames at a time; at the end the frames short of 1 + 4k are padded (repeats of the
    last frame) or dropped, by `frame_policy`."""
    frames = source.frames()
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{source.name} {source.path} has no frames from frame {source.start}")
    if first.shape[-1] != 3:
        raise ValueError(f"{source.name} {source.path}: expected RGB frames, got "
                         f"{first.shape[-1]} channel(s)")
    masks = _MaskStream(mask)
    encoder = _ShotEncoder(vae, first, frame_policy, work_size, source.name)
    encoder.encode(first.unsqueeze(0), masks.take(1))
    read, pending = 1, []
    for frame in frames:
        pending.append(frame)
        if len(pending) == PIECE:
            encoder.encode(torch.stack(pending), masks.take(PIECE))
            read, pending = read + PIECE, []
    read += len(pending)
    whole = len(pending) - len(pending) % FRAME_STEP
    if whole:
        encoder.encode(torch.stack(pending[:whole]), masks.take(whole))
    rest = pending[whole:]
    if rest:
        plan_geometry(read, *(encoder.work_size or encoder.size), frame_policy, name=source.name)
        if frame_policy == "pad":
            padded = rest + [rest[-1]] * (FRAME_STEP - len(rest))
            mask_part = masks.take(len(rest))
            if mask_part is not None:
                mask_part = torch.cat([mask_part, mask_part[-1:].expand(
                    FRAME_STEP - len(rest), *mask_part.shape[1:])])
            encoder.encode(torch.stack(padded), mask_part)
    return encoder.result(read)


@dataclass
class LayerChunk:
    """A few consecutive frames of an edit, at the source's size: edit `[t, H, W, 3]` and
    alpha `[t, H, W, 1]` float on the 8-bit grid, model_composite float, final and source
    uint8."""

    edit: torch.Tensor
    alpha: torch.Tensor
    model_composite: torch.Tensor
    final: torch.Tensor
    source: torch.Tensor


@torch.no_grad()
def decode_shot(vae, latents: dict[str, torch.Tensor], encoded: EncodedShot, source: ShotInput,
                alpha_cutoff: float = 0.0, recover_semi_transparent: bool = False
                ) -> Iterator[LayerChunk]:
    """Decode the three layers one latent frame at a time, side by side, scale them back, and
    composite each chunk over the same source frames read again from disk."""
    geo = encoded.geometry
    decoders = {name: vae_ops.CausalDecoder(vae) for name in latents}
    raw = {name: vae_ops.denormalise(vae, z) for name, z in latents.items()}
    frames = source.frames(encoded.output_frames)
    total, done = encoded.output_frames, 0
    for index in range(raw["edit"].shape[2]):
        decoded = {name: vae_ops.video_to_frames(decoders[name].decode(z[:, :, index:index + 1]))
                   for name, z in raw.items()}
        count = min(decoded["edit"].shape[0], total - done)
        if count <= 0:
            break
        out = {}
        for name, x in decoded.items():
            x = unfit_frames(x, _spatial(geo, x.shape[0]))[:count]
            if name == "alpha":
                x = x.mean(dim=-1, keepdim=True).clamp(0, 1)
            if encoded.work_size is not None:  # the work size is on the grid: nothing was cropped
                x = resize_frames(x, encoded.size)
            out[name] = x.float()
        src = list(itertools.islice(frames, count))
        if len(src) < count:
            raise ValueError(f"{source.name} {source.path}: frame {source.start + done + len(src)}"
                             " could not be read again for the final composite (the file changed "
                             "or ended while the edit ran)")
        src = _crop_source(torch.stack(src), encoded)
        alpha = layers.quantize_alpha(out["alpha"], alpha_cutoff)
        edit = layers.on_8bit_grid(out["edit"])
        final = layers.final_composite(src, edit, alpha, out["composite"],
                                       recover_semi_transparent)
        yield LayerChunk(edit, alpha, out["composite"], final, src)
        done += count
        del decoded, out  # (the chunk's own tensors are the consumer's until the next one)
        return_freed_memory()


def _is_padded(geo: Geometry) -> bool:
    return geo.model[1] >= geo.original[1] and geo.model[2] >= geo.original[2]


def source_crop(encoded: EncodedShot) -> tuple[int, int, int, int] | None:
    """The part of each source frame the layers line up with, [top, left, height, width]: None
    for whole frames, a centre crop under the crop policy at the source's own size."""
    geo = encoded.geometry
    if encoded.work_size is not None or _is_padded(geo):
        return None
    return (*geo.crop_offset, geo.model[1], geo.model[2])


def _crop_source(frames: torch.Tensor, encoded: EncodedShot) -> torch.Tensor:
    """The source frames the layers line up with (see `source_crop`)."""
    crop = source_crop(encoded)
    if crop is None:
        return frames
    top, left, height, width = crop
    return frames[:, top:top + height, left:left + width]


@dataclass
class ShotResult:
    """What `edit_shot` did: frames written, their size (H, W), the windows (source frames),
    timings and the part of the source frames used."""

    frames: int
    size: tuple[int, int]
    windows: list[list[int]]
    model_grid: tuple[int, int, int]
    work_size: tuple[int, int] | None
    evaluations: dict
    timings: dict = field(default_factory=dict)
    crop: tuple[int, int, int, int] | None = None  # see `source_crop`


@torch.no_grad()
def edit_shot(bundle: Bundle, source: ShotInput, prompt: str, settings: SamplingSettings,
              write: Callable[[LayerChunk], None], *, mask: ShotInput | None = None,
              frame_policy: str = "pad", work_size=None, recover_semi_transparent: bool = False,
              allow_empty_prompt: bool = False, on_windows: Callable[[list], None] | None = None,
              callback: Callable[[StepInfo], None] | None = None,
              processes=None) -> ShotResult | None:
    """Edit a shot read from disk, streaming: encode -> sample in windows -> decode, composite and
    `write(chunk)` a few frames at a time. on_windows(spans) is called once the windows are known
    (before sampling). processes (`vera.edit.processes.Processes`, a parallel run): only its
    writer reads, encodes, decodes and writes, the others sample with it and return None."""
    check_prompt(prompt, allow_empty_prompt)
    writer = processes is None or processes.writer
    if writer and bundle.vae is None:
        raise ValueError(f"{bundle.name} has no VAE; load one with the model (--vae FILE)")
    timings, start = {}, time.perf_counter()
    device = next(bundle.model.parameters()).device
    encoded = shared = None
    if writer:
        context = _text(bundle, prompt, "prompt")
        negative = (_text(bundle, settings.negative_prompt, "negative_prompt")
                    if settings.guided else None)
        t = time.perf_counter()
        encoded = encode_shot(bundle.vae, source, mask, frame_policy, work_size)
        timings["encode_s"] = time.perf_counter() - t
        spans = source_spans(windows_for(settings, encoded.source_latent.shape[2]),
                             encoded.output_frames)
        shared = (context.cpu(), None if negative is None else negative.cpu(),
                  encoded.source_latent, encoded.mask_latent, spans)
    if processes is not None:
        shared = processes.share(shared)
    context, negative, source_latent, mask_latent, spans = shared
    if on_windows is not None:
        on_windows(spans)
    t = time.perf_counter()
    evaluations = {}
    latents = sample(bundle.model, context.to(device), source_latent.to(device),
                     None if mask_latent is None else mask_latent.to(device),
                     None if negative is None else negative.to(device), settings,
                     callback=callback, evaluations=evaluations)
    latents = {name: z.float().cpu() for name, z in latents.items()}
    timings["sample_s"] = time.perf_counter() - t
    if not writer:
        return None
    t, written = time.perf_counter(), 0
    for chunk in decode_shot(bundle.vae, latents, encoded, source, settings.alpha_cutoff,
                             recover_semi_transparent):
        write(chunk)
        written += chunk.final.shape[0]
    timings["decode_write_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    return ShotResult(written, tuple(chunk.final.shape[1:3]), spans, encoded.geometry.model,
                      encoded.work_size, evaluations, timings, source_crop(encoded))
