"""Run the shipped Wan-1.3B workflow pair in a real ComfyUI with synthetic full-size model files
(scripts/synthetic_models.py: Vera-1.3B, the Wan2.1 VAE, umT5-XXL for CLIPLoader type `wan`),
frames, size and steps lowered through the headless client's --set; report success and the
server's peak memory.

    python scripts/wan_workflow_check.py --comfyui DIR --python COMFY_PYTHON --models MODELS
        [--vram-fraction 0.3] [--steps 2] [--frames 5] [--work-size 64x64] [--umt5 fp16]

The files are linked into DIR/models/{diffusion_models,vae,text_encoders}; a server is started on
a free port (with `torch.cuda.set_per_process_memory_fraction` when --vram-fraction is given, so a
big card behaves like a small one) and stopped at the end. ComfyUI's Python (--python) also writes
the synthetic files: it has `sentencepiece` for the umT5 file's tokenizer. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_gb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 2**20


def start_server(comfyui: Path, python: str, port: int, vram_fraction: float | None):
    args = ["main.py", "--listen", "127.0.0.1", "--port", str(port)]
    if vram_fraction is None:
        command = [python, *args, "--cpu"]
    else:
        code = ("import runpy, sys, torch; torch.cuda.set_per_process_memory_fraction("
                f"{vram_fraction}); sys.argv = {args!r}; runpy.run_path('main.py', "
                "run_name='__main__')")
        command = [python, "-c", code]
    log = open(tempfile.mktemp(prefix="vera-comfyui-", suffix=".log"), "w")
    process = subprocess.Popen(command, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/system_stats", timeout=2).read()
            return process, url, log.name
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"ComfyUI exited during start; see {log.name}")
            time.sleep(1)
    raise SystemExit(f"ComfyUI did not answer; see {log.name}")


def main() -> int:
    from vera import client, video
    from vera.data.clips import bundled_clip

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--vram-fraction", type=float, default=None)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--work-size", default="64x64")
    parser.add_argument("--weight-dtype", default="fp8", help="Load Vera Model's weight_dtype")
    parser.add_argument("--umt5", choices=("fp8", "fp16"), default="fp8",
                        help="the synthetic text encoder file's dtype")
    args = parser.parse_args()
    made = subprocess.run([args.python, str(ROOT / "scripts" / "synthetic_models.py"), "--out",
                           str(args.models), "--umt5", args.umt5], check=True,
                          capture_output=True, text=True)
    files = {k: Path(v) for k, v in json.loads(made.stdout.splitlines()[-1]).items()}
    for kind, folder in (("vera", "diffusion_models"), ("vae", "vae"), ("umt5", "text_encoders")):
        link = args.comfyui / "models" / folder / files[kind].name
        if not link.exists():
            link.symlink_to(files[kind].resolve())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process, url, log = start_server(args.comfyui, args.python, port, args.vram_fraction)
    peak = [0.0]

    def watch():  # the server's own high-water mark, read while it runs
        while process.poll() is None:
            try:
                peak[0] = max(peak[0], peak_rss_gb(process.pid))
            except (OSError, StopIteration):
                return
            time.sleep(1)

    threading.Thread(target=watch, daemon=True).start()
    width, height = (int(v) for v in args.work_size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="vera-wan-check-"))
    clip = work / "vera_source.mp4"
    clip.write_bytes(bundled_clip().read_bytes())
    frames, _ = video.read_frames(clip, 1)
    mask = torch_mask(frames.shape[1], frames.shape[2])
    video.write_png(mask, work / "vera_background_mask.png")
    results = {}
    try:
        for task in ("object_addition", "background_change"):
            sets = [f"Vera Encode.frame_count={args.frames}", f"Vera Sampler.steps={args.steps}",
                    f"Vera Encode.work_width={width}", f"Vera Encode.work_height={height}",
                    f"Load Vera Model.model_name={files['vera'].name}",
                    f"Load Vera Model.weight_dtype={args.weight_dtype}",
                    f"Wan2.1 VAE.vae_name={files['vae'].name}",
                    f"umT5 text encoder.clip_name={files['umt5'].name}"]
            argv = ["--server", url, "--workflow",
                    str(ROOT / "workflows" / "api" / f"vera_wan13b_{task}_api.json"),
                    "--input", str(clip), "--out", str(work / task), "--timeout", "7200"]
            if task == "background_change":
                argv += ["--mask", str(work / "vera_background_mask.png")]
            for value in sets:
                argv += ["--set", value]
            start = time.perf_counter()
            code = client.main(argv)
            results[task] = dict(exit_code=code, seconds=round(time.perf_counter() - start, 1),
                                 files=sum(1 for p in (work / task).rglob("*") if p.is_file())
                                 if (work / task).exists() else 0)
    finally:
        process.terminate()
        process.wait(60)
    print(json.dumps(dict(results=results, server_peak_rss_gb=round(peak[0], 2), log=log,
                          vram_fraction=args.vram_fraction)))
    return 0 if all(r["exit_code"] == 0 for r in results.values()) else 1


def torch_mask(height: int, width: int):
    import torch

    mask = torch.full((height, width, 1), 255, dtype=torch.uint8)
    mask[height // 4:, width // 3: 2 * width // 3] = 0  # a subject box: the rest may change
    return mask


if __name__ == "__main__":
    sys.exit(main())
