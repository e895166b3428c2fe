"""Speed options: Vera Cache (step caching) for the Vera Sampler.

Our socket: VERA_CACHE, the step-caching settings (`SamplingSettings` cache_* fields), checked here.
"""
from __future__ import annotations

from ..vera.sampling.settings import (
    CACHE_METHODS,
    CACHE_RECOMMENDED,
    CACHE_THRESHOLD_RANGE,
    WAN_DEFAULTS,
    SamplingSettings,
)
from .handles import VERA_CACHE

CATEGORY = "Vera/sampling"


class VeraCache:
    DESCRIPTION = ("Step caching for the Vera Sampler: while the latents barely change between "
                   "steps, skip the model and reuse its last output change (EasyCache's rule; one "
                   "decision for all three layers and both guidance passes). Fewer model "
                   "evaluations, a slightly different result; the saving is logged and written to "
                   "settings.json.")
    CATEGORY = CATEGORY
    FUNCTION = "options"
    RETURN_TYPES = (VERA_CACHE,)
    RETURN_NAMES = ("cache",)
    OUTPUT_TOOLTIPS = ("Connect to the Vera Sampler's cache input.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "cache_method": (list(CACHE_METHODS[1:]), {
                    "default": CACHE_RECOMMENDED,
                    "tooltip": "easycache: skips a step while the predicted change of the model's "
                               "output, added up since the last computed step, stays under the "
                               "threshold."}),
                "cache_threshold": ("FLOAT", {
                    "default": WAN_DEFAULTS.cache_threshold, "min": 0.001,
                    "max": CACHE_THRESHOLD_RANGE[1], "step": 0.005,
                    "tooltip": "Higher skips more steps and changes the result more. 0.2 is "
                               "EasyCache's value for Wan2.1, not yet checked on real Vera "
                               "weights; vera-tiny's, calibrated on its validation split, is "
                               "also 0.2 (README, Speed)."}),
                "cache_start": ("FLOAT", {
                    "default": WAN_DEFAULTS.cache_start, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "Fraction of the steps before which every step runs the model (the "
                               "first steps set the layout)."}),
                "cache_end": ("FLOAT", {
                    "default": WAN_DEFAULTS.cache_end, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "Fraction of the steps from which every step runs the model again "
                               "(the last steps set the detail)."}),
            },
        }

    def options(self, cache_method, cache_threshold, cache_start, cache_end):
        chosen = dict(cache_method=cache_method, cache_threshold=cache_threshold,
                      cache_start=cache_start, cache_end=cache_end)
        SamplingSettings(**chosen)  # every value (and start before end) checked here, by name
        return (chosen,)


NODES = {
    "VeraCache": ("Vera Cache", VeraCache),
}
