"""The MoT against an independent implementation: diffusers' WanTransformer3DModel."""
import pytest
import torch
from helpers import inputs

from vera.checkpoints.weights import load_model
from vera.model.config import BRANCHES, PRESETS, VeraConfig, config_from_shapes
from vera.model.mot import VeraModel


@pytest.mark.parametrize("layout", ["wan_comfy", "wan_original", "wan_diffusers", "wan_diffusers_folder"])
def test_each_branch_reproduces_diffusers_wan(files, tiny_wan, layout):
    model = load_model(files[layout], num_heads=4, from_wan=True).eval()
    x = inputs()
    with torch.no_grad():
        out = model(**x, cross_branch_attention=False)
        for name, got in zip(BRANCHES, out):
            ref = tiny_wan(x[name], x["timestep"], x["context"]).sample
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0, msg=f"branch {name} ({layout})")


def test_joint_attention_couples_the_branches(files):
    model = load_model(files["wan_comfy"], num_heads=4, from_wan=True).eval()
    x = inputs()
    with torch.no_grad():
        joint = model(**x)
        separate = model(**x, cross_branch_attention=False)
        x2 = dict(x, alpha=torch.randn_like(x["alpha"]))
        joint2 = model(**x2)
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(joint, separate))
    # changing only the alpha latent changes the edit branch's output through joint attention
    assert (joint2[0] - joint[0]).abs().max() > 1e-3


def test_conditioning_is_zero_initialised_and_routed(files):
    model = load_model(files["wan_comfy"], num_heads=4, from_wan=True).eval()
    x = inputs()
    with torch.no_grad():
        base = model(**x, cross_branch_attention=False)
        other_source = model(**dict(x, source=torch.randn_like(x["source"])), cross_branch_attention=False)
        with_mask = model(**x, mask=torch.randn_like(x["source"]), cross_branch_attention=False)
        for a, b in zip(base, other_source + with_mask):
            torch.testing.assert_close(a, b, atol=0, rtol=0)  # zero-init: no effect yet
        model.source_embedding.weight.normal_()
        model.mask_embedding.weight.normal_()
        src = model(**x, cross_branch_attention=False)
        msk = model(**x, mask=torch.randn_like(x["source"]), cross_branch_attention=False)
    assert torch.equal(src[0], base[0]) and torch.equal(src[1], base[1]) and not torch.equal(src[2], base[2])
    assert torch.equal(msk[0], base[0]) and not torch.equal(msk[1], base[1])


def test_sequence_conditioning_mode(files):
    model = load_model(files["wan_comfy"], num_heads=4, conditioning="sequence", from_wan=True).eval()
    assert model.config.conditioning == "sequence"
    x = inputs(batch=2)
    with torch.no_grad():
        out = model(**x, mask=torch.randn_like(x["source"]))
        changed = model(**dict(x, source=torch.randn_like(x["source"])))
    assert all(o.shape == x["edit"].shape for o in out)
    # source tokens are real tokens in the joint sequence, so they reach every branch from the start
    assert all((a - b).abs().max() > 1e-4 for a, b in zip(out, changed))


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    cfg = VeraConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, text_dim=16, freq_dim=32)
    model = VeraModel(cfg)
    x = inputs(text_dim=16, size=4)
    grads, layer_runs = [], []
    original_layer = model._layer
    calls = []
    model._layer = lambda *args: (calls.append(1), original_layer(*args))[1]
    for ckpt in (False, True):
        model.zero_grad()
        calls.clear()
        model.gradient_checkpointing = ckpt
        sum(o.square().mean() for o in model(**x)).backward()
        grads.append(model.branches["alpha"].blocks[0].self_attn.q.weight.grad.clone())
        layer_runs.append(len(calls))
    torch.testing.assert_close(grads[0], grads[1])
    assert layer_runs == [2, 4]  # checkpointing really recomputes each of the 2 layers in backward


def test_presets_and_shape_inference():
    p = PRESETS["wan2.1-1.3B"]
    assert (p.dim, p.num_heads, p.num_layers, p.ffn_dim, p.head_dim) == (1536, 12, 30, 8960, 128)
    with torch.device("meta"):
        branch = VeraModel(p.replace(num_layers=30)).branches["edit"]
    shapes = {k: tuple(v.shape) for k, v in branch.state_dict().items()}
    assert sum(v.numel() for v in branch.state_dict().values()) == 1_418_996_800  # Wan2.1-1.3B, per GUIDE
    assert config_from_shapes(shapes).name == "wan2.1-1.3B"
    with pytest.raises(ValueError, match="head count of a width-100 model.*--num-heads"):
        config_from_shapes({**shapes, "patch_embedding.weight": (100, 16, 1, 2, 2)})
    with pytest.raises(ValueError, match="conditioning"):
        VeraConfig(conditioning="concat")


def test_bf16_weights_run_close_to_fp32(files):
    x = inputs(mask=True)
    with torch.no_grad():
        full = load_model(files["wan_comfy"], num_heads=4, from_wan=True).eval()(**x)
        half_model = load_model(files["wan_comfy"], num_heads=4, weight_dtype="bf16", from_wan=True,
                                attention_backend="sdpa").eval()
        half = half_model(**x)
    assert half_model.dtype == torch.bfloat16 and half_model.attention_backend == "sdpa"
    for a, b in zip(full, half):
        assert b.dtype == torch.float32 and (a - b).abs().mean() < 0.02 * a.abs().mean()
    with pytest.raises(ValueError, match="not one of"):
        half_model.attention_backend = "flash3"
