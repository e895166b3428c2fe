"""Step caching: skip whole model evaluations while the latents barely move.

The rule is EasyCache's (training-free, decided at run time; ComfyUI core ships it for Wan2.1).
After two computed steps it knows the model's transformation rate k = |change of output| / |change
of input| between them. At each later step it predicts the output's relative change as
k * |x - x_last| / |output_last| (x_last: the input of the last computed step) and adds it up;
while the sum stays below the threshold the step is skipped and every pass's output is its last
input-to-output residual added to the current input. The first computed step after a skip starts
the sum again.

Fitted for Vera's joint model:
- one decision per step covers the three branches (edit, alpha, composite meet in one joint
  attention every layer, so one branch cannot skip alone) and both CFG passes; it is taken on the
  cond pass, over the three latents together;
- each pass (cond, uncond) keeps its own residual, whether they ran as one batch or one after the
  other;
- the first and last steps always run, and nothing is skipped outside [start, end) of the steps.

TeaCache and MagCache decide from tables fitted per model and schedule (a polynomial on the time
embedding's change; residual-norm ratios per step); for Vera those tables would have to be fitted on
real Vera weights, which this project cannot load yet, while EasyCache's rule carries over as it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .settings import SamplingSettings


def _mean_abs(x: torch.Tensor) -> float:
    return float(x.abs().mean())


@dataclass
class StepCache:
    """One sampling run's cache state. Latents and outputs are the three branches concatenated on
    channels, `[B, 3C, T', h, w]`; passes are named "cond" and "uncond".

    Use: `if cache.skips(step, x): outputs = cache.reuse(x)` else run the model and
    `cache.record(x, outputs)`."""

    threshold: float
    start: float
    end: float
    steps: int
    _x_last: torch.Tensor | None = field(default=None, repr=False)
    _out_last: torch.Tensor | None = field(default=None, repr=False)
    _out_norm: float = 0.0
    _rate: float | None = None  # k: output change per input change, from the last two computed
    _accumulated: float = 0.0
    _residuals: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: SamplingSettings) -> "StepCache | None":
        """The cache the settings ask for (easycache, the one method), or None when it is off."""
        if settings.cache_method == "off":
            return None
        return cls(settings.cache_threshold, settings.cache_start, settings.cache_end,
                   settings.steps)

    def may_skip(self, step: int) -> bool:
        """Whether `step` (0-based) lies where skipping is allowed: never the first or last step,
        only within [start, end) of the run."""
        if step == 0 or step >= self.steps - 1:
            return False
        return self.start <= step / self.steps < self.end

    def skips(self, step: int, x: torch.Tensor) -> bool:
        """Decide `step` for every pass: True means reuse the residuals (call `reuse`)."""
        if not self.may_skip(step) or self._rate is None or self._out_norm == 0.0:
            return False
        predicted = self._rate * _mean_abs(x - self._x_last) / self._out_norm
        self._accumulated += predicted
        return self._accumulated < self.threshold

    def reuse(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every pass's output at input x, from its last residual."""
        return {name: x + residual for name, residual in self._residuals.items()}

    def record(self, x: torch.Tensor, outputs: dict[str, torch.Tensor]) -> None:
        """After a computed step: outputs {"cond": ..., "uncond": ...} (uncond absent without
        guidance), each `[B, 3C, T', h, w]`."""
        out = outputs["cond"]
        if self._x_last is not None:
            input_change = _mean_abs(x - self._x_last)
            if input_change > 0:
                self._rate = _mean_abs(out - self._out_last) / input_change
        self._x_last, self._out_last, self._out_norm = x, out, _mean_abs(out)
        self._residuals = {name: o - x for name, o in outputs.items()}
        self._accumulated = 0.0

    def summary(self, evaluations: dict) -> str:
        """One line for the log from {"full": N, "cached": M} model evaluations."""
        full, total = evaluations["full"], evaluations["full"] + evaluations["cached"]
        fewer = total / full if full else 1.0
        return (f"Vera step cache (easycache, threshold {self.threshold:g}): computed {full} of "
                f"{total} model evaluations over {self.steps} steps ({fewer:.2f}x fewer)")
