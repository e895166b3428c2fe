"""Vera over several processes: weight memory per process (CPU, gloo) and the parallel edits on
GPUs.

    python bench/parallel.py memory --out bench/results/parallel_memory_<date>.json
    python bench/parallel.py gpu        (bench/gpu_check.sh, when 2 or more GPUs are visible)

memory: a random Vera model at Wan-1.3B width (dim 1536, 12 heads, ffn 8960, text 4096) with 4
layers, saved in bf16, so weights dominate a process's memory. Loaded (bf16) by one process, by
each of 3 branch-parallel processes (`load_model(branches=...)`: a process reads only its
branch), and by 2 processes that shard the blocks with FSDP2 as they load (`--shard-weights`:
`load_model(shard_mesh=...)` keeps only a process's rows of each block tensor). Each
process reports its resident memory (VmRSS) before and after loading (and sharding); the weights'
share is the difference. Then one velocity per layout is checked against the single process
(relative to the velocity's scale).

gpu: vera-tiny edits under torchrun on CUDA: single, --parallel cfg (2), branch (3, when 3 GPUs),
sequence (2) and sequence with --shard-weights: seconds and the largest difference of the final
PNGs from the single run; one JSON line each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def wide_config():
    from vera.model.config import VeraConfig

    return VeraConfig(dim=1536, num_heads=12, num_layers=4, ffn_dim=8960, text_dim=4096,
                      name="1.3B-width, 4 layers")


def _member(rank: int, world: int, mode: str, path: str, store: str, results: str) -> None:
    import torch
    import torch.distributed as dist

    from vera.checkpoints.weights import load_model
    from vera.model.parallel import (
        branch_for,
        join_group,
        layout,
        leave_group,
        parallel_model,
        shard_mesh,
    )

    if world > 1:
        join_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    chosen = layout(mode, world, 12)
    keep = branch_for(chosen, rank)
    before = rss_bytes()
    shard = mode == "sequence"  # each process reads only its rows of the blocks
    model = load_model(path, "bf16", branches=None if keep is None else (keep,),
                       shard_mesh=shard_mesh(None, "cpu") if shard else None)
    wrapped = parallel_model(model, chosen, shard=shard)
    loaded = rss_bytes()
    g = torch.Generator().manual_seed(0)
    latent = lambda: torch.randn(1, 16, 2, 8, 8, generator=g)
    inputs = (latent(), latent(), latent(), torch.tensor([500.0]),
              torch.randn(1, 8, 4096, generator=g), latent(), None)
    with torch.no_grad():
        velocity = [v.float() for v in wrapped(*inputs)]
    torch.save(velocity, os.path.join(results, f"{mode}_{rank}.pt"))
    with open(os.path.join(results, f"{mode}_{rank}.json"), "w") as f:
        json.dump({"rank": rank, "weights_bytes": loaded - before}, f)
    if world > 1:
        dist.barrier()
        del model, wrapped
        leave_group()


def memory(out: Path) -> dict:
    import torch
    import torch.multiprocessing as mp

    from vera.checkpoints.weights import save_vera
    from vera.model.mot import VeraModel

    work = Path(tempfile.mkdtemp(prefix="vera-parallel-"))
    path = work / "wide.safetensors"
    torch.manual_seed(0)
    save_vera(VeraModel(wide_config()).to(torch.bfloat16), path)
    results = work / "results"
    results.mkdir()
    runs = {}
    for mode, world in (("single", 1), ("branch", 3), ("sequence", 2)):
        store = str(work / f"store_{mode}")
        mp.spawn(_member, args=(world, "auto" if mode == "single" else mode, str(path), store,
                                str(results)), nprocs=world, join=True)
        prefix = "auto" if mode == "single" else mode
        ranks = [json.loads((results / f"{prefix}_{r}.json").read_text()) for r in range(world)]
        velocity = torch.load(results / f"{prefix}_0.pt")
        runs[mode] = {"processes": world, "weights_gib": [round(r["weights_bytes"] / 2**30, 3)
                                                          for r in ranks], "velocity": velocity}
    single = runs["single"]["weights_gib"][0]
    report = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
              "model": wide_config().name, "file_gib": round(path.stat().st_size / 2**30, 3),
              "runs": {}}
    reference = runs["single"]["velocity"]
    for mode, run in runs.items():
        difference = max(float((a - b).abs().max() / b.abs().max())
                         for a, b in zip(run["velocity"], reference))
        report["runs"][mode] = {"processes": run["processes"], "weights_gib": run["weights_gib"],
                                "ratio_to_single": [round(w / single, 3)
                                                    for w in run["weights_gib"]],
                                "velocity_difference": difference}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return report


def gpu() -> None:
    import torch

    from vera.media.video import read_png

    count = torch.cuda.device_count()
    prompt = "add a large red circle moving from left to right"
    work = Path(tempfile.mkdtemp(prefix="vera-parallel-gpu-"))
    base = ["-m", "vera", "edit", "--prompt", prompt, "--steps", "10", "--device", "cuda"]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    plans = [("single", 1, []), ("cfg", 2, ["--parallel", "cfg"]),
             ("sequence", 2, ["--parallel", "sequence"]),
             ("sequence_sharded", 2, ["--parallel", "sequence", "--shard-weights"])]
    if count >= 3:
        plans.append(("branch", 3, ["--parallel", "branch"]))
    finals = None
    for name, world, extra in plans:
        out = work / name
        launch = [sys.executable] if world == 1 else [torchrun, "--standalone",
                                                       "--nproc_per_node", str(world)]
        start = time.perf_counter()
        done = subprocess.run([*launch, *base, *extra, "--out", str(out)], capture_output=True,
                              text=True, cwd=REPO)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            print(json.dumps({"check": "parallel_gpu", "mode": name, "error":
                              done.stderr[-500:]}), flush=True)
            continue
        pngs = sorted((out / "final_composite").glob("*.png"))
        if finals is None:
            finals = pngs
        worst = max(int((read_png(a).int() - read_png(b).int()).abs().max())
                    for a, b in zip(pngs, finals))
        print(json.dumps({"check": "parallel_gpu", "mode": name, "processes": world,
                          "gpus": count, "seconds": round(seconds, 1),
                          "max_png_difference": worst}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("memory", "gpu"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/parallel_memory.json"))
    args = parser.parse_args()
    if args.what == "memory":
        memory(args.out)
    else:
        gpu()
    return 0


if __name__ == "__main__":
    sys.exit(main())
