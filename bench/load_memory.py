"""Peak memory and time of loading full-size Vera-1.3B files, and the loader's peak at 14B.

    python bench/load_memory.py --work /big/disk/folder     # writes ~20 GB of synthetic files once
    python bench/load_memory.py --work DIR --case bf16_vera # one case, prints JSON
    python bench/load_memory.py --meta-14b                  # 14B on the meta device (no file)

Files have the exact Wan2.1-1.3B shapes and random values (std 0.02): Vera-1.3B in our format
(bf16), the same split into three shards with an index, a Wan2.1-T2V-1.3B file with ComfyUI key
names (bf16) that starts all three branches, and Vera-1.3B in fp8 (our convert). Each case runs in
a fresh process; its page cache is dropped first (posix_fadvise DONTNEED), so the load reads the
disk; the file's cold read speed is measured the same way. Peak RSS is the process's high-water
mark (resource.getrusage), interpreter and torch included.

The 14B check needs no file: the loader runs on the meta device over a checkpoint of the exact
Wan2.1-14B shapes stored in fp16 (so every tensor is converted, not passed through), and counts the
bytes of every tensor it creates while it lives; the peak is compared with the finished model's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import weakref
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from synthetic_models import random_refs  # noqa: E402

GB = 1e9
CASES = {  # name -> (file, weight dtype, from_wan, what)
    "bf16_vera": ("vera_1.3b_bf16.safetensors", "bf16", False, "Vera-1.3B bf16, our format"),
    "bf16_sharded": ("vera_1.3b_sharded", "bf16", False, "Vera-1.3B bf16, 3 shards + index"),
    "bf16_from_wan": (
        "wan2.1_t2v_1.3b_bf16.safetensors",
        "bf16",
        True,
        "Vera-1.3B bf16 from a Wan2.1 file (read once, 3 branches)",
    ),
    "fp8_from_fp8": ("vera_1.3b_fp8.safetensors", "fp8", False, "Vera-1.3B fp8 from an fp8 file"),
    "fp8_from_bf16": ("vera_1.3b_bf16.safetensors", "fp8", False, "Vera-1.3B fp8 from a bf16 file"),
}


def shapes_of(config, wan_branch: bool = False) -> dict:
    import torch

    from vera.model.mot import VeraModel, WanBranch

    with torch.device("meta"):
        module = WanBranch(config) if wan_branch else VeraModel(config)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def write_files(work: Path) -> None:
    import torch

    from vera.checkpoints.safetensors_io import atomic_save
    from vera.checkpoints.weights import VERA_FORMAT_VERSION, convert
    from vera.model.config import PRESETS

    config = PRESETS["wan2.1-1.3B"]
    meta = {"format": "vera", "format_version": VERA_FORMAT_VERSION, "config": config.to_json()}
    vera = work / CASES["bf16_vera"][0]
    if not vera.exists():
        atomic_save(random_refs(shapes_of(config), torch.bfloat16), vera, meta)
    sharded = work / CASES["bf16_sharded"][0]
    if not sharded.exists():
        refs = random_refs(shapes_of(config), torch.bfloat16, seed=1)
        names, weight_map = list(refs), {}
        for i in range(3):
            shard = f"model-0000{i + 1}-of-00003.safetensors"
            part = {k: refs[k] for k in names[i::3]}
            atomic_save(part, sharded / shard, meta)
            weight_map.update({k: shard for k in part})
        (sharded / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": weight_map})
        )
    wan = work / CASES["bf16_from_wan"][0]
    if not wan.exists():
        atomic_save(
            random_refs(
                shapes_of(config, wan_branch=True), torch.bfloat16, prefix="model.diffusion_model.",
                seed=2,
            ),
            wan,
        )
    fp8 = work / CASES["fp8_from_fp8"][0]
    if not fp8.exists():
        convert(vera, fp8, "fp8")


def drop_cache(path: Path) -> None:
    for file in [path] if path.is_file() else sorted(path.iterdir()):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_speed(path: Path) -> float:
    """Cold read of every byte (page cache dropped first), GB/s."""
    drop_cache(path)
    files = [path] if path.is_file() else sorted(path.iterdir())
    total, start = 0, time.perf_counter()
    buffer = bytearray(64 << 20)
    for file in files:
        with open(file, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                total += n
    return total / GB / (time.perf_counter() - start)


def run_case(work: Path, case: str) -> dict:
    import torch

    from vera.checkpoints.weights import load_model

    file, dtype, from_wan, what = CASES[case]
    path = work / file
    drop_cache(path)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    model = load_model(path, dtype, "cpu", from_wan=from_wan)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    on_disk = sum(p.stat().st_size for p in ([path] if path.is_file() else path.iterdir()))
    del model, torch
    return dict(
        case=case,
        what=what,
        weights_gb=weights / GB,
        peak_rss_gb=peak / GB,
        rss_before_load_gb=base / GB,
        ratio=peak / weights,
        load_s=seconds,
        file_gb=on_disk / GB,
        load_gb_per_s=on_disk / GB / seconds,
    )


def meta_14b() -> dict:
    """The loader over 14B shapes on the meta device, counting live bytes of what it creates."""
    import torch

    from vera.checkpoints import containers, weights
    from vera.model.config import PRESETS

    config = PRESETS["wan2.1-14B"]
    meta_shapes = shapes_of(config)
    refs = {
        k: containers.TensorRef(
            k,
            shape,
            torch.float16,
            (lambda s=shape: torch.empty(s, dtype=torch.float16, device="meta")),
        )
        for k, shape in meta_shapes.items()
    }
    checkpoint = containers.Checkpoint(
        Path("vera-14b-fp16 (meta)"), "meta", refs, {"config": config.to_json()}
    )
    weights.open_checkpoint = lambda path: checkpoint  # the loader sees this checkpoint
    report = {}
    for policy in ("bf16", "fp8"):
        live, peak, largest = [0], [0], [0]

        def track(tensor, kind):
            size = tensor.numel() * tensor.element_size()
            live[0] += size
            peak[0] = max(peak[0], live[0])
            largest[0] = max(largest[0], size)
            weakref.finalize(tensor, lambda n=size: live.__setitem__(0, live[0] - n))

        model = weights.load_model("vera-14b", policy, "meta", on_tensor=track)
        final = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        report[policy] = dict(
            final_gb=final / GB,
            peak_gb=peak[0] / GB,
            peak_minus_final_gb=(peak[0] - final) / GB,
            largest_tensor_gb=largest[0] / GB,
        )
        del model
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the synthetic files")
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--meta-14b", action="store_true")
    args = parser.parse_args()
    if args.meta_14b:
        print(json.dumps(meta_14b(), indent=1))
        return 0
    if args.case:
        print(json.dumps(run_case(args.work, args.case)))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_files(args.work)
    print(f"files ready in {time.perf_counter() - start:.0f} s", flush=True)
    print(
        "| case | weights GB | peak RSS GB | peak / weights | load s | file GB | load GB/s | "
        "cold read GB/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for case in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--work", str(args.work), "--case", case],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            print(f"| {case} | failed: {out.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        speed = read_speed(args.work / CASES[case][0])
        print(
            f"| {r['what']} | {r['weights_gb']:.2f} | {r['peak_rss_gb']:.2f} | {r['ratio']:.3f} | "
            f"{r['load_s']:.1f} | {r['file_gb']:.2f} | {r['load_gb_per_s']:.2f} | {speed:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
