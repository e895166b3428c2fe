"""Reading and writing video frames (PyAV, Pillow). Every write goes to a temporary name first and
is renamed into place, so a crash never leaves a half-written file and no source file is replaced.

Frame rates are exact fractions (24000/1001, not 23.976). Videos are written with the BT.709 matrix
in limited ("tv") range and tagged BT.709 (primaries, transfer, matrix), which is what editing
applications assume for HD; PNGs are plain sRGB-encoded 8-bit RGB(A) without colour tags.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .files import atomic_path

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
                  options: dict | None = None):
    stream = container.add_stream(codec, rate=exact_rate(fps))
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.options = {**BT709_TAGS, **(options or {})}
    return stream


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
    return str(source) if isinstance(source, str) else "(uploaded video)"


def video_rate(container) -> Fraction:
    stream = container.streams.video[0]
    return Fraction(stream.average_rate or stream.guessed_rate or 24)


def read_video(path, max_frames: int | None = None, start: int = 0, name: str = "input video",
               stride: int = 1) -> tuple[torch.Tensor, Fraction]:
    """Decode frames `start, start + stride, ...` (at most `max_frames` of them) of a video file
    (a path or a binary stream) -> (uint8 `[T, H, W, 3]`, the file's exact frame rate). Other
    frames are decoded and dropped as they come, so memory holds only the frames returned. Errors
    say which input (`name`)."""
    import av

    check_frame_range(name, max_frames, start, stride)
    frames, seen = [], 0
    container = open_video(path, name)
    try:
        with container:
            fps = video_rate(container)
            for frame in container.decode(container.streams.video[0]):
                index, seen = seen, seen + 1
                if index >= start and (index - start) % stride == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.FFmpegError as error:
        raise ValueError(f"{name} {_label(path)}: FFmpeg stopped reading it after {seen} frames "
                         f"(truncated or damaged: {error.strerror or error})") from None
    if not frames:
        if seen:
            raise ValueError(f"{name} {_label(path)}: no frames left after skipping the first "
                             f"{start} (it has {seen})")
        raise ValueError(f"{name} {_label(path)} has no decodable frames")
    return torch.from_numpy(np.stack(frames)), fps


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


def _add_audio(container, audio: dict | None, seconds: float):
    """Encode ComfyUI AUDIO ({"waveform": `[1, C, N]` or `[C, N]`, "sample_rate"}) as AAC, cut to
    the video's length; mono or stereo (more channels are mixed down to stereo)."""
    import av

    if audio is None:
        return
    wave = audio["waveform"]
    wave = (wave[0] if wave.ndim == 3 else wave).float().cpu()
    if wave.shape[0] > 2:
        wave = torch.stack([wave[0::2].mean(0), wave[1::2].mean(0)])
    rate = int(audio["sample_rate"])
    wave = wave[:, : int(round(seconds * rate))].clamp(-1, 1).numpy()
    layout = "mono" if wave.shape[0] == 1 else "stereo"
    stream = container.add_stream("aac", rate=rate, layout=layout)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave), format="fltp", layout=layout)
    frame.sample_rate = rate
    # a frame without a time places its first sample after the encoder's priming (1024 samples
    # late); timed, the priming gets negative times and the file's edit list cuts it
    frame.pts, frame.time_base = 0, Fraction(1, rate)
    for chunk in (stream.encode(frame), stream.encode(None)):
        container.mux(chunk)


def write_mp4(frames: torch.Tensor, path: str | Path, fps=16, audio: dict | None = None,
              metadata: dict | None = None) -> Path:
    """uint8 `[T, H, W, 3]` -> H.264 mp4 (yuv420p, BT.709, exact `fps`; odd sizes are padded by
    one pixel), with AAC audio when `audio` (ComfyUI AUDIO) is given and free-form `metadata`."""
    import av

    arr = frames.cpu().numpy()
    h, w = arr.shape[1] + arr.shape[1] % 2, arr.shape[2] + arr.shape[2] % 2
    rate = exact_rate(fps)
    with atomic_path(Path(path)) as tmp:
        with av.open(str(tmp), mode="w", format="mp4",
                     options=_metadata_options(metadata)) as container:
            _set_metadata(container, metadata)
            stream = _video_stream(container, "libx264", rate, w, h, "yuv420p", {"crf": "16"})
            _add_audio(container, audio, len(arr) / rate)
            for img in arr:
                img = np.pad(img, ((0, h - img.shape[0]), (0, w - img.shape[1]), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                container.mux(stream.encode(_to_yuv(frame, "yuv420p")))
            container.mux(stream.encode())
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


def write_png_sequence(frames: torch.Tensor, folder: str | Path, prefix: str,
                       metadata: dict | None = None) -> list[Path]:
    """uint8 `[T, H, W, C]` -> folder/prefix_00000.png ... (each with `metadata` as text chunks)"""
    info = png_text(metadata)
    return [write_png(f, Path(folder) / f"{prefix}_{i:05d}.png", info)
            for i, f in enumerate(frames)]


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
    workflow) goes into the container.

    Both keep 8-bit alpha within one level (tested); VP9 is written in lossless mode (its
    colour is 4:2:0-subsampled)."""
    import av

    path = Path(path)
    if path.suffix not in RGBA_CODECS:
        raise ValueError(f"{path}: RGBA video must be .mov (ProRes 4444) or .webm (VP9 with alpha)")
    codec, pix_fmt, options = RGBA_CODECS[path.suffix]
    arr = frames.cpu().numpy()
    h, w = arr.shape[1] + arr.shape[1] % 2, arr.shape[2] + arr.shape[2] % 2
    container_format = "mov" if path.suffix == ".mov" else "webm"
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format=container_format,
                     options=_metadata_options(metadata) if path.suffix == ".mov" else {}
                     ) as container:
            _set_metadata(container, metadata)
            stream = _video_stream(container, codec, fps, w, h, pix_fmt, options)
            for img in arr:
                img = np.pad(img, ((0, h - img.shape[0]), (0, w - img.shape[1]), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgba")
                container.mux(stream.encode(_to_yuv(frame, pix_fmt)))
            container.mux(stream.encode())
    return path


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


def read_png_folder(folder: Path, max_frames: int | None = None, start: int = 0,
                    name: str = "input") -> torch.Tensor:
    """Sorted PNG frames of a folder -> uint8 `[T, H, W, C]` (grey PNGs give C = 1). Every frame
    must have the first one's size; errors name the folder and the frame."""
    from PIL import Image, UnidentifiedImageError

    check_frame_range(name, max_frames, start)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise ValueError(f"{name} {folder}: folder has no PNG frames")
    picked = files[start:] if max_frames is None else files[start:start + max_frames]
    if not picked:
        raise ValueError(f"{name} {folder}: no frames left after skipping the first {start} "
                         f"(it has {len(files)})")
    arrays = []
    for file in picked:
        try:
            with Image.open(file) as img:
                grey = img.mode in ("L", "I", "I;16")
                arrays.append(np.array(img.convert("L" if grey else "RGB")))
        except (OSError, UnidentifiedImageError) as error:
            raise ValueError(f"{name} {folder}: frame {file.name} cannot be read ({error})"
                             ) from None
        first, last = arrays[0], arrays[-1]
        if last.shape != first.shape:
            size = lambda a: "x".join(str(d) for d in (a.shape[1], a.shape[0], *a.shape[2:]))
            raise ValueError(f"{name} {folder}: frame {file.name} is {size(last)} but "
                             f"{picked[0].name} is {size(first)}; every frame needs the same size "
                             "and channels")
    arr = np.stack(arrays)
    return torch.from_numpy(arr if arr.ndim == 4 else arr[..., None])


PNG_FOLDER_RATE = DEFAULT_RATE  # a folder of frames has no rate of its own


def read_frames(path: str | Path, max_frames: int | None = None, start: int = 0,
                name: str = "input") -> tuple[torch.Tensor, Fraction]:
    """A video file or a folder of PNG frames -> (uint8 `[T, H, W, C]`, exact fps; 16 for PNG
    folders). Grey PNGs give C = 1. `name` is what errors call the input (e.g. "--input")."""
    path = Path(path)
    if path.is_dir():
        return read_png_folder(path, max_frames, start, name), PNG_FOLDER_RATE
    return read_video(path, max_frames, start, name)
