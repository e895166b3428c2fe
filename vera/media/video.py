"""Reading and writing video frames (PyAV, Pillow). Every write goes to a temporary name first and
is renamed into place, so a crash never leaves a half-written file and no source file is replaced.

Frame rates are exact fractions (24000/1001, not 23.976). Videos are written with the BT.709 matrix
in limited ("tv") range and tagged BT.709 (primaries, transfer, matrix), which is what editing
applications assume for HD; PNGs are plain sRGB-encoded 8-bit RGB(A) without colour tags.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .files import ClosedOnExit, atomic_path

DEFAULT_RATE = Fraction(16)  # Wan2.1's rate: what frames that carry no rate of their own play at

# codec-context options: carried into the container's colour description (mov `colr`, Matroska
# Colour, H.264 VUI)
BT709_TAGS = {"color_primaries": "bt709", "color_trc": "bt709", "colorspace": "bt709",
              "color_range": "tv"}
BT709 = 1  # AVCOL_PRI_BT709 / AVCOL_TRC_BT709


def exact_rate(fps) -> Fraction:
    """A frame rate as an exact fraction. Fractions (what PyAV and ComfyUI's VIDEO carry) stay as
    they are; a float within 0.001 of n * 1000/1001 (23.976, 29.97, 59.94) becomes that NTSC
    rate; any other float the nearest 1/1000."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 1000:
            raise ValueError(f"frame rate {fps!r}: must be a number above 0 and at most 1000")
        ntsc = Fraction(round(fps * 1.001) * 1000, 1001)
        rate = ntsc if abs(float(ntsc) - fps) < 1e-3 and ntsc.denominator == 1001 else \
            Fraction(fps).limit_denominator(1000)
    if not 0 < rate <= 1000:
        raise ValueError(f"frame rate {float(rate):g}: must be above 0 and at most 1000")
    return rate


def _to_yuv(frame, pix_fmt: str):
    """An RGB(A) PyAV frame -> `pix_fmt` with the BT.709 matrix in limited range, the frame
    itself tagged BT.709 where this PyAV can tag frames (ProRes writes the frame's tags into its
    header)."""
    try:
        return frame.reformat(format=pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG",
                              dst_color_trc=BT709, dst_color_primaries=BT709)
    except TypeError:  # PyAV before 17: the container's tags still say BT.709
        return frame.reformat(format=pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")


def _video_stream(container, codec: str, fps, width: int, height: int, pix_fmt: str,
                  options: dict | None = None, time_base: Fraction | None = None):
    """A video stream at the exact rate `fps`; its encoder counts time in `time_base` (None:
    1/fps, one tick a frame)."""
    timing = {} if time_base is None else {"time_base": time_base}
    stream = container.add_stream(codec, rate=exact_rate(fps), **timing)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.options = {**BT709_TAGS, **(options or {})}
    return stream


# container -> the time base its frames are timed in, where 1/rate is not kept: Matroska stores
# whole milliseconds, so frames are timed in them here (see `frame_pts`) rather than left to the
# muxer's rounding to the nearest, which puts about half the frames of a rate like 30000/1001
# after their exact time (a player then shows the previous frame there)
TIME_BASES = {"webm": Fraction(1, 1000)}


def frame_pts(index: int, rate: Fraction, time_base: Fraction) -> int:
    """Time of frame `index` at `rate` in `time_base` ticks: the last tick at or before its exact
    time `index / rate` (never after it, less than one tick before; exact integer arithmetic).
    With `time_base` 1/rate this is `index`."""
    return (index * time_base.denominator * rate.denominator) // (
        time_base.numerator * rate.numerator)


def frame_index(pts: int, rate: Fraction, time_base: Fraction) -> int:
    """The frame `frame_pts` puts at `pts` (for a tick no longer than a frame)."""
    return -((-pts * time_base.numerator * rate.numerator) // (
        time_base.denominator * rate.denominator))


def _metadata_options(metadata: dict | None) -> dict:
    """Container options that keep free-form metadata keys (prompt, workflow) in a mov/mp4."""
    return {"movflags": "use_metadata_tags"} if metadata else {}


def _set_metadata(container, metadata: dict | None) -> None:
    for key, value in (metadata or {}).items():
        container.metadata[key] = value if isinstance(value, str) else json.dumps(value)


def check_frame_range(name: str, max_frames: int | None, start: int, stride: int = 1) -> None:
    """A clear error for a frame count below 1, a negative first frame or a stride below 1."""
    if max_frames is not None and (isinstance(max_frames, bool) or max_frames < 1):
        raise ValueError(f"{name}: frame count {max_frames} must be at least 1")
    if isinstance(start, bool) or start < 0:
        raise ValueError(f"{name}: first frame {start} must be 0 or more")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"{name}: frame stride {stride!r} must be a whole number of at least 1")


def open_video(source, name: str = "input video"):
    """PyAV container of a path or a binary stream, with errors that name the input."""
    import av

    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"{name} {source} does not exist")
        source = str(source)
    else:
        source.seek(0)
    try:
        container = av.open(source)
    except av.FFmpegError as error:
        empty = isinstance(source, str) and Path(source).stat().st_size == 0
        kind = "empty" if empty else "truncated, damaged or not a video"
        raise ValueError(f"{name} {_label(source)}: FFmpeg cannot read it ({kind}: "
                         f"{error.strerror or error})") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{name} {_label(source)} has no video stream (audio only?)")
    return container


def check_readable(path: str | Path, name: str) -> None:
    """Fail now, before any model loads, when `path` is missing or a file FFmpeg cannot open
    (a PNG folder is checked frame by frame when it is read)."""
    if Path(path).is_dir():
        return
    open_video(Path(path), name).close()


def _label(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "(uploaded video)"


def video_rate(container) -> Fraction:
    stream = container.streams.video[0]
    return Fraction(stream.average_rate or stream.guessed_rate or 24)


def iter_video_frames(path, start: int = 0, count: int | None = None, stride: int = 1,
                      name: str = "input video") -> Iterator[torch.Tensor]:
    """Frames `start, start + stride, ...` (at most `count`) of a video file (a path or a binary
    stream), one uint8 `[H, W, 3]` at a time, decoded as they are asked for (memory holds one
    frame). The range is checked and the file opened now; a frame that cannot be decoded later
    raises a ValueError naming its number. Errors say which input (`name`)."""
    check_frame_range(name, count, start, stride)
    return _decoded_frames(open_video(path, name), path, start, count, stride, name)


def _decoded_frames(container, path, start: int, count: int | None, stride: int,
                    name: str) -> Iterator[torch.Tensor]:
    """The picked frames of an open container (closed when the frames end or the generator is
    closed), uint8 `[H, W, 3]` each."""
    import av

    seen = given = 0
    with container:
        try:
            for frame in container.decode(container.streams.video[0]):
                index, seen = seen, seen + 1
                if index >= start and (index - start) % stride == 0:
                    given += 1
                    yield torch.from_numpy(frame.to_ndarray(format="rgb24"))
                if count is not None and given >= count:
                    return
        except av.FFmpegError as error:
            raise ValueError(f"{name} {_label(path)}: FFmpeg could not decode frame {seen} "
                             f"(truncated or damaged: {error.strerror or error})") from None
    if not given:
        if seen:
            raise ValueError(f"{name} {_label(path)}: no frames left after skipping the first "
                             f"{start} (it has {seen})")
        raise ValueError(f"{name} {_label(path)} has no decodable frames")


def read_video(path, max_frames: int | None = None, start: int = 0, name: str = "input video",
               stride: int = 1) -> tuple[torch.Tensor, Fraction]:
    """Decode frames `start, start + stride, ...` (at most `max_frames` of them) of a video file
    (a path or a binary stream) -> (uint8 `[T, H, W, 3]`, the file's exact frame rate). Other
    frames are decoded and dropped as they come, so memory holds only the frames returned. Errors
    say which input (`name`); see `iter_video_frames`."""
    check_frame_range(name, max_frames, start, stride)
    container = open_video(path, name)
    fps = video_rate(container)
    frames = list(_decoded_frames(container, path, start, max_frames, stride, name))
    return torch.stack(frames), fps


def probe_video(path, name: str = "input video") -> dict:
    """What a source holds, without decoding its frames: {"rate": exact Fraction, "width",
    "height", "frames": the count the container states, or None}. A folder of PNG frames gives
    its PNG count, its first frame's size and the rate PNG folders play at."""
    from PIL import Image

    if isinstance(path, (str, Path)) and Path(path).is_dir():
        files = _png_files(Path(path), name)
        with Image.open(files[0]) as img:
            width, height = img.size
        return {"rate": PNG_FOLDER_RATE, "width": width, "height": height, "frames": len(files)}
    with open_video(path, name) as container:
        stream = container.streams.video[0]
        return {"rate": video_rate(container), "width": stream.codec_context.width,
                "height": stream.codec_context.height, "frames": stream.frames or None}


def frame_rate(path, name: str = "input video") -> Fraction:
    """The exact frame rate of a video file or a PNG folder (see `probe_video`)."""
    return probe_video(path, name)["rate"]


def read_audio(path, start_seconds: float = 0.0, seconds: float | None = None) -> dict | None:
    """The first audio stream of a file (path or binary stream) from `start_seconds`, `seconds`
    long (None: to the end) -> {"waveform": float32 `[1, C, N]`, "sample_rate": int} (ComfyUI's
    AUDIO), or None when the file has no audio. Decoding stops at the end of the span, and
    samples before it are dropped as they come."""
    import av

    if not isinstance(path, (str, Path)):
        path.seek(0)
    chunks, position = [], 0
    with av.open(str(path) if isinstance(path, (str, Path)) else path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        rate = stream.rate or stream.codec_context.sample_rate
        first = int(round(start_seconds * rate))
        last = None if seconds is None else first + int(round(seconds * rate))
        for frame in container.decode(stream):
            samples = (frame.to_ndarray().reshape(-1, frame.samples) if frame.format.is_planar
                       else frame.to_ndarray().reshape(frame.samples, -1).T)
            begin, position = position, position + frame.samples
            if position <= first:
                continue
            chunks.append(samples[:, max(0, first - begin):
                                  None if last is None else max(0, last - begin)])
            if last is not None and position >= last:
                break
    if not chunks:
        return None
    wave = np.concatenate([c.astype(np.float32) if c.dtype.kind == "f"
                           else c.astype(np.float32) / np.iinfo(c.dtype).max for c in chunks],
                          axis=1)
    return {"waveform": torch.from_numpy(np.ascontiguousarray(wave)).unsqueeze(0),
            "sample_rate": int(rate)}


class _AudioTrack:
    """ComfyUI AUDIO ({"waveform": `[1, C, N]` or `[C, N]`, "sample_rate"}) encoded as AAC as the
    video it goes with is written, cut to the video's length; mono or stereo (more channels are
    mixed down to stereo)."""

    def __init__(self, container, audio: dict):
        wave = audio["waveform"]
        wave = (wave[0] if wave.ndim == 3 else wave).float().cpu()
        if wave.shape[0] > 2:
            wave = torch.stack([wave[0::2].mean(0), wave[1::2].mean(0)])
        self.wave, self.rate = wave, int(audio["sample_rate"])
        self.layout = "mono" if wave.shape[0] == 1 else "stereo"
        self.container, self.done = container, 0
        self.stream = container.add_stream("aac", rate=self.rate, layout=self.layout)

    def encode_until(self, seconds) -> None:
        """Encode the samples up to `seconds` from the start (those not yet encoded)."""
        import av

        end = min(round(seconds * self.rate), self.wave.shape[1])
        if end <= self.done:
            return
        piece = self.wave[:, self.done:end].clamp(-1, 1).numpy()
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp",
                                           layout=self.layout)
        frame.sample_rate = self.rate
        # a frame without a time places its first sample after the encoder's priming (1024
        # samples late); timed, the priming gets negative times and the file's edit list cuts it
        frame.pts, frame.time_base = self.done, Fraction(1, self.rate)
        self.container.mux(self.stream.encode(frame))
        self.done = end

    def finish(self, seconds) -> None:
        self.encode_until(seconds)
        self.container.mux(self.stream.encode(None))


class _Staged:
    """A temporary file beside `path` (made by `atomic_path`): `publish()` renames it onto
    `path`, `discard()` removes it."""

    def __init__(self, path: Path):
        self._context = atomic_path(path)
        self.tmp = self._context.__enter__()

    def publish(self) -> None:
        self._context.__exit__(None, None, None)

    def discard(self) -> None:
        # atomic_path removes its temporary file when the block it guards fails
        error = RuntimeError("discarded")
        self._context.__exit__(type(error), error, None)


class VideoWriter(ClosedOnExit):
    """One video file written chunk by chunk: `write(frames)` any number of times, then
    `close()` (or use it as a context manager; an exception inside the block leaves neither the
    file nor a temporary one).

    alpha False: H.264 mp4 (yuv420p, crf 16), with AAC `audio` (ComfyUI AUDIO) cut to the frames
    written; alpha True: straight RGBA as ProRes 4444 `.mov` or VP9-with-alpha `.webm`, by
    suffix. BT.709 in limited range and tagged so, at the exact `fps`; odd sizes are padded by one
    pixel; free-form `metadata` (prompt, workflow) goes into the container (webm: as tags). The
    file is opened at the first `write` and renamed into place at `close`. Webm times are whole
    milliseconds: each frame sits at the last one at or before its exact time (`frame_pts`)."""

    def __init__(self, path: str | Path, fps=16, *, alpha: bool = False,
                 audio: dict | None = None, metadata: dict | None = None):
        self.path, self.rate, self.alpha = Path(path), exact_rate(fps), alpha
        if alpha and self.path.suffix not in RGBA_CODECS:
            raise ValueError(f"{self.path}: RGBA video must be .mov (ProRes 4444) or .webm (VP9 "
                             "with alpha)")
        if alpha and audio is not None:
            raise ValueError(f"{self.path}: only mp4 files carry audio")
        self.audio, self.metadata = audio, metadata
        self.frames_written = 0
        self._staged = self._container = self._stream = self._track = self._size = None
        self._time_base = None  # the encoder's, where not 1/rate (see TIME_BASES)
        self._closed = self._published = False

    def _open(self, height: int, width: int) -> None:
        import av

        if self.alpha:
            codec, pix_fmt, options = RGBA_CODECS[self.path.suffix]
            container_format = self.path.suffix[1:]
            container_options = _metadata_options(self.metadata) if container_format == "mov" \
                else {}
        else:
            codec, pix_fmt, options = "libx264", "yuv420p", {"crf": "16"}
            container_format, container_options = "mp4", _metadata_options(self.metadata)
        self._size = (height, width)
        self._time_base = TIME_BASES.get(container_format)
        self._staged = _Staged(self.path)
        try:
            self._container = av.open(str(self._staged.tmp), mode="w", format=container_format,
                                      options=container_options)
            _set_metadata(self._container, self.metadata)
            self._stream = _video_stream(self._container, codec, self.rate, width + width % 2,
                                         height + height % 2, pix_fmt, options, self._time_base)
            if self.audio is not None:
                self._track = _AudioTrack(self._container, self.audio)
        except BaseException:
            self.abort()
            raise

    def write(self, frames: torch.Tensor) -> None:
        """Append uint8 `[t, H, W, C]` frames (C = 4 with alpha, else 3), all the first chunk's
        size."""
        import av

        if self._closed:
            raise ValueError(f"{self.path}: the video is already closed")
        channels = 4 if self.alpha else 3
        if frames.ndim != 4 or frames.shape[-1] != channels:
            raise ValueError(f"{self.path}: frames must be [t, H, W, {channels}], got "
                             f"{list(frames.shape)}")
        if self._container is None:
            self._open(frames.shape[1], frames.shape[2])
        elif tuple(frames.shape[1:3]) != self._size:
            raise ValueError(f"{self.path}: frames are {frames.shape[2]}x{frames.shape[1]} but "
                             f"the first were {self._size[1]}x{self._size[0]}")
        height, width = self._stream.height, self._stream.width
        pix_fmt = self._stream.pix_fmt
        for img in frames.cpu().numpy():
            img = np.pad(img, ((0, height - img.shape[0]), (0, width - img.shape[1]), (0, 0)),
                         mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img),
                                               format="rgba" if self.alpha else "rgb24")
            packets = self._stream.encode(self._timed(_to_yuv(frame, pix_fmt)))
            self._container.mux(self._durations(packets))
            self.frames_written += 1
        if self._track is not None:
            self._track.encode_until(self.frames_written / self.rate)

    def _timed(self, frame):
        """The next frame (`frames_written` of them so far), timed in the encoder's time base
        where that is not 1/rate (untimed frames are numbered 0, 1, ... in 1/rate)."""
        if self._time_base is not None:
            index, tb = self.frames_written, self._time_base
            frame.pts, frame.time_base = frame_pts(index, self.rate, tb), tb
        return frame

    def _durations(self, packets: list) -> list:
        """Encoded video packets, each given its frame's span in the encoder's time base where
        that is not 1/rate (libvpx leaves it 0 and the muxer would use the rounded frame
        period), so the file ends at the last tick at or before the last frame's exact end."""
        if self._time_base is not None:
            for packet in packets:
                if packet.pts is not None:
                    index = frame_index(packet.pts, self.rate, self._time_base)
                    packet.duration = frame_pts(index + 1, self.rate, self._time_base) - packet.pts
        return packets

    def close(self) -> Path:
        """Flush the encoders, finish the audio at the video's length and rename the file into
        place (once; later calls do nothing). A video no frames were written to is an error."""
        if self._published:
            return self.path
        if self._closed:
            raise ValueError(f"{self.path}: the video was aborted")
        if self._container is None:
            self._closed = True
            raise ValueError(f"{self.path}: no frames were written")
        try:
            self._container.mux(self._durations(self._stream.encode()))
            if self._track is not None:
                self._track.finish(self.frames_written / self.rate)
            self._container.close()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._staged.publish()
        self._published = True
        return self.path

    def abort(self) -> None:
        """Stop without publishing: the temporary file is removed, `path` is left as it was."""
        if self._closed:
            return
        self._closed = True
        if self._container is not None:
            with contextlib.suppress(Exception):  # the file is discarded anyway
                self._container.close()
        if self._staged is not None:
            self._staged.discard()


def write_mp4(frames: torch.Tensor, path: str | Path, fps=16, audio: dict | None = None,
              metadata: dict | None = None) -> Path:
    """uint8 `[T, H, W, 3]` -> H.264 mp4 (yuv420p, BT.709, exact `fps`; odd sizes are padded by
    one pixel), with AAC audio when `audio` (ComfyUI AUDIO) is given and free-form `metadata`.
    See `VideoWriter`."""
    with VideoWriter(path, fps, audio=audio, metadata=metadata) as writer:
        writer.write(frames)
    return Path(path)


def png_text(metadata: dict | None):
    """{key: value} -> PNG text chunks (values that are not text as JSON, as ComfyUI's SaveImage
    writes `prompt` and `workflow`), or None."""
    if not metadata:
        return None
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    return info


def write_png(image: torch.Tensor, path: str | Path, metadata=None) -> Path:
    """uint8 `[H, W, C]` (C = 1, 3 or 4) -> PNG; `metadata`: a dict of text chunks or a
    `PngInfo`."""
    from PIL import Image

    arr = image.cpu().numpy()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[-1]]
    info = png_text(metadata) if isinstance(metadata, dict) else metadata
    with atomic_path(Path(path)) as tmp:
        Image.fromarray(arr[..., 0] if mode == "L" else arr, mode).save(tmp, format="PNG",
                                                                         pnginfo=info)
    return Path(path)


class PngSequenceWriter:
    """folder/prefix_00000.png, prefix_00001.png, ... written as frames come: each `write`
    continues the numbering (`count`: frames written so far). Every PNG carries `metadata` as
    text chunks."""

    def __init__(self, folder: str | Path, prefix: str, metadata: dict | None = None):
        self.folder, self.prefix, self.count = Path(folder), prefix, 0
        self._info = png_text(metadata)

    def write(self, frames: torch.Tensor) -> list[Path]:
        """uint8 `[t, H, W, C]` (C = 1, 3 or 4) -> the PNGs written."""
        paths = []
        for frame in frames:
            paths.append(write_png(frame, self.folder / f"{self.prefix}_{self.count:05d}.png",
                                   self._info))
            self.count += 1
        return paths


def write_png_sequence(frames: torch.Tensor, folder: str | Path, prefix: str,
                       metadata: dict | None = None) -> list[Path]:
    """uint8 `[T, H, W, C]` -> folder/prefix_00000.png ... (each with `metadata` as text chunks)"""
    return PngSequenceWriter(folder, prefix, metadata).write(frames)


def read_png(path: str | Path) -> torch.Tensor:
    from PIL import Image

    arr = np.array(Image.open(path))
    return torch.from_numpy(arr if arr.ndim == 3 else arr[..., None])


RGBA_CODECS = {  # container suffix -> (codec, pixel format, options); both keep an alpha channel
    ".mov": ("prores_ks", "yuva444p10le", {"profile": "4444", "vendor": "apl0"}),
    ".webm": ("libvpx-vp9", "yuva420p", {"lossless": "1", "auto-alt-ref": "0"}),
}


def write_rgba_video(frames: torch.Tensor, path: str | Path, fps=16,
                     metadata: dict | None = None) -> Path:
    """uint8 `[T, H, W, 4]` straight RGBA -> ProRes 4444 `.mov` or VP9-with-alpha `.webm` (by
    suffix), BT.709 in limited range and tagged so, at the exact `fps`; `metadata` (prompt,
    workflow) goes into the container. See `VideoWriter`.

    Both keep 8-bit alpha within one level (tested); VP9 is written in lossless mode (its
    colour is 4:2:0-subsampled)."""
    with VideoWriter(path, fps, alpha=True, metadata=metadata) as writer:
        writer.write(frames)
    return Path(path)


def read_rgba_video(path: str | Path) -> torch.Tensor:
    """Decode an RGBA `.mov`/`.webm` -> uint8 `[T, H, W, 4]`. VP9 is decoded with libvpx, because
    FFmpeg's native vp9 decoder drops the alpha plane."""
    import av

    path = Path(path)
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.codec_context.name == "vp9":
            decoder = av.CodecContext.create("libvpx-vp9", "r")
            decoded = (f for packet in container.demux(stream) for f in decoder.decode(packet))
        else:
            decoded = container.decode(stream)
        for frame in decoded:
            frames.append(frame.to_ndarray(format="rgba"))
    if not frames:
        raise ValueError(f"{path} has no decodable frames")
    return torch.from_numpy(np.stack(frames))


def _png_files(folder: Path, name: str) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise ValueError(f"{name} {folder}: folder has no PNG frames")
    return files


def iter_png_folder(folder: str | Path, start: int = 0, count: int | None = None,
                    name: str = "input", stride: int = 1) -> Iterator[torch.Tensor]:
    """Frames `start, start + stride, ...` (at most `count`) of a folder's sorted PNGs, one uint8
    `[H, W, C]` at a time (grey PNGs give C = 1), read as they are asked for. The range and the
    folder are checked now; a frame that cannot be read or differs in size from the first picked
    one raises a ValueError naming the folder and the file."""
    folder = Path(folder)
    check_frame_range(name, count, start, stride)
    files = _png_files(folder, name)
    picked = files[start::stride][:count]
    if not picked:
        raise ValueError(f"{name} {folder}: no frames left after skipping the first {start} "
                         f"(it has {len(files)})")
    return _png_frames(folder, picked, name)


def _png_frames(folder: Path, files: list[Path], name: str) -> Iterator[torch.Tensor]:
    from PIL import Image, UnidentifiedImageError

    first = None
    for file in files:
        try:
            with Image.open(file) as img:
                grey = img.mode in ("L", "I", "I;16")
                arr = np.array(img.convert("L" if grey else "RGB"))
        except (OSError, UnidentifiedImageError) as error:
            raise ValueError(f"{name} {folder}: frame {file.name} cannot be read ({error})"
                             ) from None
        first = arr.shape if first is None else first
        if arr.shape != first:
            size = lambda s: "x".join(str(d) for d in (s[1], s[0], *s[2:]))
            raise ValueError(f"{name} {folder}: frame {file.name} is {size(arr.shape)} but "
                             f"{files[0].name} is {size(first)}; every frame needs the same size "
                             "and channels")
        yield torch.from_numpy(arr if arr.ndim == 3 else arr[..., None])


def read_png_folder(folder: Path, max_frames: int | None = None, start: int = 0,
                    name: str = "input") -> torch.Tensor:
    """Sorted PNG frames of a folder -> uint8 `[T, H, W, C]` (grey PNGs give C = 1). Every frame
    must have the first one's size; errors name the folder and the frame (see
    `iter_png_folder`)."""
    return torch.stack(list(iter_png_folder(folder, start, max_frames, name)))


PNG_FOLDER_RATE = DEFAULT_RATE  # a folder of frames has no rate of its own


def read_frames(path: str | Path, max_frames: int | None = None, start: int = 0,
                name: str = "input") -> tuple[torch.Tensor, Fraction]:
    """A video file or a folder of PNG frames -> (uint8 `[T, H, W, C]`, exact fps; 16 for PNG
    folders). Grey PNGs give C = 1. `name` is what errors call the input (e.g. "--input")."""
    path = Path(path)
    if path.is_dir():
        return read_png_folder(path, max_frames, start, name), PNG_FOLDER_RATE
    return read_video(path, max_frames, start, name)


def iter_frames(path: str | Path, start: int = 0, count: int | None = None, name: str = "input",
                stride: int = 1) -> Iterator[torch.Tensor]:
    """A video file or a folder of PNG frames, one uint8 `[H, W, C]` frame at a time (see
    `iter_video_frames` and `iter_png_folder`); `probe_video` gives its rate and size."""
    path = Path(path)
    if path.is_dir():
        return iter_png_folder(path, start, count, name, stride)
    return iter_video_frames(path, start, count, stride, name)
