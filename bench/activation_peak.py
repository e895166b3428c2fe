"""Peak memory of one Vera forward above its weights, measured on this CPU, and the linear fit
`vera.sampling.plan` uses (ACTIVATION_FIT, VAE_DECODE_BYTES_PER_PIXEL).

    python bench/activation_peak.py            # every case in a fresh process, then the fits

A case builds a model of a real width (Wan2.1-1.3B: dim 1536, ffn 8960; 14B: 5120, 13824) with
few layers (activations are freed layer by layer, so the peak does not grow with depth), resets
the process's peak RSS (/proc/self/clear_refs 5), runs one forward under no_grad at a token count
and reports the peak above the RSS before it. The VAE cases decode two latent frames with the
full-size Wan2.1 VAE (random weights) at three sizes. Fits are least squares; the table shows
each case's measurement against the fitted estimate.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WIDTHS = {"1.3B": dict(dim=1536, num_heads=12, ffn_dim=8960), "14B": dict(dim=5120, num_heads=40,
                                                                          ffn_dim=13824)}
# (width, layers, dtype bytes, latent (T', h, w) -> tokens per branch = T' * h/2 * w/2)
CASES = [("1.3B", 2, 4, (2, 24, 40)), ("1.3B", 2, 4, (2, 48, 40)), ("1.3B", 2, 4, (4, 48, 40)),
         ("1.3B", 2, 2, (2, 24, 40)), ("1.3B", 2, 2, (2, 48, 40)), ("1.3B", 2, 2, (4, 48, 40)),
         ("14B", 1, 2, (2, 16, 30)), ("14B", 1, 2, (2, 32, 30)), ("14B", 1, 2, (4, 32, 30))]
VAE_SIZES = [(128, 128), (256, 256), (256, 448)]


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak() -> None:
    """Hand freed heap memory back to the OS (so the forward cannot hide in it), then restart the
    process's high-water mark."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def run_model(width: str, layers: int, element: int, latent: tuple) -> dict:
    import torch

    from vera.model.config import VeraConfig
    from vera.model.mot import VeraModel

    dtype = torch.float32 if element == 4 else torch.bfloat16
    config = VeraConfig(**WIDTHS[width], num_layers=layers)
    torch.manual_seed(0)
    with torch.device("meta"):  # made straight in its dtype: no fp32 copy freed before measuring
        model = VeraModel(config).to(dtype)
    model = model.to_empty(device="cpu").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    lat = [torch.randn(1, 16, *latent) for _ in range(4)]
    context = torch.randn(1, 512, config.text_dim)
    t = torch.tensor([500.0])
    tokens = latent[0] * latent[1] // 2 * latent[2] // 2
    before = rss_kb("VmRSS")
    reset_peak()
    with torch.no_grad():
        model(*lat[:3], t, context, lat[3])
    peak = rss_kb("VmHWM")
    return dict(width=width, element=element, tokens=tokens, dim=config.dim, ffn=config.ffn_dim,
                peak_bytes=(peak - before) * 1024)


def run_vae(height: int, width: int) -> dict:
    import torch
    from diffusers import AutoencoderKLWan

    from vera.encoders import vae as vae_ops

    torch.manual_seed(0)
    vae = AutoencoderKLWan().eval()
    latent = torch.randn(1, 16, 2, height // 8, width // 8)
    before = rss_kb("VmRSS")
    reset_peak()
    vae_ops.decode_raw(vae, latent)
    peak = rss_kb("VmHWM")
    return dict(height=height, width=width, pixels=height * width,
                peak_bytes=(peak - before) * 1024)


def lstsq(rows, targets):
    import torch

    a = torch.tensor(rows, dtype=torch.float64)
    b = torch.tensor(targets, dtype=torch.float64).unsqueeze(1)
    return torch.linalg.lstsq(a, b).solution.squeeze(1).tolist()


def main() -> int:
    if len(sys.argv) > 1:
        spec = json.loads(sys.argv[1])
        print(json.dumps(run_vae(*spec) if len(spec) == 2 else run_model(*spec)))
        return 0
    results = []
    for spec in [list(c) for c in CASES] + [list(s) for s in VAE_SIZES]:
        out = subprocess.run([sys.executable, __file__, json.dumps(spec)], capture_output=True,
                             text=True)
        if out.returncode:
            raise SystemExit(out.stderr[-2000:])
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    fits = {}
    for element in (2, 4):
        rows = [r for r in results if r.get("element") == element]
        if element == 2:  # two widths: base + tokens * (a * dim + b * ffn)
            coef = lstsq([[1, 3 * r["tokens"] * r["dim"], 3 * r["tokens"] * r["ffn"]]
                          for r in rows],
                         [r["peak_bytes"] for r in rows])
            fits[element] = dict(base=coef[0], dim=coef[1], ffn=coef[2])
        else:  # one width: the per-token figure, split between dim and ffn as in the bf16 fit
            ratio = fits.get(2, {"dim": 1.0, "ffn": 0.0})
            unit = lambda r: 3 * r["tokens"] * (r["dim"] * ratio["dim"] + r["ffn"] * ratio["ffn"])
            coef = lstsq([[1, unit(r)] for r in rows], [r["peak_bytes"] for r in rows])
            fits[element] = dict(base=coef[0], dim=coef[1] * ratio["dim"],
                                 ffn=coef[1] * ratio["ffn"])
    out = Path(__file__).resolve().parent / "results" / "activation_peak.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    vae_rows = [r for r in results if "pixels" in r]
    base, pixel = lstsq([[1, r["pixels"]] for r in vae_rows], [r["peak_bytes"] for r in vae_rows])
    print("\nACTIVATION_FIT =", json.dumps(fits))
    print("VAE_DECODE_FIT =", json.dumps(dict(base=base, pixel=pixel)))
    print("\n| width | dtype bytes | tokens / branch | measured GB | fitted GB | error |")
    print("|---|---|---|---|---|---|")
    for r in results:
        if "pixels" in r:
            est = base + pixel * r["pixels"]
            label = f"| VAE decode {r['width']}x{r['height']} | 4 | - "
        else:
            f = fits[r["element"]]
            est = f["base"] + 3 * r["tokens"] * (f["dim"] * r["dim"] + f["ffn"] * r["ffn"])
            label = f"| {r['width']} | {r['element']} | {r['tokens']} "
        print(f"{label}| {r['peak_bytes'] / 2**30:.3f} | {est / 2**30:.3f} | "
              f"{100 * (est - r['peak_bytes']) / r['peak_bytes']:+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
