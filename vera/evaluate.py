"""`python -m vera eval`: run a model on a layered test split and report the metrics per task.

Protocol: object addition runs without a mask (as in the paper); background change gets the
sample's coarse mask (`--masks` changes that). A single-branch video-to-video baseline
(`vera.single.WanVideoModel`, `--baseline FILE`) is run on the same samples, seeds and steps.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from . import metrics
from .data.layout import load_manifest, load_sample
from .pipeline import edit, frames_to_video, video_to_frames
from .sampling import sample_single
from . import vae as vae_ops


def _use_mask(task: str, policy: str) -> bool:
    return policy == "all" or (policy == "auto" and task == "background_change")


def evaluate(data: str | Path, bundle, baseline=None, steps: int = 25, cfg: float = 4.0, shift: float = 3.0,
             seed: int = 0, sampler: str = "unipc", masks: str = "auto", limit: int | None = None, alpha_cutoff: float = 0.0,
             progress=None) -> dict:
    """-> {"vera": {task: mean metrics}, "baseline": {...}, "samples": [...], "settings": {...}}"""
    data = Path(data)
    entries = load_manifest(data)[:limit]
    records = []
    negative = bundle.text_encoder.encode([""]) if baseline is not None else None
    for n, entry in enumerate(entries):
        sample = load_sample(data, entry)
        gt = sample.float_layers()
        mask = gt.get("mask") if _use_mask(sample.task, masks) else None
        t = time.perf_counter()
        result = edit(sample.source, sample.instruction, bundle.model, bundle.vae, bundle.text_encoder,
                      negative_prompt="", mask_frames=mask, steps=steps, cfg=cfg, shift=shift, seed=seed, sampler=sampler,
                      alpha_cutoff=alpha_cutoff)
        record = dict(id=sample.id, task=sample.task, instruction=sample.instruction, seconds=time.perf_counter() - t,
                      vera=metrics.edit_metrics(result.final, result.source, result.alpha, sample.composite, gt["alpha"],
                                                result.model_composite))
        if baseline is not None:
            context = bundle.text_encoder.encode([sample.instruction])
            source_latent = vae_ops.encode(bundle.vae, frames_to_video(gt["source"]))
            latent = sample_single(baseline, context, negative, source_latent, steps, cfg, shift, seed, sampler)
            output = (video_to_frames(vae_ops.decode(bundle.vae, latent)) * 255).round().to(torch.uint8)
            preserved = gt["alpha"] == 0
            record["baseline"] = dict(preserved_psnr=metrics.psnr(output, sample.source, preserved),
                                      preserved_ssim=metrics.ssim(output, sample.source, preserved),
                                      preserved_exact=metrics.preserved_exact_fraction(output, sample.source, gt["alpha"]),
                                      composite_psnr=metrics.psnr(output, sample.composite),
                                      composite_ssim=metrics.ssim(output, sample.composite),
                                      flicker=metrics.flicker(output))
        records.append(record)
        if progress is not None:
            progress(n + 1, len(entries))
    report = dict(settings=dict(data=str(data), steps=steps, cfg=cfg, shift=shift, seed=seed, sampler=sampler,
                                masks=masks, alpha_cutoff=alpha_cutoff, samples=len(records), model=bundle.name, date=time.strftime("%Y-%m-%d")))
    for who in ("vera", "baseline"):
        by_task = {}
        for task in sorted({r["task"] for r in records}):
            rows = [r[who] for r in records if r["task"] == task and who in r]
            if rows:
                by_task[task] = dict(count=len(rows), **metrics.mean_metrics(rows))
        if by_task:
            report[who] = by_task
    report["samples"] = records
    return report


def table(report: dict) -> str:
    """A printed summary: one row per model and task."""
    fmt = lambda v: "n/a" if v is None else ("exact" if v == float("inf") else f"{v:.3f}" if v < 2 else f"{v:.2f}")
    lines = [f"{'model':9} {'task':18} {'n':>3} {'comp PSNR':>9} {'pres PSNR':>9} {'pres exact':>10} {'alpha IoU':>9} "
             f"{'SAD':>7} {'flicker':>7}"]
    for who in ("vera", "baseline"):
        for task, m in report.get(who, {}).items():
            alpha = m.get("alpha") or {}
            lines.append(f"{who:9} {task:18} {m['count']:>3} {fmt(m.get('composite_psnr')):>9} {fmt(m.get('preserved_psnr')):>9} "
                         f"{fmt(m.get('preserved_exact')):>10} {fmt(alpha.get('iou')):>9} {fmt(alpha.get('sad')):>7} "
                         f"{fmt((m.get('flicker') or {}).get('mean_abs_frame_diff')):>7}")
    return "\n".join(lines)


def write_report(report: dict, path: str | Path) -> Path:
    from .video import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(metrics.json_safe(report), indent=2))
    return path
