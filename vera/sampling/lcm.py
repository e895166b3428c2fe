"""Few-step sampling for step-distilled weights (lightx2v, CausVid, self-forcing LoRAs): LCM-style.

At each timestep of a fixed list the model's velocity gives the clean latent, x0 = x - sigma * v,
which is noised again to the next timestep with fresh (seeded) noise: x = (1 - sigma') x0 +
sigma' noise; the last step returns x0. `steps` N gives the timesteps 1000 * (1 - k / N), k = 0..N-1
(4 steps: 1000, 750, 500, 250, lightx2v's list), shifted as every sampler here is
(sigma' = k sigma / (1 + (k - 1) sigma)). Distilled weights run it at CFG 1.

Same interface as the diffusers schedulers the sampler uses (`set_timesteps`, `timesteps`,
`sigmas`, `step`), so `vera.sampling.sampler.sample` drives it unchanged.
"""
from __future__ import annotations

import torch


def _shift(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigma / (1 + (shift - 1) * sigma)


class FixedTimestepLCM:
    """x0-prediction steps over a fixed timestep list, re-noised with seeded noise between them."""

    def __init__(self, shift: float, seed: int = 0, num_train_timesteps: int = 1000):
        self.shift, self.seed, self.scale = shift, seed, num_train_timesteps
        self.timesteps = torch.empty(0)
        self.sigmas = torch.empty(0)

    def set_timesteps(self, steps: int, device=None) -> None:
        base = 1 - torch.arange(steps, dtype=torch.float64) / steps  # 1, 1 - 1/N, ...
        sigmas = _shift(base, self.shift).float()
        self.sigmas = torch.cat([sigmas, torch.zeros(1)]).to(device)
        self.timesteps = (sigmas * self.scale).to(device)
        self._index = 0
        self._generator = torch.Generator("cpu").manual_seed(int(self.seed) + 1)

    def step(self, velocity: torch.Tensor, timestep, sample: torch.Tensor, return_dict=False):
        """One step: velocity and sample `[B, C, T, h, w]` -> (the next sample,)."""
        sigma, following = self.sigmas[self._index], self.sigmas[self._index + 1]
        self._index += 1
        denoised = sample.float() - float(sigma) * velocity.float()
        if float(following) == 0.0:
            return (denoised.to(sample.dtype),)
        noise = torch.randn(sample.shape, generator=self._generator, dtype=torch.float32)
        noised = (1 - float(following)) * denoised + float(following) * noise.to(sample.device)
        return (noised.to(sample.dtype),)
