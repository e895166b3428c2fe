"""Length option: Vera Context Windows for the Vera Sampler.

Our socket: VERA_WINDOWS, the context-window settings (`SamplingSettings` window* fields), checked
here.
"""
from __future__ import annotations

from ..vera.media.clip import MAX_FRAMES
from ..vera.sampling.settings import (
    MAX_WINDOW,
    WAN_DEFAULTS,
    WINDOW_FUSE,
    WINDOW_NOISE,
    SamplingSettings,
)
from .handles import VERA_WINDOWS

CATEGORY = "Vera/sampling"
MODES = ("windows", "off")
FIELDS = ("window", "window_overlap", "window_fuse", "window_noise")


def model_windows(bundle) -> dict:
    """The context windows a model comes with (vera-tiny: its 17-frame clip; Wan: 81 / 24)."""
    return {name: getattr(bundle.defaults, name) for name in FIELDS}


class VeraContextWindows:
    DESCRIPTION = ("Context windows for the Vera Sampler: a shot longer than one window is sampled "
                   "as overlapping windows blended at every step, so any length needs the memory "
                   "of one window. Each window sees only its own frames: over a long shot an "
                   "edit that names a motion can restart or wander back and forth from window to "
                   "window instead of running once across the shot; edits that hold still suit "
                   "windows best. The windows used are written to settings.json.")
    CATEGORY = CATEGORY
    FUNCTION = "options"
    RETURN_TYPES = (VERA_WINDOWS,)
    RETURN_NAMES = ("context_windows",)
    OUTPUT_TOOLTIPS = ("Connect to the Vera Sampler's context_windows input. Unconnected, the "
                       "sampler uses the model's own windows (vera-tiny: 17 frames, 8 shared; "
                       "Wan-based Vera: 81, 24 shared).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mode": (list(MODES), {
                    "default": "windows",
                    "tooltip": "windows: a clip longer than window is sampled in overlapping "
                               "windows (one that fits is sampled in one piece, as without). "
                               f"off: the whole clip at once, at most {MAX_FRAMES} frames; "
                               "memory grows with the square of its length."}),
                "window": ("INT", {
                    "default": WAN_DEFAULTS.window, "min": 5, "max": MAX_WINDOW, "step": 4,
                    "tooltip": "Frames per window, 1 + 4k. Keep the model's training length "
                               "(81 for Wan2.1, 17 for vera-tiny): a longer window is a longer "
                               "clip than the model knows, and needs more memory."}),
                "window_overlap": ("INT", {
                    "default": WAN_DEFAULTS.window_overlap, "min": 0, "max": MAX_WINDOW - 4,
                    "tooltip": "Frames neighbouring windows share and blend. More overlap: "
                               "more windows (slower); on vera-tiny a third of the window gave "
                               "the smallest changes at seams (README, Long shots). "
                               "A quarter to a third of the window is usual; at most window - 4."}),
                "window_fuse": (list(WINDOW_FUSE), {
                    "default": WAN_DEFAULTS.window_fuse,
                    "tooltip": "How shared frames are blended. linear: a ramp across the overlap "
                               "from one window to the next. pyramid: every frame weighted by its "
                               "distance from its window's ends."}),
                "window_noise": (list(WINDOW_NOISE), {
                    "default": WAN_DEFAULTS.window_noise,
                    "tooltip": "freenoise: later windows start from the first window's noise, "
                               "shuffled (FreeNoise). independent: fresh noise for every frame. "
                               "On vera-tiny the two wandered alike (README, Long shots)."}),
            },
        }

    def options(self, mode, window, window_overlap, window_fuse, window_noise):
        if mode not in MODES:
            raise ValueError(f"mode = {mode!r}: must be one of {', '.join(MODES)}")
        chosen = dict(window=window if mode == "windows" else 0, window_overlap=window_overlap,
                      window_fuse=window_fuse, window_noise=window_noise)
        SamplingSettings(**chosen)  # every value (and the overlap against the window) checked
        return (chosen,)


NODES = {
    "VeraContextWindows": ("Vera Context Windows", VeraContextWindows),
}
