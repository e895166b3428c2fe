"""Context windows: placement, fuse weights, shared noise and windowed sampling."""
import pytest
import torch

from tests.test_sampling import oracle_for
from vera.sampling.sampler import sample
from vera.sampling.settings import SamplingSettings, SettingsError
from vera.sampling.windows import (
    freenoise,
    fuse_weights,
    latent_frames,
    plan_windows,
    source_spans,
    window_weights,
    windows_for,
)


@pytest.mark.parametrize("total,length,overlap", [
    (33, 5, 2), (65, 5, 1), (65, 21, 6), (257, 21, 8), (22, 21, 6), (7, 5, 3), (40, 9, 0)])
def test_windows_cover_the_clip_and_overlap_as_promised(total, length, overlap):
    windows = plan_windows(total, length, overlap)
    assert windows[0][0] == 0 and windows[-1][1] == total
    assert all(end - start == length for start, end in windows)
    starts = [s for s, _ in windows]
    assert starts == sorted(set(starts)), "windows never slide backwards or repeat"
    for (_, end), (start, _) in zip(windows, windows[1:]):
        assert end - start >= overlap, "neighbours share at least the overlap"
        assert start <= end, "no gap between windows"


def test_one_window_when_the_clip_fits():
    assert plan_windows(5, 5, 2) == [(0, 5)]
    assert plan_windows(3, 5, 2) == [(0, 3)]
    assert plan_windows(300, 0, 0) == [(0, 300)]


def test_latent_conversion_is_the_anchors():
    assert [latent_frames(n) for n in (81, 30, 16, 17, 24, 8, 1, 0)] == [21, 8, 4, 5, 6, 2, 1, 0]


@pytest.mark.parametrize("method", ["linear", "pyramid"])
@pytest.mark.parametrize("total,length,overlap", [(33, 5, 2), (66, 21, 6), (41, 9, 4)])
def test_fuse_weights_sum_to_one_everywhere(method, total, length, overlap):
    windows = plan_windows(total, length, overlap)
    cover = torch.zeros(total)
    for (start, end), w in zip(windows, fuse_weights(windows, total, method)):
        assert bool((w > 0).all())
        cover[start:end] += w
    torch.testing.assert_close(cover, torch.ones(total))


def test_linear_weights_hand_over_as_a_ramp():
    windows = [(0, 5), (3, 8)]
    first, second = window_weights(windows, "linear")
    torch.testing.assert_close(first, torch.tensor([1, 1, 1, 2 / 3, 1 / 3]))
    torch.testing.assert_close(second, torch.tensor([1 / 3, 2 / 3, 1, 1, 1]))


def test_source_spans_in_source_frames():
    windows = plan_windows(latent_frames(129), latent_frames(17), latent_frames(8))
    spans = source_spans(windows, 129)
    assert spans[0] == [0, 16] and spans[-1][1] == 128
    assert spans[1] == [9, 28]  # latent frames 3..7: source 9..28
    assert source_spans([(0, 5), (3, 8)], 27) == [[0, 16], [9, 26]]  # cut to the clip


def test_freenoise_repeats_earlier_noise_shuffled():
    noise = torch.randn(1, 2, 11, 2, 2)
    windows = plan_windows(11, 5, 2)  # (0,5) (3,8) (6,11)
    shared = freenoise(noise, windows, seed=4)
    torch.testing.assert_close(shared[:, :, :5], noise[:, :, :5])
    for start, end in windows[1:]:
        window = shared[:, :, start:end]
        first = shared[:, :, :5]
        # every frame of a later window carries the noise of some first-window frame
        for t in range(window.shape[2]):
            assert any(torch.equal(window[:, :, t], first[:, :, j]) for j in range(5))
    assert torch.equal(freenoise(noise, windows, 4), shared), "seeded"
    assert freenoise(noise, [(0, 11)], 4) is noise


def _settings(**changes):
    return SamplingSettings(steps=6, cfg=1.0, shift=3.0, sampler="euler", seed=2).updated(**changes)


@pytest.mark.parametrize("fuse", ["linear", "pyramid"])
@pytest.mark.parametrize("noise", ["freenoise", "independent"])
def test_windowed_sampling_reaches_per_frame_targets(fuse, noise):
    """A velocity that depends on each frame alone: windows, fused with weights that sum to one,
    must land every frame on its target exactly as one pass over the clip does."""
    shape = (1, 16, 13, 2, 2)
    targets = [torch.randn(shape) for _ in range(3)]
    oracle = oracle_for(targets, "euler", 6, 3.0)
    frame_of = torch.arange(13.0).view(1, 1, 13, 1, 1).expand(shape)  # the source says which

    def model(edit, alpha, composite, timestep, context, source, mask=None):
        picked = source[0, 0, :, 0, 0].long()
        return oracle(edit, alpha, composite, timestep, context, source) if len(picked) == 13 \
            else windowed_oracle(picked, edit, alpha, composite, timestep)

    def windowed_oracle(picked, *latents_and_time):
        *latents, timestep = latents_and_time
        sub = oracle_for([t[:, :, picked] for t in targets], "euler", 6, 3.0)
        return sub(*latents, timestep, None, None)

    whole = sample(model, torch.zeros(1, 4, 8), frame_of, settings=_settings(window=0))
    settings = _settings(window=17, window_overlap=8, window_fuse=fuse, window_noise=noise)
    assert len(windows_for(settings, 13)) == 4
    windowed = sample(model, torch.zeros(1, 4, 8), frame_of, settings=settings)
    for name in whole:
        torch.testing.assert_close(windowed[name], whole[name], atol=1e-5, rtol=0)


def test_one_window_is_bit_identical_to_no_windows():
    shape = (1, 16, 5, 2, 2)
    model = lambda e, a, c, t, ctx, src, mask=None: (e * 0.3 + src, a - 0.1, c * 0.9)
    source = torch.randn(shape)
    runs = [sample(model, torch.zeros(1, 4, 8), source,
                   settings=_settings(window=w, window_overlap=8))
            for w in (0, 17, 21)]
    for other in runs[1:]:
        for name in runs[0]:
            assert torch.equal(other[name], runs[0][name])


def test_each_window_sees_its_slice_of_source_and_mask():
    seen = []

    def model(edit, alpha, composite, timestep, context, source, mask=None):
        assert edit.shape[2] == source.shape[2] == mask.shape[2] == 5
        seen.append(float(source[0, 0, 0, 0, 0]))
        return edit * 0, alpha * 0, composite * 0

    frames = torch.arange(11.0).view(1, 1, 11, 1, 1).expand(1, 16, 11, 2, 2)
    evaluations = {}
    sample(model, torch.zeros(1, 4, 8), frames, frames.clone(), settings=_settings(
        window=17, window_overlap=8, steps=2), evaluations=evaluations)
    assert seen == [0.0, 3.0, 6.0] * 2
    assert evaluations == {"full": 6, "cached": 0}


def test_step_cache_keeps_one_state_per_window():
    """Windows that move differently decide differently: a still window skips steps while a moving
    one runs every step, which one shared state could not give."""
    calls = []

    def model(edit, alpha, composite, timestep, context, source, mask=None):
        calls.append(float(source.mean()))
        if source.mean() > 0.5:  # an output that jumps every step: never predictable
            return tuple(torch.randn_like(x) * 10 for x in (edit, alpha, composite))
        return tuple(torch.ones_like(x) for x in (edit, alpha, composite))  # constant: skippable

    source = torch.cat([torch.zeros(1, 16, 5, 2, 2), torch.ones(1, 16, 4, 2, 2)], dim=2)
    settings = _settings(window=17, window_overlap=4, steps=20, cache_method="easycache",
                         cache_threshold=0.5, cache_start=0.0, cache_end=1.0)
    assert windows_for(settings, 9) == [(0, 5), (4, 9)]
    evaluations = {}
    sample(model, torch.zeros(1, 4, 8), source, settings=settings, evaluations=evaluations)
    still = sum(1 for c in calls if c < 0.5)
    moving = len(calls) - still
    assert moving == 20 and still < 20
    assert evaluations["full"] + evaluations["cached"] == 40


@pytest.mark.parametrize("changes,words", [
    (dict(window=20), r"1 \+ 4k"), (dict(window=1), "at least 5"), (dict(window=-4), "window"),
    (dict(window=17, window_overlap=14), "at most 13"), (dict(window_overlap=-1), "window_overlap"),
    (dict(window_fuse="ramp"), "linear"), (dict(window_noise="same"), "freenoise")])
def test_bad_window_settings_are_refused_with_the_name(changes, words):
    with pytest.raises(SettingsError, match=words):
        _settings(**changes)


def test_describe_lists_few_windows_and_abbreviates_many():
    from vera.sampling.windows import describe

    assert describe([[0, 16], [9, 28]]) == "2 windows: frames 0-16, 9-28"
    spans = source_spans(plan_windows(257, 5, 2), 1025)
    text = describe(spans)
    assert text.startswith("85 windows: frames 0-16, 9-28") and text.endswith(", ..., 1005-1024")
    assert text.count("-") == 7
