"""Vera Layer Stack through the nodes (no ComfyUI here): two edits stacked, saved with the stack,
re-rendered by `stack render` bit for bit, and the wrong frames under a stack named."""
import json

import pytest
import torch
from helpers import blender_comp
from helpers import run_node as run
from test_handoff import check_nuke_script
from test_node_graph import clip, text, tiny  # noqa: F401  (fixtures)

from vera.__main__ import main
from vera.edit.bundle import tiny_available
from vera.media import video

pytestmark = pytest.mark.skipif(not tiny_available(), reason="vera-tiny weights are not in "
                                                             "this checkout")


def _edit(pack, tiny, frames, prompt, seed):
    """Encode -> sample (4 steps) -> decode: (edit, alpha, source, shot)."""
    handle, vae = tiny
    (source,), _ = run(pack, "VeraEncode", vae=vae, frames=frames, frame_policy="error",
                       work_width=64, work_height=64, fps=29.97)
    (lay,), _ = run(pack, "VeraSampler", vera_model=handle, positive=text(pack, handle, prompt),
                    negative=text(pack, handle, ""), vera_source=source, seed=seed, steps=4,
                    cfg=2.0, shift=3.0, sampler="unipc")
    (edit, alpha, _, src, _, _, shot), _ = run(pack, "VeraDecodeLayers", vae=vae,
                                               vera_layers=lay, alpha_cutoff=0.1)
    return edit, alpha, src, shot


def _graph() -> dict:
    """An API-format prompt of two chained edits: each sampler's prompt text is its own."""
    def chain(base: int, words: str) -> dict:
        return {f"{base}": {"class_type": "VeraTextEncode", "inputs": {"text": words}},
                f"{base + 1}": {"class_type": "VeraSampler",
                                "inputs": {"positive": [f"{base}", 0], "vera_source": ["0", 0]}},
                f"{base + 2}": {"class_type": "VeraDecodeLayers",
                                "inputs": {"vera_layers": [f"{base + 1}", 0]}}}
    return {**chain(10, "first words"), **chain(20, "second words"),
            "30": {"class_type": "VeraLayerStack", "inputs": {"edit_layer": ["12", 0]}},
            "31": {"class_type": "VeraLayerStack",
                   "inputs": {"edit_layer": ["22", 0], "below": ["30", 0]}},
            "40": {"class_type": "VeraSaveLayers",
                   "inputs": {"edit_layer": ["22", 0], "stack": ["31", 0]}}}


def test_two_stacked_edits_save_as_a_stack_that_renders_bit_exactly(pack, tiny, clip, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("VERA_OUTPUT_DIR", str(tmp_path / "output"))
    edit1, alpha1, src1, shot1 = _edit(pack, tiny, clip, "add a large red circle", 1)
    (stack1, final1), _ = run(pack, "VeraLayerStack", source=src1, edit_layer=edit1,
                              alpha=alpha1, vera_shot=shot1, prompt=_graph(), unique_id="30")
    edit2, alpha2, src2, shot2 = _edit(pack, tiny, final1, "add a small green square", 2)
    with pytest.raises(ValueError, match="source: these are not the frames of the stack"):
        run(pack, "VeraLayerStack", source=src1, edit_layer=edit2, alpha=alpha2, below=stack1)
    (stack2, final2), _ = run(pack, "VeraLayerStack", source=src2, edit_layer=edit2,
                              alpha=alpha2, below=stack1, vera_shot=shot2, prompt=_graph(),
                              unique_id="31")
    assert len(stack2.layers) == 2 and torch.equal(stack2.source, stack1.source)
    with pytest.raises(ValueError, match="stack: its top layer is not the edit saved here"):
        run(pack, "VeraSaveLayers", edit_layer=edit1, alpha=alpha1, final=final2,
            filename_prefix="stack/shot", stack=stack2)
    _, ui = run(pack, "VeraSaveLayers", edit_layer=edit2, alpha=alpha2, final=final2,
                filename_prefix="stack/shot", vera_shot=shot2, stack=stack2, prompt=_graph(),
                unique_id="40")
    folder = tmp_path / "output" / ui["vera_layers"][0]["folder"]
    stack = json.loads((folder / "stack.json").read_text())
    assert [x["rgba"] for x in stack["layers"]] == ["layers/1/edit_layer_rgba/",
                                                    "shot_edit_layer_rgba/"]
    assert stack["source"]["folder"] == "shot_source/" and stack["source"]["fps"] == "30000/1001"
    assert json.loads((folder / "layers/1/settings.json").read_text())["seed"] == 1
    assert [x["prompt"] for x in stack["layers"]] == ["first words", "second words"]
    check_nuke_script(folder)
    out = tmp_path / "render"
    assert main(["stack", "render", str(folder), "--out", str(out)]) == 0
    rendered = sorted((out / "final_composite").glob("*.png"))
    saved = sorted((folder / "shot_final_composite").glob("*.png"))
    assert len(rendered) == len(saved) == 17
    for ours, theirs in zip(rendered, saved):
        assert torch.equal(video.read_png(ours), video.read_png(theirs))
    assert torch.equal(video.read_png(saved[3]), (final2[3] * 255).round().to(torch.uint8))
    blender = blender_comp(folder, tmp_path / "blender")
    if blender is not None:
        finals = torch.stack([video.read_png(p) for p in saved])
        assert blender.shape == finals.shape
        assert int((blender.int() - finals.int()).abs().max()) <= 2
    # the CLI stacks a third edit on the folder ComfyUI saved (its files carry a name prefix)
    third = tmp_path / "third"
    assert main(["edit", "--over", str(folder), "--prompt", "add a small blue triangle moving from "
                 "top to bottom", "--steps", "2", "--out", str(third)]) == 0
    layers = json.loads((third / "stack.json").read_text())["layers"]
    assert [x["prompt"] for x in layers] == ["first words", "second words",
                                             "add a small blue triangle moving from top to bottom"]
    assert all((third / x["settings"]).is_file() for x in layers)
    assert main(["stack", "render", str(third), "--out", str(tmp_path / "third_render")]) == 0
    for ours, theirs in zip(sorted((tmp_path / "third_render/final_composite").glob("*.png")),
                            sorted((third / "final_composite").glob("*.png"))):
        assert torch.equal(video.read_png(ours), video.read_png(theirs))

