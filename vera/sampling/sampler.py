"""Flow-matching sampling of the three Vera latents with classifier-free guidance.

Convention (one place): we follow Wan/diffusers. sigma runs from 1 (pure noise) to 0 (data),
    x_sigma = (1 - sigma) * x0 + sigma * noise,   velocity v = noise - x0,   model timestep = 1000 * sigma.
The paper writes t = 1 - sigma (data at t = 1) and its velocity Z1 - Z0 is -v.
Shift (applied by the schedulers): sigma' = k * sigma / (1 + (k - 1) * sigma).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from .. import VeraError
from ..model.config import BRANCHES
from .cache import StepCache
from .settings import SAMPLERS, WAN_DEFAULTS, SamplingSettings
from .windows import freenoise, fuse_weights, windows_for

log = logging.getLogger(__name__)


class Interrupted(VeraError, RuntimeError):
    """Raised when the interrupt hook asks sampling to stop."""


def shift_sigma(sigma: torch.Tensor | float, shift: float):
    return shift * sigma / (1 + (shift - 1) * sigma)


class VelocityModel(Protocol):
    def __call__(self, edit, alpha, composite, timestep, context, source, mask=None): ...


@dataclass
class StepInfo:
    """Passed to the per-step callback. Latents are `[B, 16, T', h, w]`."""

    step: int  # 1-based
    total: int
    sigma: float
    latents: dict[str, torch.Tensor]  # current noisy latents
    denoised: dict[str, torch.Tensor]  # x0 predictions, for previews


def make_scheduler(name: str, shift: float, seed: int = 0):
    """A scheduler by name; seed feeds the noise that lcm adds between its steps."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if name == "lcm":
        from .lcm import SeededFixedStepLCM  # imports diffusers, as the two below do: when used

        return SeededFixedStepLCM(shift, seed)
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    if name == "unipc":
        return UniPCMultistepScheduler(
            num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift
        )
    raise ValueError(f"sampler {name!r} is not one of {SAMPLERS}")


def initial_noise(shape, seed: int, device, count: int = 3) -> list[torch.Tensor]:
    """Seeded noise drawn on the CPU so a seed gives the same result on every device."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return [torch.randn(shape, generator=generator, dtype=torch.float32).to(device) for _ in range(count)]


def model_passes(model: VelocityModel, latents: list[torch.Tensor], timestep: torch.Tensor,
                 context: torch.Tensor, negative: torch.Tensor | None, source: torch.Tensor,
                 mask: torch.Tensor | None, cfg: float, batch_cfg: bool = True
                 ) -> dict[str, list[torch.Tensor]]:
    """The model's velocities of the three latents per pass: {"cond": [edit, alpha, composite]}
    plus "uncond" when guided (negative given and cfg above 1).

    batch_cfg runs cond and uncond as one batch of 2B through the model (faster, more memory).
    """
    if negative is None or cfg == 1.0:
        return {"cond": list(model(*latents, timestep, context, source, mask))}
    if batch_cfg:
        length = max(context.shape[1], negative.shape[1])
        ctx = torch.cat([_pad_to(negative, length), _pad_to(context, length)])
        doubled = [torch.cat([x, x]) for x in latents]
        out = model(*doubled, timestep.repeat(2), ctx, torch.cat([source, source]),
                    None if mask is None else torch.cat([mask, mask]))
        halves = [o.chunk(2) for o in out]
        return {"cond": [c for _, c in halves], "uncond": [u for u, _ in halves]}
    return {"cond": list(model(*latents, timestep, context, source, mask)),
            "uncond": list(model(*latents, timestep, negative, source, mask))}


def apply_cfg(passes: dict[str, torch.Tensor], cfg: float) -> torch.Tensor:
    """uncond + cfg * (cond - uncond); the cond pass alone when unguided."""
    if "uncond" not in passes:
        return passes["cond"]
    return passes["uncond"] + cfg * (passes["cond"] - passes["uncond"])


def guided_velocity(model: VelocityModel, latents: list[torch.Tensor], timestep: torch.Tensor,
                    context: torch.Tensor, negative: torch.Tensor | None, source: torch.Tensor,
                    mask: torch.Tensor | None, cfg: float, batch_cfg: bool = True
                    ) -> list[torch.Tensor]:
    """Velocities of the three latents with CFG: uncond + cfg * (cond - uncond)."""
    passes = model_passes(model, latents, timestep, context, negative, source, mask, cfg, batch_cfg)
    return [apply_cfg({name: v[i] for name, v in passes.items()}, cfg) for i in range(len(latents))]


def _pad_to(context: torch.Tensor, length: int) -> torch.Tensor:
    if context.shape[1] == length:
        return context
    return torch.cat([context, context.new_zeros(context.shape[0], length - context.shape[1], context.shape[2])], 1)


def free_bytes(device: torch.device) -> int:
    """Free memory on a device: CUDA's own count, or the system's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f
                        if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return 2**62  # unknown: assume it fits


def batch_cfg_fits(model, source: torch.Tensor, mode: str,
                   free_memory: Callable[[torch.device], int] | None = None) -> bool:
    """Whether cond and uncond run as one batch: "on" / "off", or for "auto" whether the batched
    activation peak (`vera.sampling.plan.activation_bytes`) fits in free memory, as ComfyUI's own
    sampler decides for its models."""
    if mode != "auto":
        return mode == "on"
    if getattr(model, "config", None) is None:  # a stand-in model (tests): nothing to estimate
        return True
    from .plan import latent_activation_bytes

    need = latent_activation_bytes(model, source, passes=2)
    return need <= (free_memory or free_bytes)(source.device)


@torch.no_grad()
def sample(model: VelocityModel, context: torch.Tensor, source: torch.Tensor,
           mask: torch.Tensor | None = None, negative: torch.Tensor | None = None,
           settings: SamplingSettings = WAN_DEFAULTS,
           callback: Callable[[StepInfo], None] | None = None,
           should_stop: Callable[[], bool] | None = None,
           noise: list[torch.Tensor] | None = None,
           free_memory: Callable[[torch.device], int] | None = None,
           evaluations: dict | None = None) -> dict[str, torch.Tensor]:
    """Denoise edit, alpha and composite latents jointly.

    context / negative: `[B, L, text_dim]` (negative is used when settings.cfg > 1);
    source / mask: latents `[B, 16, T', h, w]`. Uses settings.steps, cfg, shift, seed, sampler
    and batch_cfg. Returns {"edit", "alpha", "composite"}: latents `[B, 16, T', h, w]`, float32.
    The three latents are stepped as one tensor (concatenated on channels), so multistep
    samplers keep one history for all of them. free_memory(device) -> bytes decides
    batch_cfg "auto" (default: what torch reports; ComfyUI passes its own count). With
    settings.cache_method on, steps whose input barely moved reuse the last residuals
    (`vera.sampling.cache`). evaluations, when given, is filled with {"full": N, "cached": M}
    model evaluations (a cond + uncond pair counts as two, batched or not). A clip longer than
    settings.window is sampled in context windows fused every step (`vera.sampling.windows`),
    each with its own step cache; a clip that fits one window is sampled exactly as without.
    """
    s = settings
    if s.guided and negative is None:
        raise ValueError(f"cfg {s.cfg:g} needs negative embeddings; pass them or set cfg to 1")
    device = source.device
    channels = source.shape[1]
    windows = windows_for(s, source.shape[2])
    weights = fuse_weights(windows, source.shape[2], s.window_fuse)
    if len(windows) > 1:
        log.info("Vera context windows: %s (latent frames)", windows)
    batched = batch_cfg_fits(model, source[:, :, : windows[0][1]], s.batch_cfg, free_memory)
    scheduler = make_scheduler(s.sampler, s.shift, s.seed)
    scheduler.set_timesteps(s.steps, device=device)
    latents = noise if noise is not None else initial_noise(tuple(source.shape), s.seed, device)
    if noise is None and s.window_noise == "freenoise":
        latents = [freenoise(n, windows, s.seed) for n in latents]
    x = torch.cat(latents, dim=1)
    sigmas = scheduler.sigmas
    caches = [StepCache.from_settings(s) for _ in windows]  # one state per window
    counted = {"full": 0, "cached": 0}
    for i, t in enumerate(scheduler.timesteps):
        if should_stop is not None and should_stop():
            raise Interrupted(f"sampling interrupted at step {i + 1} of {s.steps}")
        timestep = t.reshape(1).expand(source.shape[0]).float().to(device)
        step = _WindowStep(model, timestep, context, negative, s, batched, channels, i, counted)
        if len(windows) == 1:
            velocity = step.velocity(x, source, mask, caches[0])
        else:
            velocity = torch.zeros_like(x)
            for (a, b), w, cache in zip(windows, weights, caches):
                v = step.velocity(x[:, :, a:b], source[:, :, a:b],
                                  None if mask is None else mask[:, :, a:b], cache)
                velocity[:, :, a:b] += v * w.to(v).view(1, 1, -1, 1, 1)
        sigma = float(sigmas[i])
        if callback is not None:
            denoised = x - sigma * velocity
            callback(StepInfo(i + 1, s.steps, sigma, _split(x, channels),
                              _split(denoised, channels)))
        x = scheduler.step(velocity, t, x, return_dict=False)[0]
    if caches[0] is not None:
        log.info(caches[0].summary(counted))
    if evaluations is not None:
        evaluations.update(counted)
    return _split(x, channels)


@dataclass
class _WindowStep:
    """One sampling step's model evaluation of a window (or the whole clip): the guided velocity
    of the three latents concatenated on channels, through the window's step cache."""

    model: VelocityModel
    timestep: torch.Tensor
    context: torch.Tensor
    negative: torch.Tensor | None
    settings: SamplingSettings
    batched: bool
    channels: int
    index: int
    counted: dict

    def velocity(self, x: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None,
                 cache: StepCache | None) -> torch.Tensor:
        """x `[B, 3C, T, h, w]`, source / mask `[B, C, T, h, w]` -> velocity like x."""
        s = self.settings
        if cache is not None and cache.skips(self.index, x):
            passes = cache.reuse(x)
            self.counted["cached"] += len(passes)
        else:
            parts = list(x.split(self.channels, dim=1))
            passes = {name: torch.cat(v, 1) for name, v in model_passes(
                self.model, parts, self.timestep, self.context, self.negative, source, mask,
                s.cfg, self.batched).items()}
            self.counted["full"] += len(passes)
            if cache is not None:
                cache.record(x, passes)
        return apply_cfg(passes, s.cfg)


def _split(x: torch.Tensor, channels: int) -> dict[str, torch.Tensor]:
    return dict(zip(BRANCHES, x.split(channels, dim=1)))


@torch.no_grad()
def sample_single(model, context: torch.Tensor, negative: torch.Tensor, source: torch.Tensor,
                  settings: SamplingSettings = WAN_DEFAULTS) -> torch.Tensor:
    """Denoise one latent with a single-branch video-to-video model
    (`vera.model.single.WanVideoModel`), same schedule, seeded noise and batched CFG as `sample`.
    source `[B, 16, T', h, w]` -> latent of that shape."""
    s = settings
    scheduler = make_scheduler(s.sampler, s.shift, s.seed)
    scheduler.set_timesteps(s.steps, device=source.device)
    x = initial_noise(tuple(source.shape), s.seed, source.device, count=1)[0]
    length = max(context.shape[1], negative.shape[1])
    ctx = torch.cat([_pad_to(negative, length).expand(context.shape[0], -1, -1),
                     _pad_to(context, length)])
    for t in scheduler.timesteps:
        timestep = t.reshape(1).float().expand(2 * source.shape[0])
        uncond, cond = model(torch.cat([x, x]), timestep, ctx, torch.cat([source, source])).chunk(2)
        x = scheduler.step(uncond + s.cfg * (cond - uncond), t, x, return_dict=False)[0]
    return x
