import pytest
import torch

from vera.pipeline import edit, plan_geometry
from vera.tiny import hash_text_embedding
from vera.vae import load_vae
from vera.weights import load_model


@pytest.fixture(scope="module")
def models(files):
    model = load_model(files["wan_comfy"], num_heads=4).eval()
    with torch.no_grad():
        model.source_embedding.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    return model, load_vae(files["vae_original"])


def run(models, src, **kw):
    model, vae = models
    args = dict(context=hash_text_embedding("add a ball"), negative_context=hash_text_embedding(""),
                steps=3, cfg=4.0, alpha_cutoff=0.5, seed=1)
    args.update(kw)
    return edit(src, None, model, vae, **args)


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


def test_missing_text_inputs_are_explained(models):
    model, vae = models
    with pytest.raises(ValueError, match="text encoder"):
        edit(source(), "add a ball", model, vae, steps=1)
    with pytest.raises(ValueError, match="negative"):
        edit(source(), None, model, vae, context=hash_text_embedding("x"), negative_prompt=None, steps=1, cfg=5.0)


def test_work_size_runs_small_and_preserves_the_full_size_source(models):
    src = source(t=9, h=72, w=100)  # not multiples of 16: only the model's copy is resized
    result = run(models, src, work_size=(64, 64))
    assert result.final.shape == (9, 72, 100, 3) and result.alpha.shape == (9, 72, 100, 1)
    assert result.settings["work_size"] == (64, 64)
    untouched = result.alpha[..., 0] == 0
    assert 0.05 < untouched.float().mean() < 0.95
    assert torch.equal(result.final[untouched], src[untouched])
    with pytest.raises(ValueError, match="multiples of 16"):
        run(models, src, work_size=(60, 64))
