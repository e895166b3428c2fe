"""The pack's nodes, loaded the way ComfyUI loads a custom node folder (as a package by file location)."""
import pytest
import torch
from helpers import run_node as run

COMFY_TYPES = {"IMAGE", "MASK", "LATENT", "CONDITIONING", "VAE", "CLIP", "INT", "FLOAT", "BOOLEAN", "STRING",
               "VIDEO"}
OUR_TYPES = {"VERA_MODEL", "VERA_SOURCE", "VERA_LAYERS", "VERA_SHOT", "VERA_CACHE", "VERA_WINDOWS", "VERA_STACK"}


EXPECTED_NODES = {"VeraLoadModel", "VeraFromWan", "VeraTextEncode", "VeraBundledVAE", "VeraEncode",
                  "VeraSampler", "VeraDecodeLayers", "VeraComposite", "VeraSaveLayers", "VeraAlphaRefine",
                  "VeraDifferenceHeatmap", "VeraCache", "VeraLoRA", "VeraContextWindows", "VeraLayerStack"}


def test_every_node_is_well_formed_for_comfyui(pack):
    assert pack.WEB_DIRECTORY == "./web" and set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert set(pack.NODE_CLASS_MAPPINGS) == EXPECTED_NODES
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY.startswith("Vera/") and cls.DESCRIPTION
        assert callable(getattr(cls(), cls.FUNCTION))
        assert isinstance(cls.RETURN_TYPES, tuple)
        assert all(t in COMFY_TYPES | OUR_TYPES for t in cls.RETURN_TYPES), (node_id, cls.RETURN_TYPES)
        if cls.RETURN_TYPES:
            assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
        else:
            assert cls.OUTPUT_NODE is True, f"{node_id} returns nothing, so it must be an output node"
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}
        for section in ("required", "optional"):
            for name, (kind, options) in spec.get(section, {}).items():
                assert isinstance(kind, list) or kind in COMFY_TYPES | OUR_TYPES, (node_id, name, kind)
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
                if isinstance(kind, list) and "default" in options:  # file lists may be empty
                    assert options["default"] in kind, (node_id, name)
                elif "default" in options and kind in ("INT", "FLOAT"):
                    assert options.get("min", -float("inf")) <= options["default"] <= options.get("max", float("inf"))


def frames(seed, t=3, h=16, w=16):
    return torch.rand(t, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_composite_node_is_exact_outside_the_matte(pack):
    node = pack.NODE_CLASS_MAPPINGS["VeraComposite"]()
    source, edit = frames(0), frames(1)
    alpha = torch.zeros(3, 16, 16)
    alpha[:, 4:10, 4:10] = 0.5
    (final, *_), ui = run(pack, "VeraComposite", source=source, edit_layer=edit, alpha=alpha)
    outside = alpha == 0
    assert torch.equal(final[outside], source[outside])
    torch.testing.assert_close(final[~outside], 0.5 * source[~outside] + 0.5 * edit[~outside])
    assert set(ui["vera_layers"][0]["frames"][0]) == {"source", "edit", "alpha", "composite"}
    # eq. 3: a composite made over a different plate gives that plate back under the semi-transparent matte
    plate = frames(2)
    comp = 0.5 * plate + 0.5 * edit
    (recovered, *_), _ = run(pack, "VeraComposite", source=source, edit_layer=edit, alpha=alpha, model_composite=comp,
                            recover_semi_transparent=True)
    torch.testing.assert_close(recovered[~outside], comp[~outside])
    with pytest.raises(ValueError, match="needs the model_composite"):
        node.composite(source, edit, alpha, recover_semi_transparent=True)
    with pytest.raises(ValueError, match="alpha: matte is"):
        node.composite(source, edit, alpha[:, :8])


def test_alpha_refine_and_heatmap_nodes(pack):
    refine = pack.NODE_CLASS_MAPPINGS["VeraAlphaRefine"]()
    alpha = torch.zeros(3, 16, 16)
    alpha[:, 6:10, 6:10] = 0.6
    (hard,) = refine.refine(alpha, threshold=0.5)
    assert set(hard.unique().tolist()) == {0.0, 1.0} and hard.shape == alpha.shape
    (grown,) = refine.refine(alpha, threshold=0.5, grow=2)
    assert grown.sum() > hard.sum()
    (smooth,) = refine.refine(alpha, feather=2.0, temporal_window=3)
    assert smooth.shape == alpha.shape and 0 < smooth.max() <= 0.6
    with pytest.raises(ValueError, match="odd"):
        refine.refine(alpha, temporal_window=2)
    heat = pack.NODE_CLASS_MAPPINGS["VeraDifferenceHeatmap"]()
    source = frames(3)
    output = source.clone()
    output[:, :4] = 1 - output[:, :4]
    (h,) = heat.heatmap(source, output)
    assert torch.count_nonzero(h[:, 4:]) == 0 and h[:, :4].sum() > 0
