import torch

from vera.frames import layers


def frames(t=3, h=16, w=16, c=3, seed=0):
    return torch.rand(t, h, w, c, generator=torch.Generator().manual_seed(seed))


def test_composite_is_exact_where_alpha_is_zero_even_if_edit_is_nan():
    src, edit = frames(), frames(seed=1)
    edit[0, 0, 0] = float("nan")
    alpha = torch.zeros(3, 16, 16, 1)
    alpha[:, 4:8, 4:8] = 0.25
    out = layers.composite(src, edit, alpha)
    assert torch.equal(out[:, :4], src[:, :4])
    torch.testing.assert_close(out[:, 4:8, 4:8], 0.75 * src[:, 4:8, 4:8] + 0.25 * edit[:, 4:8, 4:8])


def test_final_composite_keeps_source_bytes_and_agrees_between_uint8_and_float():
    src_u8 = (frames() * 255).to(torch.uint8)
    edit = frames(seed=3)
    alpha = layers.quantize_alpha(frames(c=1, seed=2) - 0.5)
    out = layers.final_composite(src_u8, edit, alpha)
    zero = alpha[..., 0] == 0
    assert zero.any() and (~zero).any() and out.dtype == torch.uint8
    assert torch.equal(out[zero], src_u8[zero]) and not torch.equal(out[~zero], src_u8[~zero])
    # the float path (ComfyUI's IMAGE) is the same composite before rounding: a naive eq. 2
    src_f = src_u8.float() / 255
    out_f = layers.final_composite(src_f, edit, alpha)
    assert out_f.dtype == torch.float32 and torch.equal(out_f[zero], src_f[zero])
    torch.testing.assert_close(out_f, (1 - alpha) * src_f + alpha * edit, atol=1e-6, rtol=0)
    assert torch.equal(layers.to_uint8(out_f), out)


def test_final_composite_with_recovery_matches_eq3_by_hand():
    plate, edit, src = frames(seed=7), frames(seed=8), frames(seed=9)
    alpha = torch.zeros(3, 16, 16, 1)
    alpha[:, 2:6] = 0.5
    alpha[:, 6:9] = 1.0
    model_comp = (1 - alpha) * plate + alpha * edit
    out = layers.final_composite(src, edit, alpha, model_comp, recover_semi_transparent=True)
    semi = (alpha[..., 0] > 0) & (alpha[..., 0] < 1)
    # under the semi-transparent matte the model's composite comes back; else eq. 2 over the source
    torch.testing.assert_close(out[semi], model_comp[semi], atol=1e-5, rtol=0)
    assert torch.equal(out[alpha[..., 0] == 0], src[alpha[..., 0] == 0])
    torch.testing.assert_close(out[alpha[..., 0] == 1], edit[alpha[..., 0] == 1])


def test_quantize_alpha_grid_and_cutoff():
    a = torch.tensor([0.0, 0.001, 0.003, 0.5, 1.0]).view(1, 1, 5, 1)
    q = layers.quantize_alpha(a, cutoff=0.1)
    assert torch.equal(q.flatten(), torch.tensor([0.0, 0.0, 0.0, 128 / 255, 1.0]))


def test_recovery_inverts_the_composite_in_semi_transparent_regions():
    preserved, edit, src = frames(seed=4), frames(seed=5), frames(seed=6)
    alpha = torch.zeros(3, 16, 16, 1)
    alpha[:, :8] = 0.4
    alpha[:, 8:12] = 1.0
    comp = (1 - alpha) * preserved + alpha * edit
    rec = layers.recover_preserved(comp, edit, alpha, src)
    torch.testing.assert_close(rec[:, :8], preserved[:, :8])
    assert torch.equal(rec[:, 8:], src[:, 8:])  # alpha 1: nothing to recover; alpha 0: source


def test_fill_edit_layer_uses_blurred_composite_outside_the_matte():
    edit, comp = frames(seed=7), frames(seed=8)
    alpha = torch.zeros(3, 16, 16, 1)
    alpha[:, 5:9, 5:9] = 1
    filled = layers.fill_edit_layer(edit, alpha, comp, sigma=2.0)
    assert torch.equal(filled[:, 5:9, 5:9], edit[:, 5:9, 5:9])
    blurred = layers.gaussian_blur(comp, 2.0)
    assert torch.equal(filled[:, :5], blurred[:, :5]) and blurred[:, :5].std() < comp[:, :5].std()
    const = torch.full((1, 16, 16, 3), 0.3)
    torch.testing.assert_close(layers.gaussian_blur(const, 3.0), const)


def test_rgba_pack_unpack_round_trip():
    rgb, alpha = frames(), frames(c=1, seed=9).clamp_min(0.1)
    rgba = layers.pack_rgba(rgb, alpha)
    assert rgba.shape == (3, 16, 16, 4)
    r, a = layers.unpack_rgba(rgba)
    assert torch.equal(r, rgb) and torch.equal(a, alpha)
    r2, _ = layers.unpack_rgba(layers.pack_rgba(rgb, alpha, premultiply=True), premultiplied=True)
    torch.testing.assert_close(r2, rgb)


def test_grow_shrink_threshold_and_smoothing():
    alpha = torch.zeros(2, 21, 21, 1)
    alpha[:, 8:13, 8:13] = 1  # 5x5 square
    assert layers.grow(alpha, 1)[0].sum() == 5 * 5 + 4 * 5  # disc radius 1 = plus shape: adds one ring of edges
    assert layers.grow(alpha, -1)[0].sum() == 3 * 3
    assert torch.equal(layers.threshold(torch.tensor([0.2, 0.5, 0.9]), 0.5), torch.tensor([0.0, 1.0, 1.0]))
    feathered = layers.feather(alpha, 4)
    assert 0 < feathered[0, 10, 7, 0] < 1 and feathered.max() <= 1
    seq = torch.arange(5.0).view(5, 1, 1, 1)
    sm = layers.temporal_smooth(seq, 3)
    torch.testing.assert_close(sm.flatten(), torch.tensor([1 / 3, 1, 2, 3, 11 / 3]))


def test_difference_heatmap_is_black_where_unchanged():
    src = frames()
    out = src.clone()
    out[:, :4] = 1 - out[:, :4]
    heat = layers.difference_heatmap(src, out)
    assert not heat[:, 4:].any() and heat[:, :4].amax() > 0
