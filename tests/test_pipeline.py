import dataclasses

import pytest
import torch
from tiny_models import HashTextEncoder

from vera.checkpoints.weights import load_model
from vera.edit.bundle import Bundle
from vera.edit.pipeline import edit
from vera.encoders.vae import load_vae
from vera.frames.geometry import plan_geometry
from vera.sampling.settings import SamplingSettings

SETTINGS = SamplingSettings(steps=3, cfg=4.0, alpha_cutoff=0.5, seed=1, negative_prompt="")


@pytest.fixture(scope="module")
def models(files):
    model = load_model(files["wan_comfy"], num_heads=4, from_wan=True).eval()
    with torch.no_grad():
        model.source_embedding.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    vae = load_vae(files["vae_original"])
    return Bundle(model, "tiny-random", SETTINGS, vae, HashTextEncoder())


def run(bundle, src, settings=SETTINGS, **kw):
    return edit(bundle, src, "add a ball", settings, **kw)


def source(t=9, h=64, w=64):
    return (torch.rand(t, h, w, 3, generator=torch.Generator().manual_seed(t * h + w)) * 255).to(torch.uint8)


def test_end_to_end_preserves_untouched_pixels_bit_for_bit(models):
    src = source()
    result = run(models, src)
    assert result.edit_layer.shape == (9, 64, 64, 3) and result.model_composite.shape == (9, 64, 64, 3)
    assert result.alpha.shape == (9, 64, 64, 1) and result.final.shape == (9, 64, 64, 3)
    assert result.final.dtype == torch.uint8
    untouched = result.alpha[..., 0] == 0
    assert 0.05 < untouched.float().mean() < 0.95  # both regions present, so the check can fail
    assert torch.equal(result.final[untouched], src[untouched])
    assert not torch.equal(result.final[~untouched], src[~untouched])
    assert {"edit", "alpha", "composite"} == set(result.latents) and result.latents["edit"].shape == (1, 16, 3, 8, 8)
    again = run(models, src)
    assert torch.equal(again.final, result.final)  # seeded


def test_bad_frame_count_and_size_get_clear_errors(models):
    with pytest.raises(ValueError, match=r"10 frames \(Vera needs 1 \+ 4k frames: trim to 9 or pad to 13\)"):
        run(models, source(t=10))
    with pytest.raises(ValueError, match=r"size 64x60 \(width and height must be multiples of 16\)"):
        run(models, source(h=60))


def test_pad_and_crop_policies(models):
    padded = run(models, source(t=10, h=60), frame_policy="pad")
    assert padded.final.shape == (10, 60, 64, 3)
    src = source(t=10, h=60)
    untouched = padded.alpha[..., 0] == 0
    assert torch.equal(padded.final[untouched], src[untouched])
    cropped = run(models, source(t=10, h=60), frame_policy="crop")
    assert cropped.final.shape == (9, 48, 64, 3)
    assert torch.equal(cropped.source, src[:9, 6:54])
    assert plan_geometry(10, 60, 64, "crop").crop_offset == (6, 0)


def test_mask_and_recovery_options(models):
    src = source()
    mask = torch.zeros(9, 64, 64)
    mask[:, 16:48, 16:48] = 1
    result = run(models, src, mask_frames=mask, recover_semi_transparent=True)
    untouched = result.alpha[..., 0] == 0
    assert torch.equal(result.final[untouched], src[untouched])
    with pytest.raises(ValueError, match="mask_frames"):
        run(models, src, mask_frames=torch.zeros(5, 64, 64))


def test_missing_text_encoder_or_vae_is_explained(models):
    with pytest.raises(ValueError, match="no text encoder.*--text-encoder"):
        edit(dataclasses.replace(models, text_encoder=None), source(), "add a ball")
    with pytest.raises(ValueError, match="no VAE.*--vae"):
        edit(dataclasses.replace(models, vae=None), source(), "add a ball")


def test_settings_reach_the_sampler_and_the_result(models):
    unguided = run(models, source(), SETTINGS.updated(cfg=1.0, alpha_cutoff=0.0))
    assert unguided.settings.cfg == 1.0 and unguided.settings.alpha_cutoff == 0.0
    guided = run(models, source())
    assert not torch.equal(unguided.latents["edit"], guided.latents["edit"])  # cfg was used
    other_seed = run(models, source(), SETTINGS.updated(seed=2))
    assert not torch.equal(other_seed.latents["edit"], guided.latents["edit"])
    assert guided.details["prompt"] == "add a ball" and guided.settings == SETTINGS


def test_work_size_runs_small_and_preserves_the_full_size_source(models):
    src = source(t=9, h=72, w=100)  # not multiples of 16: only the model's copy is resized
    result = run(models, src, work_size=(64, 64))
    assert result.final.shape == (9, 72, 100, 3) and result.alpha.shape == (9, 72, 100, 1)
    assert result.details["work_size"] == (64, 64)
    untouched = result.alpha[..., 0] == 0
    assert 0.05 < untouched.float().mean() < 0.95
    assert torch.equal(result.final[untouched], src[untouched])
    with pytest.raises(ValueError, match="multiples of 16"):
        run(models, src, work_size=(60, 64))
