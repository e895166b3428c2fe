"""The recipe that trains `vera-tiny`, the embedded default model, from nothing but this repo.

    python -m vera.training.tiny_recipe --work runs/vera-tiny          # full recipe, about 65 min
    python -m vera.training.tiny_recipe --work /tmp/t --scale smoke    # a minutes-long check of every stage

Stages (each skipped when its output exists, so an interrupted run continues):
  data      synthetic layered train split (seed 1), held-out test split (seed 2) and validation
            split (seed 3, for the choices below)
  vae       a small AutoencoderKLWan trained on the train split's videos
  t2v       a tiny Wan2.1-architecture T2V DiT trained on the composites with their instructions,
            jointly with a tiny UMT5 text encoder (stands in for the Wan2.1 + UMT5 checkpoints)
  edit_lr   (only when named) shorter Vera runs with the edit branch at 0.1x / 1x / 10x the
            base rate, compared on the validation split (see EDIT_LR_SCALES); 50 minutes
  vera      the three-branch MoT initialised from the t2v file, trained with the paper's recipe
            and the edit-branch rate edit_lr picked (EDIT_LR_PICKED when it has not run)
  baseline  a single-branch video-to-video model from the same t2v file, same data and steps
  bundle    copies the weights (fp16) and this recipe's settings into vera/assets/vera-tiny/
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from ..data.synthetic import build_dataset, vocabulary
from ..media.files import save_json
from ..model.config import VeraConfig
from ..sampling.settings import SamplingSettings
from .run import train
from .text_model import build_text_encoder
from .trainer import PAPER_BRANCH_LR_SCALE, TrainConfig
from .vae_trainer import train_vae

TINY_MODEL = VeraConfig(dim=128, num_heads=4, num_layers=4, ffn_dim=256, text_dim=64, freq_dim=64, name="vera-tiny")
# Per stage sizes. The committed vera-tiny was made with these (its recipe.json records them).
SCALES = {
    "full": dict(train_per_task=512, test_per_task=32, val_per_task=8, vae_samples=256,
                 vae_steps=2500, vae2_steps=600, vae3_steps=600, t2v_steps=2000, sweep_steps=1000,
                 vera_steps=5000, batch=16),
    "smoke": dict(train_per_task=8, test_per_task=2, val_per_task=1, vae_samples=2, vae_steps=4,
                  vae2_steps=2, vae3_steps=2, t2v_steps=4, sweep_steps=2, vera_steps=4, batch=4),
}
# cfg and alpha_cutoff were picked on a separate validation split (seed 3, 8 per task; cfg 2 / 4 / 6
# at cutoff 0.1), and so was the step cache's threshold (the largest whose every task stays within
# 0.25 dB composite PSNR and 0.01 IoU of the uncached run: bench/cache_sweep.py,
# bench/results/cache_sweep_vera_tiny_val_2026-12-06.json). The bundle stage writes them into
# recipe.json, where everything else reads them; caching stays off unless asked for.
RESOLUTION, FRAMES = (64, 64), 17  # (height, width) and clip length of the synthetic data
# Context windows: the clip it was trained on, overlapping by WINDOW_OVERLAP frames (chosen from
# bench/long_shot.py's seam measurements, BENCHMARKS.md "Long shots").
WINDOW_OVERLAP = 8
SAMPLING = SamplingSettings(steps=25, cfg=2.0, shift=3.0, sampler="unipc", negative_prompt="",
                            alpha_cutoff=0.1, cache_threshold=0.2, window=FRAMES,
                            window_overlap=WINDOW_OVERLAP)
BASE_LR = 1e-4  # the paper's 1e-5 is for fine-tuning 1.3B/14B; a tiny model from scratch takes 10x
# The paper gives the edit branch 0.1x because Wan2.1's prior is strong; vera-tiny's T2V prior is
# weak, so stage edit_lr tries these scales on the validation split and stage vera uses the best.
EDIT_LR_SCALES = (0.1, 1.0, 10.0)
# What edit_lr picked on the full recipe, 2026-11-22 (BENCHMARKS.md; its choice.json is
# bench/results/edit_lr_choice_2026-11-22.json). The default run uses it, so the choice costs its
# 50 minutes only when edit_lr is named.
EDIT_LR_PICKED = 10.0
# vera-tiny's VAE (BENCHMARKS.md, "vera-tiny's VAE and colour"). From scratch this Wan-architecture
# VAE sits at 15-16 dB for about 1,000 steps before it learns detail and colour, so phase 1 spends
# those steps on single frames cut to 32x32 crops (cheap); phases 2 and 3 (the second at half the
# rate) teach the later causal chunks on 5/9/17-frame windows. Every phase: no posterior noise, a
# quarter of each batch moving colour patches, saturated pixels weighted up, sources sampled half
# as often as the layers.
VAE_TRAINING = dict(crop=32, posterior_noise=0.0, patch_share=0.25, patch_motion=3,
                    saturation_weight=2.0, kind_weights=dict(source=0.5, edit=1.0, alpha=1.0,
                                                             composite=1.0))
VAE_PHASES = (("vae_phase1", "vae_steps", (1,), 6e-4),  # (folder, SCALES key, windows, lr)
              ("vae_phase2", "vae2_steps", (5, 9, FRAMES), 2e-4),
              ("vae", "vae3_steps", (5, 9, FRAMES), 1e-4))
BUNDLE_DIR = Path(__file__).resolve().parent.parent / "assets" / "vera-tiny"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def stage_data(work: Path, s: dict) -> None:
    splits = (("train", 1, s["train_per_task"]), ("test", 2, s["test_per_task"]),
              ("val", 3, s["val_per_task"]))
    for split, seed, count in splits:
        if not (work / "data" / split / "manifest.jsonl").exists():
            _log(f"data: building {split} split ({count} per task, seed {seed})")
            build_dataset(work / "data" / split, count, seed, FRAMES, RESOLUTION[0])


def stage_vae(work: Path, s: dict) -> None:
    """VAE_PHASES in order, each continuing from the one before; the last writes work/vae."""
    log = lambda i, n, loss: i % 50 == 0 and _log(f"vae step {i}/{n} loss {loss:.4f}")
    init = None
    for folder, steps_key, windows, lr in VAE_PHASES:
        if not (work / folder / "vae.safetensors").exists():
            _log(f"{folder}: {s[steps_key]} steps, windows {windows}")
            train_vae(work / "data" / "train", work / folder, steps=s[steps_key], windows=windows,
                      lr=lr, init=init, limit=s["vae_samples"], progress=log, **VAE_TRAINING)
        init = work / folder / "vae.safetensors"


def stage_t2v(work: Path, s: dict) -> None:
    if (work / "t2v" / "wan_t2v.safetensors").exists():
        return
    text_dir = work / "t2v" / "text_encoder_init"
    if not (text_dir / "config.json").exists():
        build_text_encoder(text_dir, vocabulary(), d_model=TINY_MODEL.text_dim)
    _log(f"t2v: {s['t2v_steps']} steps")
    cfg = TrainConfig(mode="t2v", steps=s["t2v_steps"], batch_size=s["batch"], lr=BASE_LR * 10, text_lr=BASE_LR * 10,
                      warmup_steps=100, schedule="cosine", checkpoint_every=500)
    train(cfg, work / "data" / "train", work / "t2v", work / "vae" / "vae.safetensors", text_dir,
          model_config=TINY_MODEL, train_text=True, cache_dir=work / "latent_cache")


def _stage_from_t2v(work: Path, s: dict, mode: str, out: Path | None = None, **overrides) -> Path:
    out = out or work / mode
    weights = out / f"{'vera' if mode == 'vera' else 'baseline'}.safetensors"
    if weights.exists():
        return weights
    settings = dict(mode=mode, steps=s["vera_steps"], batch_size=s["batch"], lr=BASE_LR, schedule="cosine",
                    checkpoint_every=500)
    cfg = TrainConfig(**{**settings, **overrides})
    _log(f"{out.name}: {cfg.steps} steps")
    train(cfg, work / "data" / "train", out, work / "vae" / "vae.safetensors", work / "t2v" / "text_encoder",
          init=work / "t2v" / "wan_t2v.safetensors", cache_dir=work / "latent_cache")
    return weights


def edit_lr_scales(scale: float) -> dict:
    return {**PAPER_BRANCH_LR_SCALE, "edit": scale}


def stage_edit_lr(work: Path, s: dict) -> None:
    """Train a shorter Vera run per candidate edit-branch scale, evaluate each on the validation
    split with the recipe's sampling settings, and keep the one with the best mean composite PSNR
    over the tasks (the edit layer is what the composite shows inside the matte)."""
    from ..edit.bundle import load_bundle
    from ..evaluation.evaluate import evaluate

    choice = work / "edit_lr" / "choice.json"
    if choice.exists():
        return
    results = {}
    for scale in EDIT_LR_SCALES:
        key = f"{scale:g}"
        weights = _stage_from_t2v(work, s, "vera", work / "edit_lr" / f"edit_x{key}",
                                  steps=s["sweep_steps"], branch_lr_scale=edit_lr_scales(scale))
        bundle = load_bundle(weights, "fp32", "cpu", vae=work / "vae" / "vae.safetensors",
                             text_encoder=work / "t2v" / "text_encoder")
        report = evaluate(work / "data" / "val", bundle, settings=SAMPLING)
        results[key] = {task: dict(composite_psnr=m["composite_psnr"], alpha_iou=m["alpha"]["iou"])
                        for task, m in report["vera"].items()}
        _log(f"edit_lr: edit x{key}: {results[key]}")
    picked = max(results, key=lambda k: mean_composite_psnr(results[k]))
    save_json(choice, dict(picked=float(picked), candidates=list(EDIT_LR_SCALES),
                           steps=s["sweep_steps"], data="../data/val",
                           rule="best mean composite PSNR over the tasks", results=results))


def mean_composite_psnr(by_task: dict) -> float:
    return sum(m["composite_psnr"] for m in by_task.values()) / len(by_task)


def edit_lr_choice(work: Path) -> dict:
    """Stage edit_lr's choice.json when it ran in this work folder, else the recorded pick."""
    choice = work / "edit_lr" / "choice.json"
    if choice.exists():
        return json.loads(choice.read_text())
    return dict(picked=EDIT_LR_PICKED, source="EDIT_LR_PICKED: stage edit_lr's pick on the full "
                "recipe, 2026-11-22; run --stages edit_lr to measure it again")


def picked_edit_scale(work: Path) -> float:
    return float(edit_lr_choice(work)["picked"])


def stage_vera(work: Path, s: dict) -> None:
    _stage_from_t2v(work, s, "vera", branch_lr_scale=edit_lr_scales(picked_edit_scale(work)))


def stage_baseline(work: Path, s: dict) -> None:
    # the baseline does the composite branch's job, so it gets the composite branch's learning rate
    _stage_from_t2v(work, s, "baseline", lr=BASE_LR * 10)


def stage_bundle(work: Path, s: dict, dest: Path = BUNDLE_DIR) -> None:
    from ..checkpoints.safetensors_io import atomic_save, load_tensors, read_header

    dest.mkdir(parents=True, exist_ok=True)
    for src, name in ((work / "vera" / "vera.safetensors", "vera.safetensors"), (work / "vae" / "vae.safetensors", "vae.safetensors")):
        entries, metadata = read_header(src)
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_tensors(entries).items()}
        atomic_save(tensors, dest / name, metadata)
    if (dest / "text_encoder").exists():
        shutil.rmtree(dest / "text_encoder")
    shutil.copytree(work / "t2v" / "text_encoder", dest / "text_encoder")
    # paths inside are relative to each stage's folder in the work folder
    configs = {m: json.loads((work / m / "train_config.json").read_text())
               for m in ("t2v", "vera", "baseline") if (work / m / "train_config.json").exists()}
    recipe = dict(command="python -m vera.training.tiny_recipe --work WORK --scale full", scale=s,
                  model=json.loads(TINY_MODEL.to_json()), base_lr=BASE_LR,
                  text_encoder_dim=TINY_MODEL.text_dim, train_configs=configs,
                  vae=json.loads((work / "vae" / "vae_summary.json").read_text()),
                  edit_lr=edit_lr_choice(work),
                  vae_earlier_phases=_vae_phases(work),
                  resolution=list(RESOLUTION), frames=FRAMES, sampling=SAMPLING.to_dict(),
                  latent_rgb=latent_rgb_map(dest / "vae.safetensors", work / "data" / "train"),
                  date=time.strftime("%Y-%m-%d"))
    save_json(dest / "recipe.json", recipe)
    _log(f"bundle: wrote {dest}")


def _vae_phases(work: Path) -> dict:
    """The VAE phases before the last (which is recipe.json's `vae`): each one's settings and
    reconstruction PSNR from its summary, without the config."""
    summaries = {f.name: f / "vae_summary.json" for f in sorted(work.glob("vae_phase*"))}
    return {name: {k: v for k, v in json.loads(path.read_text()).items() if k != "config"}
            for name, path in summaries.items() if path.exists()}


def latent_rgb_map(vae_file: Path, data: Path, samples: int = 48) -> dict:
    """The preview map of a VAE (`vera.sampling.preview.fit_latent_rgb`), fitted on the layers of
    the first samples of a layered split: {"factors": [16 x 3], "bias": [3]}."""
    from ..data.layout import load_manifest, load_sample
    from ..encoders.vae import WanCodec, load_vae
    from ..sampling.preview import fit_latent_rgb

    codec = WanCodec(load_vae(vae_file))
    clips = []
    for entry in load_manifest(data)[:samples]:
        layers = load_sample(data, entry).float_layers()
        clips += [layers["source"], layers["edit"], layers["composite"]]
    factors, bias = fit_latent_rgb(codec, clips)
    return dict(factors=factors.tolist(), bias=bias.tolist())


STAGES = {"data": stage_data, "vae": stage_vae, "t2v": stage_t2v, "edit_lr": stage_edit_lr,
          "vera": stage_vera, "baseline": stage_baseline, "bundle": stage_bundle}
DEFAULT_STAGES = [name for name in STAGES if name not in ("edit_lr", "bundle")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vera.training.tiny_recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="working folder for data, stages and checkpoints")
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=DEFAULT_STAGES,
                        help="stages to run, in order (default: %(default)s; edit_lr re-measures "
                             "EDIT_LR_PICKED; bundle writes into the package)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    for name in args.stages:
        start = time.perf_counter()
        STAGES[name](work, SCALES[args.scale])
        _log(f"stage {name} done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
