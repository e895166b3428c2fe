"""Does a model whose fp32 weights are mapped straight from a safetensors file (not 64-byte aligned)
step slower on the CPU than the same model with its weights copied into aligned memory?

    python bench/aligned_weights.py            # prints a markdown table row per case

A random Vera model (dim 1536, 12 heads, 2 layers: Wan2.1-1.3B's width) is saved in fp32, loaded
with `load_model` (fp32 file -> fp32 model: tensors stay where safetensors mapped them), and timed
for one forward at 3 x 1,560 tokens; then every parameter is cloned (aligned allocations) and timed
again. Median of 5 after a warm-up, alternating the two so drift hits both.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vera.checkpoints.weights import load_model, save_vera  # noqa: E402
from vera.model.config import VeraConfig  # noqa: E402
from vera.model.mot import VeraModel  # noqa: E402

CONFIG = VeraConfig(num_layers=2, text_dim=4096)
LATENT = (1, 16, 5, 24, 52)  # 17 frames of 416x192 -> 1,560 tokens per branch


def misaligned_share(model: torch.nn.Module) -> float:
    params = list(model.parameters())
    return sum(p.data_ptr() % 64 != 0 for p in params) / len(params)


def aligned_copy(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    return model


def main() -> int:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model = VeraModel(CONFIG).eval()
        path = save_vera(model, Path(tmp) / "vera_fp32.safetensors")
        del model
        mapped = load_model(path, "fp32").eval()
        copied = aligned_copy(load_model(path, "fp32").eval())
        g = torch.Generator().manual_seed(0)
        lat = [torch.randn(LATENT, generator=g) for _ in range(4)]
        ctx = torch.randn(1, 512, CONFIG.text_dim, generator=g)
        t = torch.tensor([500.0])
        times = {"mapped": [], "copied": []}
        with torch.no_grad():
            outputs = {name: m(*lat[:3], t, ctx, lat[3]) for name, m in (("mapped", mapped),
                                                                          ("copied", copied))}
            for _ in range(5):
                for name, m in (("mapped", mapped), ("copied", copied)):
                    start = time.perf_counter()
                    m(*lat[:3], t, ctx, lat[3])
                    times[name].append(time.perf_counter() - start)
        diff = max(float((a - b).abs().max()) for a, b in zip(outputs["mapped"], outputs["copied"]))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print("| weights | misaligned tensors | median s / forward | max abs output difference |")
        print("|---|---|---|---|")
        for name, m in (("mapped", mapped), ("copied", copied)):
            print(f"| {name} | {misaligned_share(m):.0%} | {statistics.median(times[name]):.3f} | "
                  f"{diff:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
