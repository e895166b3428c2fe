"""Step caching on a layered split: model evaluations saved vs quality lost, per threshold.

    python bench/cache_sweep.py --data runs/vera-tiny/data/val --steps 25 \
        --thresholds 0.05 0.1 0.2 0.3 0.5 --out sweep.json

Runs `python -m vera eval`'s evaluation (vera-tiny, its recipe's sampling settings, same seeds)
once uncached and once per threshold, in one process, and reports per threshold and task: composite
PSNR against the ground truth, object IoU, the share of untouched pixels bit-exact, the model
evaluations computed and skipped, and the wall-clock time of the whole edits and of their sampling
alone; then the differences from the uncached run. Calibrate on the validation split (seed 3);
report on the test split (seed 2).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _summary(report: dict) -> dict:
    """The numbers the sweep compares, per task and overall."""
    tasks = {task: dict(composite_psnr=m["composite_psnr"], preserved_exact=m["preserved_exact"],
                        iou=(m.get("alpha") or {}).get("iou"))
             for task, m in report["vera"].items()}
    return dict(tasks=tasks, model_evaluations=report["model_evaluations"],
                seconds=round(report["seconds"], 2),
                sample_seconds=round(report["sample_seconds"], 2))


def _deltas(row: dict, uncached: dict) -> dict:
    full = row["model_evaluations"]["full"]
    total = full + row["model_evaluations"]["cached"]
    return dict(
        fewer_evaluations=round(total / full, 3),
        wall_clock_ratio=round(uncached["seconds"] / row["seconds"], 3),
        sampling_wall_clock_ratio=round(uncached["sample_seconds"] / row["sample_seconds"], 3),
        composite_psnr_change={
            t: round(m["composite_psnr"] - uncached["tasks"][t]["composite_psnr"], 3)
            for t, m in row["tasks"].items()},
        iou_change={t: round(m["iou"] - uncached["tasks"][t]["iou"], 4)
                    for t, m in row["tasks"].items() if m["iou"] is not None},
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a layered split")
    parser.add_argument("--steps", type=int, default=None, help="default: vera-tiny's recipe")
    parser.add_argument("--thresholds", type=float, nargs="+",
                        default=[0.05, 0.1, 0.15, 0.2, 0.3, 0.5])
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
    parser.add_argument("--label", default=None,
                        help="how the split was made, recorded instead of its path (e.g. "
                             "'python -m vera data build --per-task 8 --seed 3')")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    from vera.edit.bundle import load_bundle
    from vera.evaluation.evaluate import evaluate
    from vera.media.files import relative_to, save_json
    from vera.sampling.settings import CACHE_RECOMMENDED

    bundle = load_bundle("vera-tiny")
    base = bundle.defaults.updated(steps=args.steps)
    runs = [("off", None)] + [(CACHE_RECOMMENDED, t) for t in args.thresholds]
    rows = []
    for method, threshold in runs:
        settings = base.updated(cache_method=method, cache_threshold=threshold)
        report = evaluate(args.data, bundle, settings=settings, limit=args.limit)
        samples = report["settings"]["samples"]
        row = dict(cache_method=method, cache_threshold=threshold, **_summary(report))
        if rows:
            row.update(_deltas(row, rows[0]))
        rows.append(row)
        print(f"{method:9} {threshold or 0:5.2f} evaluations {row['model_evaluations']} "
              f"{row['seconds']:7.1f} s (sampling {row['sample_seconds']:6.1f} s) " + " ".join(
                  f"{t}: {m['composite_psnr']:.2f} dB IoU {m['iou']:.3f} exact "
                  f"{m['preserved_exact']:.3f}" for t, m in row["tasks"].items()), flush=True)
    result = dict(data=args.label or relative_to(args.data, REPO), steps=base.steps,
                  model="vera-tiny",
                  settings={k: v for k, v in base.to_dict().items() if not k.startswith("cache")},
                  cache_start=base.cache_start, cache_end=base.cache_end, samples=samples,
                  runs=rows, date=time.strftime("%Y-%m-%d"))
    if args.out:
        save_json(args.out, result, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
