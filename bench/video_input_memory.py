"""Peak memory of Vera Encode's VIDEO input: grows with the frames used, not with the file.

    python bench/video_input_memory.py [--width 1280 --height 720 --seconds 40 --fps 25]

Writes a long synthetic clip (moving gradients, H.264), then, each in a fresh process, measures
the peak resident memory (VmHWM) of:
  used N   what Vera Encode does with a VIDEO from Load Video: decode only frames start..start+N
           (`vera.media.clip.read_clip`) and resize them to the auto work size a few at a time, for
           N = 17, 49, 97, 161;
  whole    what the old workflows did (Get Video Components): every frame of the file as
           float32, then trimmed.
`baseline` is the same process importing everything and doing nothing. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_clip(path: Path, width: int, height: int, frames: int, fps: int) -> None:
    import torch

    from vera.media import video

    y = torch.linspace(0, 1, height).view(height, 1, 1)
    x = torch.linspace(0, 1, width).view(1, width, 1)
    chunks = []
    for t in range(frames):
        phase = t / frames
        frame = torch.cat([((x + phase) % 1).expand(height, width, 1),
                           ((y + 2 * phase) % 1).expand(height, width, 1), (x * y + phase) % 1], -1)
        chunks.append((frame * 255).to(torch.uint8))
    video.write_mp4(torch.stack(chunks), path, fps)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would carry the parent's peak
    across exec on Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(mode: str, path: str, count: int) -> None:
    """Run in a child: one mode, then print the peak RSS in MB."""
    from vera.frames.geometry import auto_work_size, resize_uint8_frames
    from vera.media.clip import FrameSelection, read_clip
    from vera.media.video import read_video

    if mode == "used":
        frames, _ = read_clip(path, FrameSelection(start=100, count=count))
        model_in = resize_uint8_frames(frames, auto_work_size(*frames.shape[1:3]))
        shape = tuple(model_in.shape)
    elif mode == "whole":
        frames, _ = read_video(path)
        images = frames.float() / 255  # IMAGE: float32, every frame
        shape = tuple(images[100:100 + count].shape)
    else:
        shape = ()
    peak_mb = peak_rss_mb()
    print(json.dumps({"peak_mb": round(peak_mb), "shape": shape}))


def child(mode: str, path: Path, count: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(path), str(count)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child[0], args.child[1], int(args.child[2]))
        return 0
    total = args.seconds * args.fps
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.mp4"
        t = time.perf_counter()
        write_clip(path, args.width, args.height, total, args.fps)
        write_s = time.perf_counter() - t
        base = child("none", path, 0)["peak_mb"]
        used = {}
        for count in (17, 49, 97, 161):
            t = time.perf_counter()
            result = child("used", path, count)
            used[count] = dict(peak_mb=result["peak_mb"],
                               above_baseline_mb=result["peak_mb"] - base,
                               model_input=result["shape"],
                               seconds=round(time.perf_counter() - t, 1))
        whole = child("whole", path, 49)
        frame_mb = args.width * args.height * 3 / 2 ** 20
    print(json.dumps(dict(
        date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()} CPU, {platform.system()}",
        clip=f"{args.width}x{args.height}, {total} frames at {args.fps} fps (H.264, "
             f"{path.name}), written in {write_s:.0f} s",
        baseline_mb=base, used=used,
        whole_file_float32=dict(peak_mb=whole["peak_mb"],
                                above_baseline_mb=whole["peak_mb"] - base),
        uint8_frame_mb=round(frame_mb, 2))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
