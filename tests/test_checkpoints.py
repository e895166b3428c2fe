"""Checkpoint files: Vera recognised by structure in layouts and containers we made ourselves from
one random model, each loading to the same velocities; clear refusals for the rest."""
import json
import struct

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from helpers import inputs
from safetensors import safe_open

from vera.__main__ import main as cli
from vera.checkpoints.safetensors_io import CheckpointError, atomic_save, load_tensors, read_header
from vera.checkpoints.weights import checkpoint_kind, convert, detect, load_model, save_vera
from vera.model.config import BRANCHES


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


@pytest.fixture(scope="module")
def trained(files):
    """A Vera model whose conditioning weights are non-zero and whose branches differ, as after
    training (made from the tiny random Wan file)."""
    model = load_model(files["wan_comfy"], num_heads=4, from_wan=True).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in (*model.source_embedding.parameters(), *model.mask_embedding.parameters(),
                  model.layer_embedding_alpha, model.layer_embedding_composite):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.branches["alpha"].blocks[1].ffn[0].weight.mul_(1.5)
        model.branches["composite"].head.head.bias.add_(0.2)
    return model


def branch_state(model, name, diffusers=False):
    state = {k: v.clone() for k, v in model.branches[name].state_dict().items()}
    return convert_wan_transformer_to_diffusers(state) if diffusers else state


def layout(model, prefixes, source="source_embedding", mask="mask_embedding",
           alpha="layer_embedding_alpha", composite="layer_embedding_composite", wrap="",
           diffusers=False, vector_shape=None):
    """Our model under other names: `prefixes` per branch (edit, alpha, composite)."""
    state = {}
    for name, prefix in zip(BRANCHES, prefixes):
        state.update({f"{prefix}{k}": v for k, v in branch_state(model, name, diffusers).items()})
    for ours, theirs in (("source_embedding", source), ("mask_embedding", mask)):
        for part in ("weight", "bias"):
            state[f"{theirs}.{part}"] = getattr(model, ours).state_dict()[part].clone()
    for ours, theirs in (("layer_embedding_alpha", alpha), ("layer_embedding_composite", composite)):
        vector = getattr(model, ours).detach().clone()
        state[theirs] = vector.reshape(vector_shape) if vector_shape else vector
    return {f"{wrap}{k}": v for k, v in state.items()}


LAYOUTS = {  # name -> state dict builder (each names things differently from our own format)
    "other prefixes, name tokens": lambda m: layout(
        m, ["mot.rgb_dit.", "mot.matte_dit.", "mot.comp_dit."], source="mot.src_proj",
        mask="mot.mask_proj", alpha="mot.alpha_token", composite="mot.comp_token"),
    "indexed branches": lambda m: layout(
        m, ["transformers.0.", "transformers.1.", "transformers.2."], source="cond_embed.0",
        mask="cond_embed.1", alpha="layer_tokens.0", composite="layer_tokens.1", vector_shape=(64,)),
    "wrapped (module._orig_mod.)": lambda m: layout(
        m, ["branches.edit.", "branches.alpha.", "branches.composite."], wrap="module._orig_mod."),
    "diffusers names inside branches": lambda m: layout(
        m, ["transformer_edit.", "transformer_alpha.", "transformer_composite."],
        source="source_patch_embedding", mask="mask_patch_embedding", alpha="alpha_layer_embedding",
        composite="composite_layer_embedding", diffusers=True),
    "unprefixed edit branch": lambda m: layout(
        m, ["", "alpha.", "composite."], source="video_embedding", mask="mask_embedding",
        vector_shape=(1, 64)),
    "numbered prefixes (transformer_0.)": lambda m: layout(
        m, ["transformer_0.", "transformer_1.", "transformer_2."], source="src_embed",
        mask="mask_embed", alpha="alpha_token", composite="comp_token"),
}
MYSTERY = ["net_a.", "net_b.", "net_c."]  # branch prefixes that say nothing
NET_KEYMAP = {r"net_a\.(.*)": r"branches.edit.\1", r"net_b\.(.*)": r"branches.alpha.\1",
              r"net_c\.(.*)": r"branches.composite.\1"}  # names MYSTERY's branches


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_vera_layouts_we_never_named_load_to_the_same_model(name, trained, tmp_path):
    path = atomic_save(LAYOUTS[name](trained), tmp_path / "vera.safetensors")
    info = detect(path, num_heads=4)
    assert info.format == "vera" and info.config == trained.config.replace(name=info.config.name)
    assert_same_model(trained, load_model(path, num_heads=4).eval())


def _sharded(state, folder):
    """`state` in three shards with a diffusers-style index in `folder` -> the index."""
    names, weight_map = list(state), {}
    for i in range(3):
        shard = f"diffusion_pytorch_model-0000{i + 1}-of-00003.safetensors"
        part = {k: state[k] for k in names[i::3]}
        atomic_save(part, folder / shard)
        weight_map.update({k: shard for k in part})
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index


def test_sharded_folder_with_an_index_and_a_diffusers_pipeline_folder(trained, tmp_path):
    state = layout(trained, ["branches.edit.", "branches.alpha.", "branches.composite."])
    folder = tmp_path / "pipeline" / "transformer"
    index = _sharded(state, folder)
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": 4}))  # heads from here
    (tmp_path / "pipeline" / "model_index.json").write_text(json.dumps(
        {"_class_name": "VeraPipeline", "transformer": ["diffusers", "X"], "vae": ["diffusers", "Y"]}))
    for path in (index, folder, folder / "diffusion_pytorch_model-00002-of-00003.safetensors",
                 tmp_path / "pipeline"):
        info = detect(path)  # no num_heads: config.json says 4
        assert info.format == "vera" and info.config.num_heads == 4, path
        assert_same_model(trained, load_model(path).eval())
    assert "diffusers pipeline folder" in "\n".join(detect(tmp_path / "pipeline").explain())
    (folder / "diffusion_pytorch_model-00003-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match="not beside the index"):
        detect(index)


def test_trainer_pickles_load_with_weights_only_and_refuse_code(trained, tmp_path):
    state = layout(trained, ["branches.edit.", "branches.alpha.", "branches.composite."],
                   wrap="module.")
    path = tmp_path / "step_8000.pt"
    torch.save({"step": 8000, "ema": state, "model": {k: v * 0 for k, v in state.items()},
                "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}}}, path)
    info = detect(path, num_heads=4)
    assert info.container.startswith("torch pickle") and "taken from 'ema'" in "\n".join(info.explain())
    assert_same_model(trained, load_model(path, num_heads=4).eval())
    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": state}, plain)
    assert_same_model(trained, load_model(plain, num_heads=4).eval())
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": state, "hook": ArbitraryObject()}, evil)
    with pytest.raises(CheckpointError, match="arbitrary unpickling, which can run code"):
        detect(evil, num_heads=4)


class ArbitraryObject:
    """Anything a weights-only load refuses (a pickle of it could run code)."""


def test_ambiguous_names_are_refused_with_the_candidates_and_a_key_map_fixes_them(trained, tmp_path):
    state = layout(trained, ["net_a.", "net_b.", "net_c."])
    path = atomic_save(state, tmp_path / "mystery.safetensors")
    with pytest.raises(CheckpointError, match="'net_a.', 'net_b.', 'net_c.' carry no name or index"):
        detect(path, num_heads=4)
    twice = atomic_save(layout(trained, ["edit_a.", "edit_b.", "comp."]), tmp_path / "twice.safetensors")
    with pytest.raises(CheckpointError, match="'edit_a.' -> edit; 'edit_b.' -> edit"):
        detect(twice, num_heads=4)
    unrelated = atomic_save(layout(trained, ["dit1.", "net2.", "mlp3."]),
                            tmp_path / "numbers.safetensors")
    with pytest.raises(CheckpointError, match="'dit1.', 'mlp3.', 'net2.' carry no name or index"):
        detect(unrelated, num_heads=4)  # numbers say nothing when the names around them differ
    (tmp_path / "mystery.safetensors.vera-keymap.json").write_text(json.dumps(NET_KEYMAP))
    info = detect(path, num_heads=4)  # picked up from beside the weights
    assert info.keymap.name == "mystery.safetensors.vera-keymap.json"
    assert "key map: 3" not in "\n".join(info.explain())  # every branch tensor was renamed
    assert_same_model(trained, load_model(path, num_heads=4).eval())


def test_an_explicit_key_map_fixes_an_ambiguous_file_and_wins_over_the_one_beside_it(trained,
                                                                                    tmp_path):
    path = atomic_save(layout(trained, MYSTERY), tmp_path / "mystery.safetensors")
    (tmp_path / "mystery.safetensors.vera-keymap.json").write_text("{stale")
    with pytest.raises(CheckpointError, match="mystery.safetensors.vera-keymap.json: cannot be"):
        detect(path, num_heads=4)  # the one beside it is used when none is given
    explicit = tmp_path / "maps" / "mine.json"
    explicit.parent.mkdir()
    explicit.write_text(json.dumps(NET_KEYMAP))
    info = detect(path, num_heads=4, keymap=explicit)
    assert info.keymap == explicit and f"key map: {explicit}" in info.explain()
    assert_same_model(trained, load_model(path, num_heads=4, keymap=explicit).eval())


def test_the_loader_list_follows_a_key_map_added_edited_or_removed(trained, tmp_path):
    path = atomic_save(layout(trained, MYSTERY), tmp_path / "mystery.safetensors")
    assert checkpoint_kind(path) == (None, path)
    keymap = tmp_path / "mystery.safetensors.vera-keymap.json"
    keymap.write_text(json.dumps(NET_KEYMAP))
    assert checkpoint_kind(path) == ("vera", path)  # the weights' size and time did not change
    keymap.write_text("{}")  # edited: the names are ambiguous again
    assert checkpoint_kind(path) == (None, path)
    keymap.write_text(json.dumps(NET_KEYMAP))
    assert checkpoint_kind(path) == ("vera", path)
    keymap.unlink()
    assert checkpoint_kind(path) == (None, path)


def test_a_key_map_for_a_sharded_model_is_found_from_its_index_a_shard_or_its_folder(trained,
                                                                                   tmp_path):
    folder = tmp_path / "mystery"
    index = _sharded(layout(trained, MYSTERY), folder)
    shard = folder / "diffusion_pytorch_model-00002-of-00003.safetensors"
    places = (folder / "diffusion_pytorch_model.safetensors.vera-keymap.json",  # named as the index
              folder / "vera-keymap.json", tmp_path / "mystery.vera-keymap.json")  # as the folder
    for place in places:
        place.write_text(json.dumps(NET_KEYMAP))
        for path in (index, shard, folder):
            assert detect(path, num_heads=4).keymap == place, (place, path)
        assert checkpoint_kind(shard) == ("vera", index), place
        place.unlink()
    assert checkpoint_kind(shard) == (None, shard)
    with pytest.raises(CheckpointError, match="'net_a.', 'net_b.', 'net_c.' carry no name"):
        detect(shard, num_heads=4)
    places[1].write_text(json.dumps(NET_KEYMAP))
    assert checkpoint_kind(shard) == ("vera", index)  # noticed although the shard was refused
    assert_same_model(trained, load_model(shard, num_heads=4).eval())


def test_incomplete_and_leftover_tensors_are_refused_by_name(trained, tmp_path):
    state = layout(trained, ["branches.edit.", "branches.alpha.", "branches.composite."])
    missing = {k: v for k, v in state.items() if k != "branches.alpha.blocks.1.cross_attn.o.weight"}
    path = atomic_save(missing, tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="'branches.alpha.' is incomplete.*cross_attn.o.weight"):
        detect(path, num_heads=4)
    extra = atomic_save({**state, "pos_embed": torch.zeros(7, 3)}, tmp_path / "extra.safetensors")
    with pytest.raises(CheckpointError, match="1 tensors outside the branches.*pos_embed.*key map"):
        detect(extra, num_heads=4)
    (tmp_path / "extra.vera-keymap.json").write_text(json.dumps({"pos_embed": None}))  # drop it
    assert_same_model(trained, load_model(extra, num_heads=4).eval())
    no_layers = {k: v for k, v in state.items() if not k.startswith("layer_embedding")}
    with pytest.raises(CheckpointError, match="no layer embeddings"):
        detect(atomic_save(no_layers, tmp_path / "no_layers.safetensors"), num_heads=4)
    two = {k: v for k, v in state.items() if not k.startswith("branches.composite.")}
    with pytest.raises(CheckpointError, match="2 Wan2.1 transformers.*has three"):
        detect(atomic_save(two, tmp_path / "two.safetensors"), num_heads=4)


def test_a_plain_wan_file_starts_an_untrained_vera_only_when_asked(files, tiny_wan):
    with pytest.raises(CheckpointError, match="plain Wan2.1 T2V file, not Vera weights"):
        load_model(files["wan_comfy"], num_heads=4)
    model = load_model(files["wan_comfy"], num_heads=4, from_wan=True)
    for name in BRANCHES:  # every branch holds the Wan weights, in its own memory
        assert torch.equal(model.branches[name].blocks[0].ffn[0].weight,
                           tiny_wan.blocks[0].ffn.net[0].proj.weight)
    ptrs = {model.branches[n].blocks[0].ffn[0].weight.data_ptr() for n in BRANCHES}
    assert len(ptrs) == 3 and not model.source_embedding.weight.any()
    with pytest.raises(CheckpointError, match="Vera weights, not a plain Wan2.1"):
        load_model(save_vera(model, files["wan_comfy"].with_name("v.safetensors")), from_wan=True)


def test_convert_writes_our_format_and_fp8_as_comfyuis_scaled_fp8(trained, tmp_path):
    source = atomic_save(layout(trained, ["transformers.0.", "transformers.1.", "transformers.2."],
                                source="cond_embed.0", mask="cond_embed.1",
                                alpha="layer_tokens.0", composite="layer_tokens.1"),
                         tmp_path / "third_party.safetensors")
    out = convert(source, tmp_path / "vera_fp32.safetensors", "fp32", num_heads=4)
    assert detect(out).format == "vera" and read_header(out)[1]["format"] == "vera"
    assert_same_model(trained, load_model(out).eval())  # no key map, no head count needed
    assert cli(["convert", str(source), str(tmp_path / "vera_fp8.safetensors"), "--weight-dtype", "fp8",
                "--num-heads", "4"]) == 0
    fp8_path = tmp_path / "vera_fp8.safetensors"
    with safe_open(str(fp8_path), framework="pt") as f:  # safetensors' own reader agrees with ours
        keys = set(f.keys())
        weight = f.get_tensor("branches.alpha.blocks.1.ffn.0.weight")
        scale = f.get_tensor("branches.alpha.blocks.1.ffn.0.scale_weight")
    assert "scaled_fp8" in keys and weight.dtype == torch.float8_e4m3fn and scale.shape == ()
    reference = trained.branches["alpha"].blocks[1].ffn[0].weight
    torch.testing.assert_close(weight.float() * scale, reference, rtol=0.07, atol=1e-3)
    fp8 = load_model(fp8_path, "fp8")  # stays fp8: the stored bytes and scale, unchanged
    layer = fp8.branches["alpha"].blocks[1].ffn[0]
    assert torch.equal(layer.weight.view(torch.uint8), weight.view(torch.uint8))
    assert torch.equal(layer.scale_weight, scale)
    dequantised = load_model(fp8_path, "fp32")
    torch.testing.assert_close(dequantised.branches["alpha"].blocks[1].ffn[0].weight, weight.float() * scale)
    with pytest.raises(ValueError, match="is the input"):
        convert(out, out)


def test_fp8_from_a_bf16_file_quantises_each_weight_as_fp8linear_does(trained, tmp_path):
    from vera.model.fp8 import FP8Linear

    bf16 = convert(save_vera(trained, tmp_path / "v.safetensors"), tmp_path / "v_bf16.safetensors", "bf16")
    model = load_model(bf16, "fp8")
    loaded = load_model(bf16, "bf16")
    linear = loaded.branches["edit"].blocks[0].self_attn.q
    reference = FP8Linear.from_linear(linear)
    got = model.branches["edit"].blocks[0].self_attn.q
    assert torch.equal(got.weight.view(torch.uint8), reference.weight.view(torch.uint8))
    assert torch.equal(got.scale_weight, reference.scale_weight)


def test_our_writer_is_read_by_safetensors_own_reader(tmp_path):
    tensors = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64), "c": torch.tensor(2.5),
               "d": torch.randn(4, dtype=torch.bfloat16), "e": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    path = atomic_save(tensors, tmp_path / "t.safetensors", {"format": "test"})
    raw = lambda t: t.reshape(-1).view(torch.uint8)
    ours = load_tensors(read_header(path)[0])
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "test"}
        for key, value in tensors.items():
            theirs = f.get_tensor(key)
            assert theirs.shape == value.shape == ours[key].shape, key
            assert torch.equal(raw(theirs), raw(value)) and torch.equal(raw(ours[key]), raw(value)), key


def test_info_explain_says_what_became_what(trained, tmp_path, capsys):
    path = atomic_save(LAYOUTS["indexed branches"](trained), tmp_path / "idx.safetensors")
    assert cli(["info", str(path), "--num-heads", "4", "--explain"]) == 0
    out = capsys.readouterr().out
    for line in ("container: safetensors", "layout: Vera, three Wan2.1 transformers",
                 "branch edit: 'transformers.0.' (by index, in the paper's order)",
                 "source embedding: cond_embed.0 (by order in the file",
                 "layer embedding alpha: layer_tokens.0 (by order in the file: no name says "
                 "which)"):
        assert line in out, (line, out)


@pytest.mark.parametrize("dtype,stored_as,atol", [(torch.bfloat16, "BF16", 0.05), (torch.float16, "F16", 5e-3)])
def test_half_precision_files_load(files, tmp_path, dtype, stored_as, atol):
    state = {k: v.to(dtype) for k, v in load_tensors(read_header(files["wan_comfy"])[0]).items()}
    path = atomic_save(state, tmp_path / f"wan_{dtype}.safetensors")
    assert detect(path, num_heads=4).dtypes == {stored_as: len(state)}
    ref = load_model(files["wan_comfy"], num_heads=4, from_wan=True).eval()
    got = load_model(path, num_heads=4, from_wan=True).eval()
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
    model = load_model(path, num_heads=4, from_wan=True)
    key = "model.diffusion_model.blocks.1.ffn.2.weight"
    torch.testing.assert_close(model.branches["composite"].blocks[1].ffn[2].weight, expected[key], atol=0, rtol=0)
    ref = load_model(files["wan_comfy"], num_heads=4, from_wan=True).eval()
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
        load_model(path, num_heads=4, from_wan=True)


def test_text_encoder_file_is_refused_even_with_a_decoder(tmp_path):
    encoder = {"shared.weight": torch.zeros(32, 8),
               "encoder.final_layer_norm.weight": torch.zeros(8),
               "encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(8, 8)}
    decoder = {"decoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(8, 8)}
    full_t5 = {**encoder, **decoder}  # once mistaken for a VAE (encoder. and decoder. names)
    for name, state in (("umt5_xxl_enc.safetensors", encoder), ("t5.safetensors", full_t5)):
        path = atomic_save(state, tmp_path / name)
        with pytest.raises(CheckpointError) as err:
            load_model(path)
        assert str(err.value).startswith(f"{path}: this is a text encoder (UMT5) file"), err.value


def test_vace_file_is_refused(files, tmp_path):
    path = _edited(files, tmp_path, "vace.safetensors", lambda s: s.update({
        "model.diffusion_model.vace_patch_embedding.weight": torch.zeros(64, 96, 1, 2, 2),
        "model.diffusion_model.vace_blocks.0.before_proj.weight": torch.zeros(64, 64)}))
    with pytest.raises(CheckpointError) as err:
        load_model(path, num_heads=4, from_wan=True)
    assert str(err.value).startswith(f"{path}: this is a Wan VACE model"), err.value


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
        load_model(path, num_heads=4, from_wan=True)
    assert "blocks.1.cross_attn.o.weight" in str(err.value) and path.name in str(err.value)
    path = _edited(files, tmp_path, "extra.safetensors", lambda s: s.update(
        {"model.diffusion_model.blocks.0.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="plus 1 other tensors.*blocks.0.extra.weight"):
        load_model(path, num_heads=4, from_wan=True)


def test_info_command(files, capsys):
    assert cli(["info", str(files["wan_comfy"]), "--num-heads", "4"]) == 0
    out = capsys.readouterr().out
    params = sum(v.numel() for v in load_tensors(read_header(files["wan_comfy"])[0]).values())
    assert "wan-original" in out and f"{params:,}" in out and "dim=64" in out
    assert cli(["info", str(files["vae_original"])]) == 0
    assert "Wan2.1 VAE" in capsys.readouterr().out
    assert cli(["info", str(files["wan_comfy"]) + ".missing"]) == 2
    assert "no such file" in capsys.readouterr().err
