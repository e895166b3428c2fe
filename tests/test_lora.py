"""LoRAs at inference: every file layout against a merge written here, unmerged == merged, fp8 and
block swap, strengths per branch, and what a load reports."""
import pytest
import torch
from helpers import inputs

from vera.checkpoints.lora import LoraError, LoraSpec, read_lora
from vera.checkpoints.safetensors_io import atomic_save
from vera.model import lora
from vera.model.blockswap import BlockSwap
from vera.model.config import BRANCHES, VeraConfig
from vera.model.fp8 import quantize_blocks
from vera.model.mot import VeraModel

CONFIG = VeraConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, text_dim=32, freq_dim=32)
RANK, ALPHA = 4, 2.0
# Wan original name -> the same layer in diffusers' names (written out here, not taken from vera)
DIFFUSERS = {"blocks.0.self_attn.q": "blocks.0.attn1.to_q", "blocks.1.cross_attn.o": "blocks.1.attn2.to_out.0",
             "blocks.0.ffn.0": "blocks.0.ffn.net.0.proj", "text_embedding.0": "condition_embedder.text_embedder.linear_1",
             "head.head": "proj_out"}
TARGETS = list(DIFFUSERS)


def model(seed=0):
    torch.manual_seed(seed)
    m = VeraModel(CONFIG).eval()
    with torch.no_grad():
        for p in (*m.source_embedding.parameters(), m.layer_embedding_alpha, m.layer_embedding_composite):
            p.normal_(0, 0.1)
    return m


def shapes(m):
    branch = m.branches["edit"]
    return {t: (branch.get_submodule(t).out_features, branch.get_submodule(t).in_features) for t in TARGETS}


def pairs(seed=1):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t, (o, i) in shapes(model()).items():
        out[t] = (torch.randn(o, RANK, generator=g) * 0.1, torch.randn(RANK, i, generator=g) * 0.1)
    return out


def write(layout: str, path, lora_pairs):
    """The same LoRA in one of the layouts found in the wild."""
    tensors = {}
    for t, (up, down) in lora_pairs.items():
        alpha = torch.tensor(ALPHA)
        if layout == "peft":
            tensors |= {f"diffusion_model.{t}.lora_A.weight": down, f"diffusion_model.{t}.lora_B.weight": up * ALPHA / RANK}
        elif layout == "down_up_alpha":
            tensors |= {f"diffusion_model.{t}.lora_down.weight": down, f"diffusion_model.{t}.lora_up.weight": up,
                        f"diffusion_model.{t}.alpha": alpha}
        elif layout == "kohya":
            k = "lora_unet_" + t.replace(".", "_")
            tensors |= {f"{k}.lora_down.weight": down, f"{k}.lora_up.weight": up, f"{k}.alpha": alpha}
        elif layout == "diffusers":
            d = DIFFUSERS[t]
            tensors |= {f"transformer.{d}.lora_A.weight": down, f"transformer.{d}.lora_B.weight": up * ALPHA / RANK}
        elif layout == "diff":
            tensors |= {f"diffusion_model.{t}.diff": (ALPHA / RANK) * up @ down}
        elif layout == "vera_edit":
            tensors |= {f"branches.edit.{t}.lora_down.weight": down, f"branches.edit.{t}.lora_up.weight": up,
                        f"branches.edit.{t}.alpha": alpha}
    return atomic_save(tensors, path)


def merged_reference(lora_pairs, strengths: dict, seed=0):
    """The merge, by hand: W += strength * (alpha / rank) * up @ down in each branch asked for."""
    m = model(seed)
    with torch.no_grad():
        for branch, strength in strengths.items():
            for t, (up, down) in lora_pairs.items():
                m.branches[branch].get_submodule(t).weight += strength * (ALPHA / RANK) * up @ down
    return m


def velocities(m, x):
    with torch.no_grad():
        return m(x["edit"], x["alpha"], x["composite"], x["timestep"], x["context"], x["source"])


def assert_same(a, b, rtol=1e-5, atol=1e-6):
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol)


@pytest.mark.parametrize("layout", ["peft", "down_up_alpha", "kohya", "diffusers", "diff"])
def test_every_layout_equals_a_merge_written_here_on_all_three_branches(layout, tmp_path):
    lora_pairs, x = pairs(), inputs(seed=2)
    path = write(layout, tmp_path / f"{layout}.safetensors", lora_pairs)
    m = model()
    patches, report = read_lora(LoraSpec(path, 0.7), m)
    lora.attach(m, patches)
    want = velocities(merged_reference(lora_pairs, {b: 0.7 for b in BRANCHES}), x)
    assert_same(velocities(m, x), want)
    assert report.applied == report.total and report.targets == len(TARGETS)
    assert report.line().startswith(f"LoRA {layout}.safetensors: applied {report.total} of {report.total} tensors")


def test_a_vera_lora_goes_to_its_own_branch_and_strength_is_per_branch(tmp_path):
    lora_pairs, x = pairs(3), inputs(seed=4)
    m = model()
    patches, _ = read_lora(LoraSpec(write("vera_edit", tmp_path / "v.safetensors", lora_pairs), {"edit": 0.5}), m)
    assert {p.target.split(".")[1] for p in patches} == {"edit"}
    lora.attach(m, patches)
    assert_same(velocities(m, x), velocities(merged_reference(lora_pairs, {"edit": 0.5}), x))
    wan = write("peft", tmp_path / "w.safetensors", lora_pairs)
    m = model()
    patches, _ = read_lora(LoraSpec(wan, {"alpha": 2.0, "composite": 0.0}, ("alpha", "composite")), m)
    lora.attach(m, patches)
    assert_same(velocities(m, x), velocities(merged_reference(lora_pairs, {"alpha": 2.0}), x))


def test_unmerged_equals_merged_and_remove_restores_the_model(tmp_path):
    lora_pairs, x = pairs(5), inputs(seed=6)
    path = write("down_up_alpha", tmp_path / "l.safetensors", lora_pairs)
    plain = velocities(model(), x)
    attached, merged = model(), model()
    handle = lora.attach(attached, read_lora(LoraSpec(path), attached)[0])
    lora.merge(merged, read_lora(LoraSpec(path), merged)[0])
    assert_same(velocities(attached, x), velocities(merged, x))
    handle.remove()
    assert_same(velocities(attached, x), plain, rtol=0, atol=0)


def test_fp8_weights_and_block_swap_take_the_lora_unmerged(tmp_path):
    lora_pairs, x = pairs(7), inputs(seed=8)
    path = write("kohya", tmp_path / "k.safetensors", lora_pairs)
    fp8 = model()
    quantize_blocks(fp8)
    reference = model()
    with torch.no_grad():  # the same fp8-rounded weights in float, then the merge by hand
        for name, module in fp8.named_modules():
            if hasattr(module, "scale_weight"):
                reference.get_submodule(name).weight.copy_(module.weight.float() * module.scale_weight)
        for branch in BRANCHES:
            for t, (up, down) in lora_pairs.items():
                reference.branches[branch].get_submodule(t).weight += (ALPHA / RANK) * up @ down
    lora.attach(fp8, read_lora(LoraSpec(path), fp8)[0])
    assert_same(velocities(fp8, x), velocities(reference, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="fp8 weights take LoRAs unmerged"):
        lora.merge(fp8, read_lora(LoraSpec(path), fp8)[0])
    swapped, resident = model(), model()
    for m in (swapped, resident):
        lora.attach(m, read_lora(LoraSpec(path), m)[0])
    swap = BlockSwap(swapped, swap_layers=1, device="cpu")
    assert_same(velocities(swapped, x), velocities(resident, x), rtol=0, atol=0)
    assert swap.moves


def test_one_wan_lora_on_three_branches_holds_its_tensors_once(tmp_path):
    lora_pairs = pairs(9)
    path = write("peft", tmp_path / "p.safetensors", lora_pairs)
    m = model()
    patches, _ = read_lora(LoraSpec(path), m)
    assert len(patches) == 3 * len(TARGETS)
    # to another device every tensor is a copy: three branches must still share one per tensor
    attached = lora.attach(m, patches, device="meta")
    file_bytes = sum(u.numel() * 4 + d.numel() * 4 for u, d in lora_pairs.values())
    assert len(attached.held) == 2 * len(TARGETS) and attached.held_bytes() == file_bytes
    assert all(t.device.type == "meta" for t in attached.held)


def test_keys_of_no_vera_layer_are_reported_not_applied(tmp_path):
    lora_pairs = pairs(10)
    tensors = {f"diffusion_model.{t}.lora_A.weight": d for t, (u, d) in lora_pairs.items()}
    tensors |= {f"diffusion_model.{t}.lora_B.weight": u for t, (u, d) in lora_pairs.items()}
    tensors["diffusion_model.patch_embedding.lora_A.weight"] = torch.zeros(RANK, 64)
    path = atomic_save(tensors, tmp_path / "extra.safetensors")
    _, report = read_lora(LoraSpec(path), model())
    assert report.applied == 2 * len(TARGETS) and report.total == 2 * len(TARGETS) + 1
    assert "not applied (no layer of Vera's): diffusion_model.patch_embedding.lora_A.weight" in report.line()


@pytest.mark.parametrize("case, tensors, message", [
    ("not a LoRA", {"blocks.0.self_attn.q.weight": torch.zeros(32, 32)}, "no tensor matches a layer"),
    ("another model", {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
                       "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4)},
     "no tensor matches a layer"),
    ("I2V", {"diffusion_model.blocks.0.cross_attn.k_img.lora_A.weight": torch.zeros(4, 32)}, "image-to-video (I2V)"),
    ("another width", {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 5120),
                       "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(5120, 4)},
     "a LoRA for another model or width"),
    ("ranks differ", {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 32),
                      "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(32, 8)}, "their ranks differ"),
    ("NaN", {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.full((4, 32), float("nan")),
             "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(32, 4)}, "NaN or infinite"),
    ("half missing", {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 32)},
     "its up (B) half is missing"),
])
def test_bad_lora_files_are_refused_by_name(case, tensors, message, tmp_path):
    path = atomic_save(tensors, tmp_path / "bad.safetensors")
    with pytest.raises(LoraError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        read_lora(LoraSpec(path), model())
    assert "bad.safetensors" in str(caught.value)


def test_a_pickle_or_a_missing_file_is_refused(tmp_path):
    pickle = tmp_path / "lora.pt"
    torch.save({"a": torch.zeros(1)}, pickle)
    with pytest.raises(LoraError, match=r"lora.pt: LoRAs are read from .safetensors files only"):
        read_lora(LoraSpec(pickle), model())
    with pytest.raises(LoraError, match="gone.safetensors: no such LoRA file"):
        read_lora(LoraSpec(tmp_path / "gone.safetensors"), model())


def test_full_deltas_on_norms_modulation_and_vera_embeddings_equal_a_merge_and_come_off_again(tmp_path):
    g = torch.Generator().manual_seed(11)
    m, x = model(), inputs(seed=12)
    plain = velocities(m, x)
    changes = {  # file key -> (the parameter it changes, in which branches)
        "branches.edit.blocks.0.modulation.diff": ("blocks.0.modulation", ["edit"]),
        "diffusion_model.blocks.1.norm3.diff": ("blocks.1.norm3.weight", BRANCHES),
        "diffusion_model.blocks.1.norm3.diff_b": ("blocks.1.norm3.bias", BRANCHES),
        "branches.alpha.patch_embedding.diff": ("patch_embedding.weight", ["alpha"]),
    }
    vera_level = {"source_embedding.diff": "source_embedding.weight",
                  "layer_embedding_alpha.diff": "layer_embedding_alpha"}
    names = dict(m.named_parameters())
    tensors = {}
    for key, (param, _) in changes.items():
        tensors[key] = torch.randn(names[f"branches.edit.{param}"].shape, generator=g) * 0.05
    for key, param in vera_level.items():
        tensors[key] = torch.randn(names[param].shape, generator=g) * 0.05
    path = atomic_save(tensors, tmp_path / "diffs.safetensors")
    reference = model()
    with torch.no_grad():  # the merge, by hand, at strength 0.5
        for key, (param, branches) in changes.items():
            for b in branches:
                reference.get_parameter(f"branches.{b}.{param}").add_(0.5 * tensors[key])
        for key, param in vera_level.items():
            reference.get_parameter(param).add_(0.5 * tensors[key])
    patches, report = read_lora(LoraSpec(path, 0.5), m)
    assert report.applied == report.total == len(tensors)
    handle = lora.attach(m, patches)
    assert_same(velocities(m, x), velocities(reference, x))
    handle.remove()
    assert_same(velocities(m, x), plain, rtol=0, atol=0)
    assert report.key_maps["alpha"]["branches.alpha.patch_embedding"] == \
        "branches.alpha.patch_embedding.weight"


@pytest.mark.parametrize("text, path, strength, branches", [
    ("a.safetensors", "a.safetensors", 1.0, BRANCHES),
    ("a.safetensors:0.8", "a.safetensors", 0.8, BRANCHES),
    ("a.safetensors:-0.5:edit,composite", "a.safetensors", -0.5, ("edit", "composite")),
    ("C:\\loras\\a.safetensors:0.5", "C:\\loras\\a.safetensors", 0.5, BRANCHES),
    ("C:\\loras\\a.safetensors", "C:\\loras\\a.safetensors", 1.0, BRANCHES),
    ("C:\\l\\a.safetensors:2:alpha", "C:\\l\\a.safetensors", 2.0, ("alpha",)),
])
def test_the_lora_argument_keeps_colons_inside_the_path(text, path, strength, branches):
    spec = LoraSpec.parse(text)
    assert (str(spec.path), spec.strength, spec.branches) == (path, strength, branches)
