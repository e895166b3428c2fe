import json
import struct

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

from vera.__main__ import main as cli
from vera.config import BRANCHES
from vera.safetensors_io import CheckpointError, atomic_save, load_tensors, read_header
from vera.weights import detect, load_model, save_vera

from helpers import inputs


def outputs(model, mask=False):
    x = inputs(mask=mask)
    with torch.no_grad():
        return model(**x)


def assert_same_model(reference, loaded):
    """Weights bit-identical; velocities equal up to float reassociation. Tensors mapped from a
    safetensors file are not 64-byte aligned, so CPU kernels may take other code paths and round
    differently (about 1e-6 here); 1e-5 relative still catches any mapping error."""
    ref_state, got_state = reference.state_dict(), loaded.state_dict()
    assert ref_state.keys() == got_state.keys()
    assert all(torch.equal(ref_state[k], got_state[k]) for k in ref_state)
    for a, b in zip(outputs(reference, mask=True), outputs(loaded, mask=True)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))


def trained_like(path):
    """A Vera model whose conditioning weights are non-zero, as after training."""
    model = load_model(path, num_heads=4).eval()
    with torch.no_grad():
        for p in (*model.source_embedding.parameters(), *model.mask_embedding.parameters(),
                  model.layer_embedding_alpha, model.layer_embedding_composite):
            p.normal_(0, 0.1)
        model.branches["alpha"].blocks[1].ffn[0].weight.mul_(1.5)  # branches diverge in training
    return model


def test_vera_round_trip_gives_identical_outputs(files, tmp_path):
    model = trained_like(files["wan_comfy"])
    path = save_vera(model, tmp_path / "vera.safetensors")
    info = detect(path)
    assert info.format == "vera" and info.config == model.config
    assert json.loads(read_header(path)[1]["config"])["dim"] == 64
    assert_same_model(model, load_model(path).eval())
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary behind


def test_third_party_layout_is_a_table_entry(files, tmp_path):
    """A Vera file in the 'vera-diffusers' layout (per-branch diffusers names, made here with
    diffusers' own converter) loads into the same model."""
    model = trained_like(files["wan_comfy"])
    state = {}
    for name in BRANCHES:
        branch = {k: v.clone() for k, v in model.branches[name].state_dict().items()}
        for k, v in convert_wan_transformer_to_diffusers(branch).items():
            state[f"transformer_{name}.{k}"] = v
    for emb in ("source", "mask"):
        for p in ("weight", "bias"):
            state[f"{emb}_patch_embedding.{p}"] = getattr(model, f"{emb}_embedding").state_dict()[p]
    state["alpha_layer_embedding"] = model.layer_embedding_alpha.detach()
    state["composite_layer_embedding"] = model.layer_embedding_composite.detach()
    path = atomic_save(state, tmp_path / "third_party.safetensors")
    info = detect(path, num_heads=4)
    assert info.format == "vera-diffusers"
    assert_same_model(model, load_model(path, num_heads=4).eval())


@pytest.mark.parametrize("dtype,stored_as,atol", [(torch.bfloat16, "BF16", 0.05), (torch.float16, "F16", 5e-3)])
def test_half_precision_files_load(files, tmp_path, dtype, stored_as, atol):
    state = {k: v.to(dtype) for k, v in load_tensors(read_header(files["wan_comfy"])[0]).items()}
    path = atomic_save(state, tmp_path / f"wan_{dtype}.safetensors")
    assert detect(path, num_heads=4).dtypes == {stored_as: len(state)}
    ref, got = load_model(files["wan_comfy"], num_heads=4).eval(), load_model(path, num_heads=4).eval()
    q = got.branches["edit"].blocks[0].self_attn.q.weight
    assert torch.equal(q, state["model.diffusion_model.blocks.0.self_attn.q.weight"].float())
    for a, b in zip(outputs(ref), outputs(got)):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


def test_scaled_fp8_file_dequantises_with_its_scales(files, tmp_path):
    """ComfyUI's scaled_fp8: weight_fp8 * scale_weight. Built here the way ComfyUI stores it."""
    src = load_tensors(read_header(files["wan_comfy"])[0])
    state = {"scaled_fp8": torch.zeros(2, dtype=torch.float8_e4m3fn)}
    expected = {}
    for k, v in src.items():
        if k.endswith(".weight") and v.ndim == 2:
            scale = v.abs().max() / 448.0
            q = (v / scale).to(torch.float8_e4m3fn)
            state[k], state[k[:-6] + "scale_weight"] = q, scale.reshape(())
            expected[k] = q.float() * scale
        else:
            state[k] = v
    path = atomic_save(state, tmp_path / "wan_fp8_scaled.safetensors")
    info = detect(path, num_heads=4)
    assert info.scaled_fp8 and info.dtypes["F8_E4M3"] > 0
    model = load_model(path, num_heads=4)
    key = "model.diffusion_model.blocks.1.ffn.2.weight"
    torch.testing.assert_close(model.branches["composite"].blocks[1].ffn[2].weight, expected[key], atol=0, rtol=0)
    ref = load_model(files["wan_comfy"], num_heads=4).eval()
    for a, b in zip(outputs(ref), outputs(model.eval())):
        assert (a - b).abs().mean() < 0.03 * a.abs().mean()  # fp8 rounding noise, not a mapping error


def _edited(files, tmp_path, name, change):
    state = load_tensors(read_header(files["wan_comfy"])[0])
    change(state)
    return atomic_save(state, tmp_path / name)


def test_i2v_file_is_refused(files, tmp_path):
    path = _edited(files, tmp_path, "i2v.safetensors", lambda s: s.update({
        "model.diffusion_model.img_emb.proj.1.weight": torch.zeros(4, 4),
        "model.diffusion_model.blocks.0.cross_attn.k_img.weight": torch.zeros(4, 4)}))
    with pytest.raises(CheckpointError, match="image-to-video"):
        load_model(path, num_heads=4)


def test_vae_given_as_model_is_refused(files):
    with pytest.raises(CheckpointError, match="VAE file"):
        load_model(files["vae_original"])


def test_truncated_file_is_refused(files, tmp_path):
    data = files["wan_comfy"].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.*fetch the file again"):
        load_model(path)
    (tmp_path / "tiny.safetensors").write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(tmp_path / "tiny.safetensors")


def test_missing_and_unexpected_keys_are_named(files, tmp_path):
    path = _edited(files, tmp_path, "missing.safetensors", lambda s: (
        s.pop("model.diffusion_model.blocks.1.cross_attn.o.weight"),
        s.update({"model.diffusion_model.blocks.0.extra.weight": torch.zeros(2)})))
    with pytest.raises(CheckpointError) as err:
        load_model(path, num_heads=4)
    msg = str(err.value)
    assert "blocks.1.cross_attn.o.weight" in msg and "blocks.0.extra.weight" in msg and path.name in msg


def test_pickle_checkpoints_are_never_loaded(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(path)


def test_info_command(files, capsys):
    assert cli(["info", str(files["wan_comfy"]), "--num-heads", "4"]) == 0
    out = capsys.readouterr().out
    params = sum(v.numel() for v in load_tensors(read_header(files["wan_comfy"])[0]).values())
    assert "wan-original" in out and f"{params:,}" in out and "dim=64" in out
    assert cli(["info", str(files["vae_original"])]) == 0
    assert "Wan2.1 VAE" in capsys.readouterr().out
    assert cli(["info", str(files["wan_comfy"]) + ".missing"]) == 2
    assert "no such file" in capsys.readouterr().err
