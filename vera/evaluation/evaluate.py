"""`python -m vera eval`: run a model on a layered test split and report the metrics per task.

Protocol: object addition runs without a mask (as in the paper); background change gets the
sample's coarse mask (`--masks` changes that). A single-branch video-to-video baseline
(`vera.model.single.WanVideoModel`, `--baseline FILE`) is run on the same samples, seeds and steps.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..data.layout import load_manifest, load_sample
from ..edit.pipeline import edit
from ..encoders.vae import WanCodec
from ..frames import metrics
from ..media.files import relative_to, save_json
from ..sampling.sampler import sample_single
from ..sampling.settings import SamplingSettings

MASK_POLICIES = ("auto", "none", "all")  # auto: masks for background change only (the paper)


def _use_mask(task: str, policy: str) -> bool:
    return policy == "all" or (policy == "auto" and task == "background_change")


def _baseline_metrics(baseline, bundle, sample, gt: dict, settings: SamplingSettings,
                      negative: torch.Tensor) -> dict:
    codec = WanCodec(bundle.vae)
    context = bundle.text_encoder.encode([sample.instruction])
    latent = sample_single(baseline, context, negative, codec.encode_frames(gt["source"]), settings)
    output = (codec.decode_frames(latent) * 255).round().to(torch.uint8)
    preserved = gt["alpha"] == 0
    return dict(preserved_psnr=metrics.psnr(output, sample.source, preserved),
                preserved_ssim=metrics.ssim(output, sample.source, preserved),
                preserved_exact=metrics.preserved_exact_fraction(output, sample.source,
                                                                 gt["alpha"]),
                composite_psnr=metrics.psnr(output, sample.composite),
                composite_ssim=metrics.ssim(output, sample.composite),
                flicker=metrics.flicker(output))


def evaluate(data: str | Path, bundle, baseline=None, settings: SamplingSettings | None = None,
             masks: str = "auto", limit: int | None = None, progress=None) -> dict:
    """Run `bundle` (and a single-branch `baseline`, if given) on every sample of a layered split.
    settings: default the bundle's. -> {"vera": {task: mean metrics}, "baseline": {...},
    "samples": [...], "settings": {...}}"""
    settings = bundle.defaults if settings is None else settings
    data = Path(data)
    entries = load_manifest(data)[:limit]
    records = []
    negative = None
    if baseline is not None:
        negative = bundle.text_encoder.encode([settings.negative_prompt])
    for n, entry in enumerate(entries):
        sample = load_sample(data, entry)
        gt = sample.float_layers()
        mask = gt.get("mask") if _use_mask(sample.task, masks) else None
        t = time.perf_counter()
        result = edit(bundle, sample.source, sample.instruction, settings, mask_frames=mask)
        record = dict(id=sample.id, task=sample.task, instruction=sample.instruction,
                      seconds=time.perf_counter() - t,
                      sample_seconds=result.timings["sample_s"],
                      model_evaluations=result.details["model_evaluations"],
                      vera=metrics.edit_metrics(result.final, result.source, result.alpha,
                                                sample.composite, gt["alpha"],
                                                result.model_composite))
        if baseline is not None:
            record["baseline"] = _baseline_metrics(baseline, bundle, sample, gt, settings, negative)
        records.append(record)
        if progress is not None:
            progress(n + 1, len(entries))
    report = dict(settings=dict(data=str(data), **settings.to_dict(), masks=masks,
                                samples=len(records), model=bundle.name,
                                date=time.strftime("%Y-%m-%d")),
                  model_evaluations={k: sum(r["model_evaluations"][k] for r in records)
                                     for k in ("full", "cached")},
                  seconds=sum(r["seconds"] for r in records),
                  sample_seconds=sum(r["sample_seconds"] for r in records))
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
    """Write the report as JSON; its data path is recorded relative to the report's folder."""
    data = relative_to(report["settings"]["data"], Path(path).parent)
    settings = dict(report["settings"], data=data)
    return save_json(path, dict(report, settings=settings))
