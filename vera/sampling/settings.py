"""The settings of one edit's sampling, in one frozen, validated object.

`SamplingSettings()` holds Wan2.1's defaults (what Vera checkpoints start from); a bundle brings
its own (vera-tiny's come from its `recipe.json`). The CLI, the nodes, `edit()`, `sample()` and
`evaluate()` all take this object, so a bad value gets the same message wherever it comes from.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

from .. import VeraError

SAMPLERS = ("unipc", "euler", "lcm")  # lcm: few steps for step-distilled weights (sampling.lcm)
BATCH_CFG = ("auto", "on", "off")  # cond and uncond as one batch: when it fits / always / never
MAX_STEPS = 1000
CFG_RANGE = (1.0, 30.0)
SHIFT_RANGE = (0.0, 100.0)  # exclusive of 0
MAX_SEED = 2**64 - 1
CACHE_METHODS = ("off", "easycache")  # step caching (vera.sampling.cache); "off" runs every step
CACHE_RECOMMENDED = "easycache"  # what `--cache on` picks
CACHE_THRESHOLD_RANGE = (0.0, 5.0)  # exclusive of 0
MAX_WINDOW = 1001  # context window, source frames (Wan2.1 trains at 81)
WINDOW_FUSE = ("linear", "pyramid")  # how overlapping windows are blended (sampling.windows)
WINDOW_NOISE = ("freenoise", "independent")  # noise past the first window: repeated or fresh


# Wan2.1's usual negative prompt (English rendering of the one its generate.py ships)
WAN_NEGATIVE_PROMPT = (
    "bright colors, overexposed, static, blurred details, subtitles, style, artwork, painting, "
    "picture, still, overall gray, worst quality, low quality, JPEG artifacts, ugly, deformed, "
    "extra fingers, poorly drawn hands, poorly drawn face, malformed limbs, messy background"
)


class SettingsError(VeraError, ValueError):
    """A sampling setting out of range; the message names the setting, the value and the range."""


def _whole(name: str, value, low: int, high: int, what: str) -> int:
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or not low <= value <= high:
        raise SettingsError(
            f"{name} = {value!r}: must be a whole number from {low} to {high} ({what})"
        )
    return int(value)


def _number(name: str, value, low: float, high: float, what: str, low_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bounds = f"above {low:g} and at most {high:g}" if low_open else f"from {low:g} to {high:g}"
        raise SettingsError(f"{name} = {value!r}: must be a finite number {bounds} ({what})")
    return float(value)


def check_value(name: str, value):
    """Validate one setting by name; returns it in its canonical type. Nodes that take a single
    setting (e.g. Decode Layers' alpha_cutoff) use this; the dataclass uses it for every field."""
    if name == "steps":
        return _whole(name, value, 1, MAX_STEPS, "denoising steps; Wan uses 50")
    if name == "cfg":
        return _number(name, value, *CFG_RANGE, "guidance scale; 1 turns guidance off")
    if name == "shift":
        return _number(
            name,
            value,
            *SHIFT_RANGE,
            "flow-matching schedule shift; Wan uses 3 to 5",
            low_open=True,
        )
    if name == "seed":
        return _whole(name, value, 0, MAX_SEED, "noise seed")
    if name == "sampler":
        if value not in SAMPLERS:
            raise SettingsError(f"sampler = {value!r}: must be one of {', '.join(SAMPLERS)}")
        return value
    if name == "batch_cfg":
        value = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
        if value not in BATCH_CFG:
            raise SettingsError(f"batch_cfg = {value!r}: must be one of {', '.join(BATCH_CFG)} "
                                "(auto: batched when it fits in free memory)")
        return value
    if name == "negative_prompt":
        if not isinstance(value, str):
            raise SettingsError(f"negative_prompt = {value!r}: must be text")
        return value
    if name == "alpha_cutoff":
        return _number(name, value, 0.0, 1.0, "matte values below it count as untouched")
    if name == "cache_method":
        if value not in CACHE_METHODS:
            raise SettingsError(f"cache_method = {value!r}: must be one of "
                                f"{', '.join(CACHE_METHODS)} (off: every step runs the model)")
        return value
    if name == "cache_threshold":
        return _number(name, value, *CACHE_THRESHOLD_RANGE,
                       "how much accumulated change a skipped step may carry; higher skips more",
                       low_open=True)
    if name in ("cache_start", "cache_end"):
        return _number(name, value, 0.0, 1.0, "a fraction of the steps")
    if name == "window":
        value = _whole(name, value, 0, MAX_WINDOW, "context window in source frames; 0 = none")
        if value and (value < 5 or (value - 1) % 4):
            low = max(5, value - (value - 1) % 4)
            raise SettingsError(
                f"window = {value}: a context window must be 1 + 4k source frames, at least 5 "
                f"(the VAE packs 4 frames into each latent frame), e.g. {low} or {low + 4}; "
                "0 turns windows off")
        return value
    if name == "window_overlap":
        return _whole(name, value, 0, MAX_WINDOW, "frames shared by neighbouring windows")
    if name == "window_fuse":
        if value not in WINDOW_FUSE:
            raise SettingsError(f"window_fuse = {value!r}: must be one of {', '.join(WINDOW_FUSE)}"
                                " (linear: ramps over the overlap; pyramid: a triangle per window)")
        return value
    if name == "window_noise":
        if value not in WINDOW_NOISE:
            raise SettingsError(f"window_noise = {value!r}: must be one of "
                                f"{', '.join(WINDOW_NOISE)}")
        return value
    raise SettingsError(f"{name!r} is not a sampling setting; known: {', '.join(FIELDS)}")


@dataclass(frozen=True)
class SamplingSettings:
    """steps, cfg, shift, seed and sampler drive the flow-matching sampler
    (`vera.sampling.sampler`); batch_cfg runs the cond and uncond passes as one batch;
    negative_prompt is the text of the uncond pass (used when cfg > 1); alpha_cutoff sets decoded
    matte values below it to 0. cache_method, cache_threshold, cache_start, cache_end: step
    caching (`vera.sampling.cache`), which may skip model evaluations only between those fractions
    of the steps; the defaults are EasyCache's published ones for Wan2.1 (bundles bring their own
    calibrated threshold). window, window_overlap (source frames), window_fuse, window_noise:
    context windows for clips longer than `window` (`vera.sampling.windows`); window 0 samples
    the clip in one piece."""

    steps: int = 50
    cfg: float = 5.0
    shift: float = 5.0
    seed: int = 0
    sampler: str = "unipc"
    batch_cfg: str = "auto"
    negative_prompt: str = WAN_NEGATIVE_PROMPT
    alpha_cutoff: float = 0.0
    cache_method: str = "off"
    cache_threshold: float = 0.2
    cache_start: float = 0.15
    cache_end: float = 0.95
    window: int = 81
    window_overlap: int = 24
    window_fuse: str = "linear"
    window_noise: str = "freenoise"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check_value(f.name, getattr(self, f.name)))
        if self.cache_start >= self.cache_end:
            raise SettingsError(
                f"cache_start = {self.cache_start:g} and cache_end = {self.cache_end:g}: the "
                "start must come before the end (fractions of the steps, e.g. 0.15 and 0.95)"
            )
        if self.window and self.window_overlap > self.window - 4:
            raise SettingsError(
                f"window_overlap = {self.window_overlap} with window = {self.window}: the "
                f"overlap must be shorter than the window by at least one latent frame (4 "
                f"frames), so at most {self.window - 4}; a quarter to a third of the window "
                "is usual")

    @property
    def guided(self) -> bool:
        """Whether the uncond pass runs (cfg above 1)."""
        return self.cfg != 1.0

    def updated(self, **changes) -> "SamplingSettings":
        """A validated copy with the given fields changed; None means "keep" (unset CLI flags)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "settings") -> "SamplingSettings":
        """From a JSON object (e.g. a bundle's recipe.json); unknown keys are an error."""
        if not isinstance(data, dict):
            raise SettingsError(f"{source}: sampling settings must be a JSON object, got {data!r}")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise SettingsError(
                f"{source}: unknown sampling settings {unknown}; known: {', '.join(FIELDS)}"
            )
        return cls(**data)


FIELDS = tuple(f.name for f in dataclasses.fields(SamplingSettings))


def check_prompt(prompt, allow_empty: bool = False, name: str = "prompt") -> str:
    """The edit instruction: text, and not blank unless an unconditional run is asked for on
    purpose (a blank instruction lets the model change most of the frame)."""
    if not isinstance(prompt, str):
        raise SettingsError(f"{name} must be text, got {prompt!r}")
    if not prompt.strip() and not allow_empty:
        raise SettingsError(
            f"{name} is empty: Vera edits what the instruction asks for, and with "
            "none it changes most of the frame; write the edit (e.g. 'add a red "
            "ball bouncing from left to right'), or ask for an unconditional run "
            "on purpose (--allow-empty-prompt)"
        )
    return prompt


WAN_DEFAULTS = SamplingSettings()
