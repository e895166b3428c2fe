"""Step caching: its decisions on stand-in models, the counts, and cond / uncond kept apart."""
import pytest
import torch

from vera.sampling.cache import StepCache
from vera.sampling.sampler import make_scheduler, sample
from vera.sampling.settings import SamplingSettings, SettingsError

SHAPE = (1, 4, 2, 4, 4)


def cache(threshold=0.2, start=0.0, end=1.0, steps=10):
    return StepCache(threshold, start, end, steps)


def test_the_first_and_last_steps_and_steps_outside_the_window_always_run():
    c = cache(start=0.3, end=0.8, steps=10)
    assert [s for s in range(10) if c.may_skip(s)] == [3, 4, 5, 6, 7]
    c = cache(start=0.0, end=1.0, steps=10)
    assert [s for s in range(10) if c.may_skip(s)] == list(range(1, 9))
    huge = cache(threshold=5.0, steps=4)  # would skip anything it may
    x = torch.zeros(SHAPE)
    for step in range(4):
        if not huge.skips(step, x):
            huge.record(x + step, {"cond": x + 2 * step})
    assert not huge.skips(3, x + 3.0)  # the last step


def test_it_skips_while_the_input_barely_moves_and_runs_when_it_moves():
    c = cache(threshold=0.2)
    x0, out0 = torch.zeros(SHAPE), torch.ones(SHAPE)
    assert not c.skips(1, x0)  # nothing known yet
    c.record(x0, {"cond": out0})
    assert not c.skips(2, x0 + 0.1)  # one computed step: no transformation rate yet
    c.record(x0 + 0.1, {"cond": out0 + 0.1})  # rate k = 0.1 / 0.1 = 1, |output| = 1.1
    assert c.skips(3, x0 + 0.15)  # predicted change 1 * 0.05 / 1.1 = 0.045 < 0.2
    assert c.skips(4, x0 + 0.2)  # accumulated 0.045 + 0.091 = 0.136 < 0.2
    assert not c.skips(5, x0 + 0.25)  # accumulated 0.136 + 0.136 = 0.27: run the model
    c.record(x0 + 0.25, {"cond": out0 + 0.25})
    assert not c.skips(6, x0 + 5.0)  # a big move is never skipped


def test_cond_and_uncond_keep_their_own_residuals():
    c = cache(threshold=1.0)
    x = torch.randn(SHAPE)
    cond, uncond = torch.randn(SHAPE), torch.randn(SHAPE)
    c.record(x, {"cond": cond, "uncond": uncond})
    later = x + 0.01
    reused = c.reuse(later)
    torch.testing.assert_close(reused["cond"], later + (cond - x))
    torch.testing.assert_close(reused["uncond"], later + (uncond - x))
    assert set(reused) == {"cond", "uncond"}


class SlowlyChanging:
    """A stand-in MoT whose velocity changes slowly with the input and depends on the text (so cond
    and uncond differ); records the timesteps it was run at and the batch size."""

    def __init__(self):
        self.calls = []

    def __call__(self, edit, alpha, composite, timestep, context, source, mask=None):
        self.calls.append((float(timestep[0]), edit.shape[0]))
        text = context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        return tuple(0.9 * x + text + 0.01 * float(timestep[0]) / 1000
                     for x in (edit, alpha, composite))


def _run(settings, batch_cfg="on"):
    model = SlowlyChanging()
    evaluations = {}
    out = sample(model, torch.ones(1, 3, 8), torch.zeros(SHAPE), None, -torch.ones(1, 3, 8),
                 settings.updated(batch_cfg=batch_cfg), evaluations=evaluations)
    return out, evaluations, model.calls


def test_sampling_with_the_cache_counts_and_skips_whole_steps():
    plain = SamplingSettings(steps=20, cfg=3.0, shift=3.0, sampler="euler", seed=1)
    cached = plain.updated(cache_method="easycache", cache_threshold=0.5, cache_start=0.1,
                           cache_end=0.9)
    _, counts, calls = _run(plain)
    assert counts == {"full": 40, "cached": 0} and len(calls) == 20  # a batched pair counts as two
    out, counts, calls = _run(cached)
    assert counts["full"] + counts["cached"] == 40 and counts["cached"] > 0
    assert counts["full"] == 2 * len(calls)  # every computed step ran cond and uncond
    timesteps = make_scheduler("euler", 3.0)
    timesteps.set_timesteps(20)
    run_at = [t for t, _ in calls]
    first, last = float(timesteps.timesteps[0]), float(timesteps.timesteps[-1])
    assert run_at[0] == first and run_at[-1] == last
    skippable = {float(t) for i, t in enumerate(timesteps.timesteps) if 2 <= i < 18}
    assert set(map(float, timesteps.timesteps)) - set(run_at) <= skippable
    assert all(torch.isfinite(v).all() for v in out.values())


def test_batched_and_separate_cfg_passes_make_the_same_decisions_and_outputs():
    settings = SamplingSettings(steps=16, cfg=4.0, shift=3.0, sampler="unipc", seed=2,
                                cache_method="easycache", cache_threshold=0.4)
    batched, counts_b, calls_b = _run(settings, "on")
    separate, counts_s, calls_s = _run(settings, "off")
    assert counts_b == counts_s and counts_b["cached"] > 0
    assert {b for _, b in calls_b} == {2} and {b for _, b in calls_s} == {1}
    assert [t for t, _ in calls_b] == [t for t, _ in calls_s[::2]]
    for name in batched:
        torch.testing.assert_close(batched[name], separate[name], rtol=1e-5, atol=1e-6)


def test_without_guidance_one_pass_per_step_is_counted():
    settings = SamplingSettings(steps=12, cfg=1.0, cache_method="easycache", cache_threshold=0.5)
    _, counts, calls = _run(settings)
    assert counts["full"] == len(calls) and counts["full"] + counts["cached"] == 12


@pytest.mark.parametrize("bad, message", [
    (dict(cache_method="teacache"), "cache_method = 'teacache': must be one of off, easycache"),
    (dict(cache_threshold=float("nan")), "cache_threshold = nan"),
    (dict(cache_threshold=0.0), "cache_threshold = 0.0"),
    (dict(cache_threshold=-1.0), "cache_threshold = -1.0"),
    (dict(cache_start=float("inf")), "cache_start = inf"),
    (dict(cache_end=1.5), "cache_end = 1.5"),
    (dict(cache_start=0.9, cache_end=0.2), "the start must come before the end"),
])
def test_bad_cache_settings_are_named(bad, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SamplingSettings(**bad)
