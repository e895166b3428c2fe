"""Shared test inputs."""
import torch


def inputs(batch=1, frames=3, size=8, text=12, text_dim=32, seed=1, mask=False):
    g = torch.Generator().manual_seed(seed)
    lat = lambda: torch.randn(batch, 16, frames, size, size, generator=g)
    x = dict(edit=lat(), alpha=lat(), composite=lat(), source=lat(),
             timestep=torch.tensor([537.0] * batch), context=torch.randn(batch, text, text_dim, generator=g))
    if mask:
        x["mask"] = lat()
    return x
