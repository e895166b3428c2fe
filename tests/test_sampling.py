import pytest
import torch

from vera.sampling.sampler import Interrupted, guided_velocity, make_scheduler, sample, shift_sigma
from vera.sampling.settings import SamplingSettings

SHAPE = (1, 16, 3, 4, 4)


def oracle_for(targets, sampler, steps, shift):
    """The exact velocity toward known targets: v = (x - x0) / sigma, with sigma looked up from
    the scheduler's own (integer) timesteps."""
    sch = make_scheduler(sampler, shift)
    sch.set_timesteps(steps)
    sigma_of = {float(t): float(s) for t, s in zip(sch.timesteps, sch.sigmas)}

    def model(edit, alpha, composite, timestep, context, source, mask=None):
        s = sigma_of[float(timestep[0])]
        return tuple((x - x0) / s for x, x0 in zip((edit, alpha, composite), targets))

    return model


@pytest.mark.parametrize("sampler", ["euler", "unipc"])
@pytest.mark.parametrize("steps", [3, 25])
def test_samplers_reach_target_with_oracle_velocity(sampler, steps):
    targets = [torch.randn(SHAPE) for _ in range(3)]
    settings = SamplingSettings(steps=steps, cfg=1.0, shift=5.0, sampler=sampler, seed=3)
    out = sample(oracle_for(targets, sampler, steps, 5.0), torch.zeros(1, 4, 8), torch.zeros(SHAPE),
                 settings=settings)
    for name, target in zip(("edit", "alpha", "composite"), targets):
        torch.testing.assert_close(out[name], target, atol=1e-5, rtol=0)  # stated tolerance: 1e-5


def test_shift_formula_matches_scheduler():
    """Undoing s' = k s / (1 + (k - 1) s) on the scheduler's sigmas gives an evenly spaced grid from 1."""
    for name in ("euler", "unipc"):
        sch = make_scheduler(name, 3.0)
        sch.set_timesteps(10)
        shifted = sch.sigmas[:-1].double()
        base = shifted / (3.0 - 2.0 * shifted)
        torch.testing.assert_close(shift_sigma(base, 3.0), shifted)
        steps = base[:-1] - base[1:]
        assert abs(float(base[0]) - 1.0) < 1e-5 and float(steps.max() - steps.min()) < 1e-5


def linear_model(edit, alpha, composite, timestep, context, source, mask=None):
    """A stub whose output depends on the context, per sample (a sum, so zero padding changes nothing)."""
    c = context.sum(dim=(1, 2)).view(-1, 1, 1, 1, 1)
    return edit * c, alpha + c, composite - 2 * c


def test_cfg_matches_formula_batched_and_not():
    lat = [torch.randn(SHAPE) for _ in range(3)]
    pos, neg = torch.full((1, 5, 8), 2.0), torch.full((1, 3, 8), -1.0)
    t, src = torch.tensor([500.0]), torch.zeros(SHAPE)
    cond, uncond = linear_model(*lat, t, pos, src), linear_model(*lat, t, neg, src)
    for batched in (True, False):
        got = guided_velocity(linear_model, lat, t, pos, neg, src, None, 4.5, batch_cfg=batched)
        for g, c, u in zip(got, cond, uncond):
            torch.testing.assert_close(g, u + 4.5 * (c - u))


def test_same_seed_same_output_and_callbacks():
    calls = []
    settings = SamplingSettings(steps=4, cfg=3.0, sampler="unipc", seed=7)
    args = (linear_model, torch.ones(1, 4, 8), torch.zeros(SHAPE), None, torch.zeros(1, 4, 8))
    a = sample(*args, settings, callback=calls.append)
    b = sample(*args, settings)
    c = sample(*args, settings.updated(seed=8))
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["edit"], c["edit"])
    assert [s.step for s in calls] == [1, 2, 3, 4] and abs(calls[0].sigma - 1.0) < 1e-5
    assert set(calls[-1].denoised) == {"edit", "alpha", "composite"}


def test_interrupt_hook_stops_within_a_step():
    steps_run = []
    with pytest.raises(Interrupted, match="step 3 of 10"):
        sample(linear_model, torch.ones(1, 4, 8), torch.zeros(SHAPE),
               settings=SamplingSettings(steps=10, cfg=1.0),
               callback=lambda s: steps_run.append(s.step), should_stop=lambda: len(steps_run) >= 2)
    assert steps_run == [1, 2]


def test_guided_sampling_without_negative_is_refused():
    with pytest.raises(ValueError, match="cfg 3 needs negative embeddings"):
        sample(linear_model, torch.ones(1, 4, 8), torch.zeros(SHAPE),
               settings=SamplingSettings(cfg=3.0))


def test_lcm_takes_the_fixed_timestep_list_and_reaches_the_target_with_the_exact_velocity():
    sch = make_scheduler("lcm", 1.0)
    sch.set_timesteps(4)
    assert [round(float(t)) for t in sch.timesteps] == [1000, 750, 500, 250]
    sch = make_scheduler("lcm", 5.0)
    sch.set_timesteps(4)
    want = [shift_sigma(s, 5.0) for s in (1.0, 0.75, 0.5, 0.25)]
    assert torch.allclose(sch.sigmas[:-1], torch.tensor(want), atol=1e-6) and sch.sigmas[-1] == 0
    targets = [torch.randn(SHAPE) for _ in range(3)]
    settings = SamplingSettings(steps=4, cfg=1.0, shift=5.0, sampler="lcm", seed=3)
    model = oracle_for(targets, "lcm", 4, 5.0)
    out = sample(model, torch.zeros(1, 4, 8), torch.zeros(SHAPE), settings=settings)
    for name, target in zip(("edit", "alpha", "composite"), targets):
        torch.testing.assert_close(out[name], target, atol=1e-5, rtol=0)


def test_lcm_noise_between_steps_is_seeded():
    settings = SamplingSettings(steps=4, cfg=1.0, shift=5.0, sampler="lcm", seed=3)
    args = (linear_model, torch.ones(1, 4, 8), torch.zeros(SHAPE))
    a, b = sample(*args, settings=settings), sample(*args, settings=settings)
    c = sample(*args, settings=settings.updated(seed=4))
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["edit"], c["edit"])
