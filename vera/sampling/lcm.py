"""Few-step sampling for step-distilled weights (lightx2v, CausVid, self-forcing LoRAs): LCM-style.

diffusers' `FlowMatchLCMScheduler` does the step: the clean latent from the velocity,
x0 = x - sigma * v, noised again to the next sigma (the last step returns x0). What is ours is the
schedule and the noise: `steps` N gives the sigmas 1 - k / N, k = 0..N-1, shifted like every sampler
here (4 steps: timesteps 1000, 750, 500, 250 before the shift, lightx2v's list), and the noise added
between steps comes from a CPU generator seeded from the run's seed, so a seed gives the same result
on every device. Distilled weights run it at CFG 1.
"""
from __future__ import annotations

import torch
from diffusers import FlowMatchLCMScheduler


class SeededFixedStepLCM(FlowMatchLCMScheduler):
    """FlowMatchLCMScheduler on the fixed sigma list 1 - k / N, with seeded noise between steps."""

    def __init__(self, shift: float, seed: int = 0):
        super().__init__(num_train_timesteps=1000, shift=shift)
        self.seed = int(seed)

    def set_timesteps(self, steps: int, device=None) -> None:
        sigmas = [1 - k / steps for k in range(steps)]
        super().set_timesteps(sigmas=sigmas, device=device)
        self.generator = torch.Generator("cpu").manual_seed(self.seed + 1)

    def step(self, model_output, timestep, sample, return_dict: bool = False):
        return super().step(model_output, timestep, sample, generator=self.generator,
                            return_dict=return_dict)
