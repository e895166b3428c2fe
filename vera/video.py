"""Reading and writing video frames (PyAV, Pillow). Every write goes to a temporary name first and
is renamed into place, so a crash never leaves a half-written file and no source file is replaced."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .files import atomic_path


def _check_range(name: str, max_frames: int | None, start: int) -> None:
    if max_frames is not None and (isinstance(max_frames, bool) or max_frames < 1):
        raise ValueError(f"{name}: frame count {max_frames} must be at least 1")
    if isinstance(start, bool) or start < 0:
        raise ValueError(f"{name}: first frame {start} must be 0 or more")


def read_video(path: str | Path, max_frames: int | None = None, start: int = 0,
               name: str = "input video") -> tuple[torch.Tensor, float]:
    """Decode frames `start .. start + max_frames` of a video file -> (uint8 `[T, H, W, 3]`, fps).
    Frames before `start` are decoded and dropped, never kept. Errors say which input (`name`)."""
    import av

    _check_range(name, max_frames, start)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name} {path} does not exist")
    frames, seen = [], 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{name} {path} has no video stream (audio only?)")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 24)
            for frame in container.decode(stream):
                seen += 1
                if seen > start:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.FFmpegError as error:
        kind = "empty" if path.stat().st_size == 0 else "truncated, damaged or not a video"
        raise ValueError(f"{name} {path}: FFmpeg cannot read it ({kind}: {error.strerror or error})"
                         ) from None
    if not frames:
        if seen:
            raise ValueError(f"{name} {path}: no frames left after skipping the first {start} "
                             f"(it has {seen})")
        raise ValueError(f"{name} {path} has no decodable frames")
    return torch.from_numpy(np.stack(frames)), fps


def write_mp4(frames: torch.Tensor, path: str | Path, fps: float = 16.0) -> Path:
    """uint8 `[T, H, W, 3]` -> H.264 mp4 (yuv420p; odd sizes are padded by one pixel)."""
    import av

    arr = frames.cpu().numpy()
    h, w = arr.shape[1] + arr.shape[1] % 2, arr.shape[2] + arr.shape[2] % 2
    with atomic_path(Path(path)) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=round(fps))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": "16"}
            for img in arr:
                img = np.pad(img, ((0, h - img.shape[0]), (0, w - img.shape[1]), (0, 0)), mode="edge")
                container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            container.mux(stream.encode())
    return Path(path)


def write_png(image: torch.Tensor, path: str | Path) -> Path:
    """uint8 `[H, W, C]` (C = 1, 3 or 4) -> PNG."""
    from PIL import Image

    arr = image.cpu().numpy()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[-1]]
    with atomic_path(Path(path)) as tmp:
        Image.fromarray(arr[..., 0] if mode == "L" else arr, mode).save(tmp, format="PNG")
    return Path(path)


def write_png_sequence(frames: torch.Tensor, folder: str | Path, prefix: str) -> list[Path]:
    """uint8 `[T, H, W, C]` -> folder/prefix_00000.png ..."""
    return [write_png(f, Path(folder) / f"{prefix}_{i:05d}.png") for i, f in enumerate(frames)]


def read_png(path: str | Path) -> torch.Tensor:
    from PIL import Image

    arr = np.array(Image.open(path))
    return torch.from_numpy(arr if arr.ndim == 3 else arr[..., None])


RGBA_CODECS = {  # container suffix -> (codec, pixel format, options); both keep an alpha channel
    ".mov": ("prores_ks", "yuva444p10le", {"profile": "4444", "vendor": "apl0"}),
    ".webm": ("libvpx-vp9", "yuva420p", {"lossless": "1", "auto-alt-ref": "0"}),
}


def write_rgba_video(frames: torch.Tensor, path: str | Path, fps: float = 16.0) -> Path:
    """uint8 `[T, H, W, 4]` straight RGBA -> ProRes 4444 `.mov` or VP9-with-alpha `.webm` (by suffix).

    Both keep 8-bit alpha within one level (tested); VP9 is written in lossless mode (its
    colour is 4:2:0-subsampled)."""
    import av

    path = Path(path)
    if path.suffix not in RGBA_CODECS:
        raise ValueError(f"{path}: RGBA video must be .mov (ProRes 4444) or .webm (VP9 with alpha)")
    codec, pix_fmt, options = RGBA_CODECS[path.suffix]
    arr = frames.cpu().numpy()
    h, w = arr.shape[1] + arr.shape[1] % 2, arr.shape[2] + arr.shape[2] % 2
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mov" if path.suffix == ".mov" else "webm") as container:
            stream = container.add_stream(codec, rate=round(fps))
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            stream.options = dict(options)
            for img in arr:
                img = np.pad(img, ((0, h - img.shape[0]), (0, w - img.shape[1]), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgba").reformat(format=pix_fmt)
                container.mux(stream.encode(frame))
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

    _check_range(name, max_frames, start)
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


def read_frames(path: str | Path, max_frames: int | None = None, start: int = 0,
                name: str = "input") -> tuple[torch.Tensor, float]:
    """A video file or a folder of PNG frames -> (uint8 `[T, H, W, C]`, fps; 16 for PNG folders).
    Grey PNGs give C = 1. `name` is what errors call the input (e.g. "--input")."""
    path = Path(path)
    if path.is_dir():
        return read_png_folder(path, max_frames, start, name), 16.0
    return read_video(path, max_frames, start, name)
