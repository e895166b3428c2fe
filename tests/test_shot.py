"""Whole shots streamed from disk (`vera.edit.shot`): equal to the in-memory edit, bounded memory,
Ctrl-C and bad input on long runs."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import half_broken_clip

from vera.__main__ import main as cli
from vera.data.clips import bundled_clip
from vera.edit.bundle import load_bundle, tiny_available
from vera.edit.pipeline import edit
from vera.edit.shot import ShotInput, edit_shot
from vera.media.video import read_png, read_video, write_png

pytestmark = pytest.mark.skipif(not tiny_available(), reason="vera-tiny weights are not here")
PROMPT = "add a large red circle moving from left to right"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return load_bundle("vera-tiny")


def _streamed(bundle, source, settings, **options):
    chunks = []
    result = edit_shot(bundle, source, PROMPT, settings, chunks.append, **options)
    joined = {k: torch.cat([getattr(c, k) for c in chunks]) for k in
              ("edit", "alpha", "model_composite", "final", "source")}
    return joined, result, chunks


@pytest.mark.parametrize("frames,mask", [(17, False), (41, True), (19, False)],
                         ids=["one window", "windows with a mask", "padded to 1 + 4k"])
def test_a_streamed_shot_equals_the_in_memory_edit(tiny, tmp_path, frames, mask):
    """Read twice as a stream, encoded in pieces and decoded a latent frame at a time, a shot gives
    bit for bit what the whole-clip path gives, with one window or several."""
    settings = tiny.defaults.updated(steps=3)
    source, _ = read_video(bundled_clip(), frames)
    mask_frames = mask_input = None
    if mask:
        mask_frames = torch.zeros(frames, 144, 176)
        mask_frames[:, :, 88:] = 1
        folder = tmp_path / "mask"
        for i, m in enumerate(mask_frames):
            write_png((m * 255).to(torch.uint8)[..., None], folder / f"m_{i:03d}.png")
        mask_input = ShotInput(folder, 0, frames, "--mask")
    streamed, result, chunks = _streamed(tiny, ShotInput(bundled_clip(), 0, frames), settings,
                                         mask=mask_input, work_size=tiny.work_size)
    whole = edit(tiny, source, PROMPT, settings, mask_frames=mask_frames, frame_policy="pad",
                 work_size=tiny.work_size)
    assert torch.equal(streamed["final"], whole.final)
    assert torch.equal(streamed["alpha"], whole.alpha)
    assert torch.equal(streamed["edit"], whole.edit_layer)
    assert torch.equal(streamed["model_composite"], whole.model_composite)
    assert torch.equal(streamed["source"], source)
    assert result.frames == frames and max(c.final.shape[0] for c in chunks) <= 4
    assert result.windows[0][0] == 0 and result.windows[-1][1] == frames - 1
    assert (len(result.windows) > 1) == (frames > 17)


def _clip(path: Path, frames: int, width: int, height: int, rate=24) -> Path:
    """A moving-pattern H.264 clip with a sine tone."""
    import av

    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=48000, layout="mono")
        for i in range(frames):
            image = np.stack([(x + 3 * i) % 256, (y + i) % 256, (x + y) % 256], -1)
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
            container.mux(video.encode(frame.reformat(format="yuv420p")))
        container.mux(video.encode())
        samples = int(48000 * frames / rate)
        wave = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 48000)).astype(np.float32)
        sound = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
        sound.sample_rate, sound.pts = 48000, 0
        for packet in (*audio.encode(sound), *audio.encode(None)):
            container.mux(packet)
    return path


def _edit_in_subprocess(clip: Path, out: Path, frames: str = "all") -> subprocess.Popen:
    code = ("import resource, sys; from vera.__main__ import main; code = main(sys.argv[1:]); "
            "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
    args = ["edit", "--prompt", PROMPT, "--input", str(clip), "--out", str(out), "--frames",
            frames, "--steps", "2"]
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_long_shot_runs_in_memory_set_by_the_window(tmp_path):
    """Peak memory of a 257-frame edit stays within 1.2x that of a 33-frame edit of the same
    320x240 clip: nothing holds the whole shot (held whole, the 257 frames' float32 edit layer,
    alpha and model composite alone come to 257 x 320 x 240 x 7 x 4 bytes, about 550 MB)."""
    clip = _clip(tmp_path / "long.mp4", 257, 320, 240)
    peaks = {}
    for frames in ("33", "all"):
        run = _edit_in_subprocess(clip, tmp_path / f"out_{frames}", frames)
        stdout, stderr = run.communicate(timeout=900)
        assert run.returncode == 0, stderr[-2000:]
        peaks[frames] = int(stdout.split("peak_kb")[-1])
    assert peaks["all"] <= 1.2 * peaks["33"], peaks
    out = tmp_path / "out_all"
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 257 and len(report["windows"]) > 10
    assert len(list((out / "final_composite").glob("*.png"))) == 257
    assert report["preservation"]["preserved_exact"] == 1.0
    decoded, rate = read_video(out / "final_composite.mp4")
    assert decoded.shape[0] == 257 and rate == 24


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ctrl_c_half_way_through_a_long_shot_leaves_nothing_finished(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    clip = _clip(user / "shot.mp4", 161, 160, 128)
    before = _snapshot(user)
    run = _edit_in_subprocess(clip, user / "out")
    deadline = time.time() + 600
    while time.time() < deadline and run.poll() is None:  # until files are being written
        if any(user.glob(".out.*.partial/final_composite/final_00008.png")):
            break
        time.sleep(0.2)
    assert run.poll() is None, run.communicate()[1][-2000:]
    os.kill(run.pid, signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr[-2000:]
    assert not (user / "out").exists() and not list(user.glob(".*partial"))
    assert _snapshot(user) == before


LONG_CASES = [
    ("window not 1 + 4k", ["--window", "20"], "window = 20: a context window must be 1 + 4k"),
    ("window below one latent step", ["--window", "3"], "window = 3"),
    ("overlap as long as the window", ["--window", "9", "--overlap", "9"],
     "window_overlap = 9 with window = 9"),
    ("overlap negative", ["--overlap", "-2"], "window_overlap = -2"),
    ("no windows past the cap", ["--window", "0", "--frames", "200"],
     "--window 0 with --frames 200: without context windows Vera edits at most 161"),
    ("no windows on a whole file", ["--window", "0", "--frames", "all"],
     "--window 0 with --frames all"),
    ("frames not a number", ["--frames", "lots"], "--frames 'lots'"),
    ("clip shorter than the window", ["--window", "33", "--frames", "17"],
     "--window 33: the clip has only 17 frames"),
    ("mask shorter than the source", lambda u: ["--mask", str(u / "short_mask"), "--frames", "25"],
     "the mask has 9 frames from frame 0 but the source has more"),
    ("source broken half-way", lambda u: ["--input", str(u / "broken.mp4"), "--frames", "all"],
     "broken.mp4: FFmpeg could not decode frame"),
]


@pytest.fixture
def long_user(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(bundled_clip().read_bytes())
    for i in range(9):
        write_png(torch.full((144, 176, 1), 255, dtype=torch.uint8),
                  tmp_path / "short_mask" / f"m_{i:03d}.png")
    half_broken_clip(tmp_path / "broken.mp4", 60)
    return tmp_path


@pytest.mark.parametrize("case", LONG_CASES, ids=[c[0] for c in LONG_CASES])
def test_long_shot_inputs_are_refused_clearly(case, long_user, capsys):
    label, extra, named = case
    extra = extra(long_user) if callable(extra) else extra
    before = _snapshot(long_user)
    args = ["edit", "--prompt", PROMPT, "--out", str(long_user / "out"), "--steps", "1", *extra]
    if "--input" not in extra:
        args += ["--input", str(long_user / "clip.mp4")]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err, err
    assert _snapshot(long_user) == before and not (long_user / "out").exists()
    assert not list(long_user.glob(".*partial"))


def test_whole_file_keeps_its_rate_and_sound(tmp_path):
    """`--frames all` on a 29.97 fps clip with sound: every frame, at the exact rate, the sound on
    the composite mp4 as long as the picture."""
    from fractions import Fraction

    import av

    clip = _clip(tmp_path / "ntsc.mp4", 45, 96, 64, rate=Fraction(30000, 1001))
    assert cli(["edit", "--prompt", PROMPT, "--input", str(clip), "--out", str(tmp_path / "o"),
                "--frames", "all", "--steps", "1"]) == 0
    frames, rate = read_video(tmp_path / "o" / "final_composite.mp4")
    assert frames.shape[0] == 45 and rate == Fraction(30000, 1001)
    with av.open(str(tmp_path / "o" / "final_composite.mp4")) as container:
        audio = container.streams.audio[0]
        seconds = float(audio.duration * audio.time_base)
    assert abs(seconds - 45 * 1001 / 30000) < 0.05
    png = read_png(tmp_path / "o" / "final_composite" / "final_00044.png")
    assert png.shape == (64, 96, 3)


def test_window_0_without_frames_edits_the_models_clip_in_one_piece(tmp_path):
    """--window 0 alone keeps vera-tiny's default 17 frames (it is refused only with --frames
    past 161 or all)."""
    assert cli(["edit", "--prompt", PROMPT, "--out", str(tmp_path / "o"), "--window", "0",
                "--steps", "1"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["frames"] == 17 and report["windows"] == [[0, 16]]
    assert report["settings"]["window"] == 0
