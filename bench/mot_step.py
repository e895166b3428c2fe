"""One denoising step of the Vera MoT vs three single-branch diffusers Wan forwards of the same size.

Each case runs in a fresh subprocess so its peak resident memory is its own.
    python bench/mot_step.py                 # all cases, prints a markdown table
    python bench/mot_step.py --case mot      # one case, prints JSON
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SMALL = dict(dim=512, num_heads=8, num_layers=8, ffn_dim=1536, text_dim=4096, freq_dim=256)
LATENT = (1, 16, 5, 32, 32)  # 17 frames of 256x256 video -> 1280 tokens per branch
CASES = {
    "mot": "Vera MoT, joint attention (3 x 1280 tokens in one attention)",
    "mot_separate": "Vera MoT, cross-branch attention off",
    "diffusers_x3": "3 x diffusers WanTransformer3DModel forward",
    "mot_cfg": "Vera MoT, joint attention, cond+uncond batched (B=2)",
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(case: str, repeats: int) -> dict:
    import torch

    import vera  # noqa: F401
    from vera.model.config import VeraConfig
    from vera.model.mot import VeraModel

    torch.manual_seed(0)
    batch = 2 if case == "mot_cfg" else 1
    lat = [torch.randn(batch, *LATENT[1:]) for _ in range(4)]
    t = torch.full((batch,), 500.0)
    ctx = torch.randn(batch, 512, SMALL["text_dim"])
    if case.startswith("mot"):
        model = VeraModel(VeraConfig(**SMALL)).eval()
        fn = lambda: model(*lat[:3], t, ctx, lat[3], cross_branch_attention=case != "mot_separate")
    else:
        from diffusers import WanTransformer3DModel

        models = [WanTransformer3DModel(num_attention_heads=8, attention_head_dim=64, text_dim=4096, freq_dim=256,
                                        ffn_dim=1536, num_layers=8).eval() for _ in range(3)]
        fn = lambda: [m(x, t, ctx).sample for m, x in zip(models, lat[:3])]
    base = peak_rss_mb()
    with torch.no_grad():
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return dict(case=case, median_s=sorted(times)[len(times) // 2], peak_rss_mb=peak_rss_mb(),
                rss_after_build_mb=base, threads=torch.get_num_threads())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.repeats)))
        return
    rows = []
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", case, "--repeats", str(args.repeats)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    print(f"machine: {platform.processor() or platform.machine()}, {rows[0]['threads']} threads, "
          f"python {platform.python_version()}, date {time.strftime('%Y-%m-%d')}")
    print(f"config: {SMALL}, latent {LATENT}\n")
    print("| case | median s / step | peak RSS MB |\n|---|---|---|")
    for r in rows:
        print(f"| {CASES[r['case']]} | {r['median_s']:.3f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
