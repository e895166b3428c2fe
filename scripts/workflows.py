"""The shared workflows: one graph description each, written in ComfyUI's UI format (workflows/*.json,
drag-and-drop, listed under the pack's templates) and API format (workflows/api/*_api.json, for
POST /prompt). Also the UI -> API conversion the tests use to check that both files agree.

    python scripts/workflows.py          # rewrite every workflow file
    python scripts/workflows.py --check  # exit 1 if a file differs from what this script writes

Widget names of ComfyUI core nodes are listed below (read from Comfy-Org/ComfyUI a125cd84, checked
against a live server's /object_info by tests/integration); ours come from the nodes' INPUT_TYPES.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")

# class -> (link inputs [(name, type)], widget names, outputs [(name, type)], extra UI-only widget values)
CORE_NODES = {
    "LoadVideo": ([], ["file"], [("VIDEO", "VIDEO")], ["image"]),
    "SolidMask": ([], ["value", "width", "height"], [("MASK", "MASK")], []),
    "MaskComposite": ([("destination", "MASK"), ("source", "MASK")], ["x", "y", "operation"], [("MASK", "MASK")], []),
    "LoadImageMask": ([], ["image", "channel"], [("MASK", "MASK")], ["image"]),
    "VAELoader": ([], ["vae_name"], [("VAE", "VAE")], []),
    "CLIPLoader": ([], ["clip_name", "type", "device"], [("CLIP", "CLIP")], []),
    "CLIPTextEncode": ([("clip", "CLIP")], ["text"], [("CONDITIONING", "CONDITIONING")], []),
    "PreviewImage": ([("images", "IMAGE")], [], [], []),
    "SaveVideo": ([("video", "VIDEO")], ["filename_prefix", "format", "codec"], [], []),
}
NOTE_TYPES = ("MarkdownNote", "Note")  # frontend only: on the canvas, never sent to the server
# where ComfyUI's "missing models" dialog can fetch the Wan2.1 files our workflows use (Comfy-Org's
# repackaged Wan2.1 files); the Vera weights have no verified file URL yet, so their note says where
WAN_REPACKAGED = ("https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/"
                  "split_files")
MODEL_URLS = {
    "wan_2.1_vae.safetensors": ("vae", f"{WAN_REPACKAGED}/vae/wan_2.1_vae.safetensors"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": (
        "text_encoders", f"{WAN_REPACKAGED}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
}


def load_pack():
    """Import the pack as ComfyUI does (by file location), without ComfyUI."""
    spec = importlib.util.spec_from_file_location("comfyui_vera_workflows", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def node_signature(class_type: str, pack) -> tuple[list, list, list, list]:
    """(link inputs, widget names as the UI stores them, outputs, extra UI values) of any node we use.

    The UI stores one value per widget in INPUT_TYPES order (required, then optional); an INT with
    control_after_generate is followed by its control value ("fixed"), which the API format drops."""
    if class_type in CORE_NODES:
        return CORE_NODES[class_type]
    cls = pack.NODE_CLASS_MAPPINGS[class_type]
    spec = cls.INPUT_TYPES()
    links, widgets = [], []
    for section in ("required", "optional"):
        for name, (kind, options) in spec.get(section, {}).items():
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                widgets.append(name)
                if options.get("control_after_generate"):
                    widgets.append(None)  # the UI's "control after generate" value
            else:
                links.append((name, kind))
    names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
    return links, widgets, list(zip(names, cls.RETURN_TYPES)), []


@dataclass
class Node:
    id: int
    class_type: str
    title: str
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)  # input name -> (node id, output slot)
    models: list = field(default_factory=list)  # file names this node loads (see MODEL_URLS)


def to_api(nodes: list[Node]) -> dict:
    return {str(n.id): {"class_type": n.class_type,
                        "inputs": {**n.widgets, **{k: [str(src), slot] for k, (src, slot) in n.links.items()}},
                        "_meta": {"title": n.title}} for n in nodes}


def _depths(nodes: list[Node]) -> dict[int, int]:
    by_id, depth = {n.id: n for n in nodes}, {}

    def visit(i):
        if i not in depth:
            depth[i] = 1 + max((visit(src) for src, _ in by_id[i].links.values()), default=-1)
        return depth[i]

    for n in nodes:
        visit(n.id)
    return depth


def to_ui(nodes: list[Node], pack, notes: list[str]) -> dict:
    depth, rows, links, ui_nodes = _depths(nodes), {}, [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    shown = {}  # node id -> its input slots as the UI lists them: the connected ones, in order
    for n in nodes:
        in_links, _, _, _ = node_signature(n.class_type, pack)
        shown[n.id] = [(name, kind) for name, kind in in_links if name in n.links]
        for slot, (name, kind) in enumerate(shown[n.id]):
            src, src_slot = n.links[name]
            link_id = len(links) + 1
            links.append([link_id, src, src_slot, n.id, slot, kind])
            out_links.setdefault((src, src_slot), []).append(link_id)
    link_of = {(l[3], l[4]): l[0] for l in links}  # (target node, target slot) -> link id
    for n in nodes:
        in_links, widget_names, outputs, extra = node_signature(n.class_type, pack)
        row = rows[depth[n.id]] = rows.get(depth[n.id], -1) + 1
        ui_nodes.append({
            "id": n.id, "type": n.class_type, "title": n.title,
            "pos": [40 + 360 * depth[n.id], 40 + 260 * row], "size": [320, 200], "flags": {}, "order": 0, "mode": 0,
            "inputs": [{"name": name, "type": kind, "link": link_of[(n.id, slot)]}
                       for slot, (name, kind) in enumerate(shown[n.id])],
            "outputs": [{"name": name, "type": kind, "links": out_links.get((n.id, slot), []), "slot_index": slot}
                        for slot, (name, kind) in enumerate(outputs)],
            "properties": {"Node name for S&R": n.class_type, **_model_properties(n)},
            "widgets_values": [("fixed" if w is None else n.widgets[w]) for w in widget_names] + extra,
        })
    order = sorted(nodes, key=lambda n: (depth[n.id], n.id))
    for i, n in enumerate(order):
        next(u for u in ui_nodes if u["id"] == n.id)["order"] = i
    last_id = max(n.id for n in nodes)
    for i, text in enumerate(notes):
        ui_nodes.append({"id": last_id + 1 + i, "type": "MarkdownNote",
                         "title": "Read me" if i == 0 else "Note", "pos": [40 + 700 * i, -420],
                         "size": [660, 380], "flags": {}, "order": len(order) + i, "mode": 0,
                         "inputs": [], "outputs": [], "properties": {}, "widgets_values": [text],
                         "color": "#432", "bgcolor": "#653"})
    return {"last_node_id": last_id + len(notes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def _model_properties(node: Node) -> dict:
    """The model files a loader needs, where ComfyUI's frontend looks for them (node properties)."""
    models = [{"name": name, "url": MODEL_URLS[name][1], "directory": MODEL_URLS[name][0]}
              for name in node.models if name in MODEL_URLS]
    return {"models": models} if models else {}


def ui_to_api(ui: dict, pack) -> dict:
    """A UI-format workflow -> API format (what the frontend's "Export (API)" does for these nodes)."""
    links = {l[0]: l for l in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node["type"] in NOTE_TYPES:
            continue
        in_links, widget_names, _, extra = node_signature(node["type"], pack)
        values = node["widgets_values"]
        if len(values) != len(widget_names) + len(extra):
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values, expected "
                             f"{len(widget_names) + len(extra)}")
        inputs = {name: v for name, v in zip(widget_names, values) if name is not None}
        for slot_input in node["inputs"]:
            if slot_input.get("link") is not None:
                _, src, src_slot, dst, _, _ = links[slot_input["link"]]
                assert dst == node["id"], f"link {slot_input['link']} does not end at node {node['id']}"
                inputs[slot_input["name"]] = [str(src), src_slot]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": node.get("title", "")}}
    return api


def _source(nodes, file_name: str) -> int:
    nodes.append(Node(1, "LoadVideo", "Source video", {"file": file_name}))
    return 1


def encode_widgets(frames: int, width: int = 0, height: int = 0) -> dict:
    """Vera Encode's widgets: the first `frames` frames, model at width x height (0 = auto)."""
    return {"frame_policy": "crop", "work_width": width, "work_height": height, "start_frame": 0,
            "frame_count": frames, "frame_stride": 1, "fps": 16.0}


def _finish(nodes, vae: tuple[int, int], alpha_cutoff: float, prefix: str) -> None:
    nodes += [
        Node(20, "VeraDecodeLayers", "Vera Decode Layers", {"alpha_cutoff": alpha_cutoff},
             {"vae": vae, "vera_layers": (12, 0)}),
        Node(21, "VeraComposite", "Vera Composite", {"recover_semi_transparent": False},
             {"source": (20, 3), "edit_layer": (20, 0), "alpha": (20, 1), "vera_shot": (20, 6)}),
        Node(22, "VeraSaveLayers", "Vera Save Layers",
             {"filename_prefix": prefix, "fps": 0.0, "rgba_format": "mov", "exr": "off",
              "exr_alpha": "premultiplied"},
             {"edit_layer": (20, 0), "alpha": (20, 1), "final": (21, 0), "source": (20, 3),
              "vera_shot": (20, 6)}),
        Node(23, "VeraDifferenceHeatmap", "Vera Difference Heatmap", {"gain": 4.0}, {"source": (20, 3), "output": (21, 0)}),
        Node(24, "PreviewImage", "Difference preview", links={"images": (23, 0)}),
        Node(25, "SaveVideo", "Final video (with sound)",
             {"filename_prefix": f"{prefix}_final", "format": "auto", "codec": "auto"},
             {"video": (21, 2)}),
    ]


def loader_widgets(pack, model_name: str) -> dict:
    """Load Vera Model's widgets: the model, and the node's own defaults for the rest."""
    spec = pack.NODE_CLASS_MAPPINGS["VeraLoadModel"].INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    return {name: model_name if name == "model_name" else options["default"]
            for name, (_, options) in inputs.items()}


def sampler_widgets(settings, seed: int = 1) -> dict:
    """The Vera Sampler's widget values from a `SamplingSettings` (the seed is the workflow's)."""
    return {"seed": seed, "steps": settings.steps, "cfg": settings.cfg, "shift": settings.shift,
            "sampler": settings.sampler, "batch_cfg": settings.batch_cfg}


LONG_SHOT_FRAMES = 65  # vera-tiny's long-shot example: 5 of its 17-frame windows


def window_widgets(settings, mode: str = "windows") -> dict:
    """Vera Context Windows' widget values from a `SamplingSettings` (its window fields)."""
    return {"mode": mode, "window": settings.window, "window_overlap": settings.window_overlap,
            "window_fuse": settings.window_fuse, "window_noise": settings.window_noise}


def tiny_workflow(task: str, pack) -> list[Node]:
    """vera-tiny on CPU: its bundled VAE and text encoder, model run at its training size, layers
    scaled back; clip length and sampling settings from its recipe. long_shot: object addition
    over LONG_SHOT_FRAMES frames, sampled in vera-tiny's own context windows."""
    recipe, defaults = pack.vera.edit.bundle.tiny_recipe(), pack.vera.edit.bundle.tiny_defaults()
    height, width = recipe["resolution"]
    nodes: list[Node] = []
    source = _source(nodes, "vera_example.mp4")
    prompt = ("replace the background with a blue and white stripes"
              if task == "background_change"
              else "add a large red circle moving from left to right")
    nodes += [
        Node(4, "VeraLoadModel", "Load Vera Model", loader_widgets(pack, "vera-tiny")),
        Node(5, "VeraBundledVAE", "Vera Bundled VAE", links={"vera_model": (4, 0)}),
        Node(6, "VeraTextEncode", "Positive prompt", {"text": prompt}, {"vera_model": (4, 0)}),
        Node(7, "VeraTextEncode", "Negative prompt", {"text": defaults.negative_prompt},
             {"vera_model": (4, 0)}),
    ]
    encode_links = {"vae": (5, 0), "video": (source, 0)}
    if task == "background_change":  # edit region = everything but a box around the person (1 = may change)
        nodes += [Node(8, "SolidMask", "Whole frame", {"value": 1.0, "width": 176, "height": 144}),
                  Node(9, "SolidMask", "Subject box", {"value": 0.0, "width": 116, "height": 144}),
                  Node(10, "MaskComposite", "Edit region (1 = may change)", {"x": 34, "y": 0, "operation": "multiply"},
                       {"destination": (8, 0), "source": (9, 0)})]
        encode_links["edit_region"] = (10, 0)
    sampler_links = {"vera_model": (4, 0), "positive": (6, 0), "negative": (7, 0),
                     "vera_source": (11, 0)}
    frames = recipe["frames"]
    if task == "long_shot":
        nodes.append(Node(14, "VeraContextWindows", "Vera Context Windows",
                          window_widgets(defaults)))
        sampler_links["context_windows"] = (14, 0)
        frames = LONG_SHOT_FRAMES
    nodes += [
        Node(11, "VeraEncode", "Vera Encode", encode_widgets(frames, width, height),
             encode_links),
        Node(12, "VeraSampler", "Vera Sampler", sampler_widgets(defaults), sampler_links),
    ]
    if task == "layer_stack":
        _second_edit(nodes, defaults, width, height)
        return nodes
    _finish(nodes, (5, 0), defaults.alpha_cutoff, f"vera/tiny_{task}")
    return nodes


def _second_edit(nodes, defaults, width: int, height: int) -> None:
    """The first edit decoded and stacked, a second edit made on its final and stacked over it,
    the stack saved."""
    nodes += [
        Node(20, "VeraDecodeLayers", "Vera Decode Layers", {"alpha_cutoff": defaults.alpha_cutoff},
             {"vae": (5, 0), "vera_layers": (12, 0)}),
        Node(30, "VeraLayerStack", "Vera Layer Stack (edit 1)", links={
            "source": (20, 3), "edit_layer": (20, 0), "alpha": (20, 1), "vera_shot": (20, 6)}),
        Node(31, "VeraTextEncode", "Second prompt",
             {"text": "add a small green square moving from top to bottom"},
             {"vera_model": (4, 0)}),
        Node(32, "VeraEncode", "Vera Encode (edit 2)", encode_widgets(17, width, height),
             {"vae": (5, 0), "frames": (30, 1)}),
        Node(33, "VeraSampler", "Vera Sampler (edit 2)", sampler_widgets(defaults, seed=2),
             {"vera_model": (4, 0), "positive": (31, 0), "negative": (7, 0),
              "vera_source": (32, 0)}),
        Node(34, "VeraDecodeLayers", "Vera Decode Layers (edit 2)",
             {"alpha_cutoff": defaults.alpha_cutoff}, {"vae": (5, 0), "vera_layers": (33, 0)}),
        Node(35, "VeraLayerStack", "Vera Layer Stack (edit 2)", links={
            "source": (34, 3), "edit_layer": (34, 0), "alpha": (34, 1), "below": (30, 0),
            "vera_shot": (34, 6)}),
        Node(36, "VeraSaveLayers", "Vera Save Layers (the stack)",
             {"filename_prefix": "vera/tiny_layer_stack", "fps": 0.0, "rgba_format": "mov",
              "exr": "off", "exr_alpha": "premultiplied"},
             {"edit_layer": (34, 0), "alpha": (34, 1), "final": (35, 1), "source": (34, 3),
              "vera_shot": (34, 6), "stack": (35, 0)}),
    ]


def wan_workflow(task: str, pack) -> list[Node]:
    """Wan2.1-1.3B-based Vera weights with ComfyUI's own Wan VAE and umT5 text encoder, 49 frames at 832x480."""
    nodes: list[Node] = []
    defaults = pack.vera.sampling.settings.WAN_DEFAULTS
    source = _source(nodes, "vera_source_832x480.mp4")
    prompt = ("add a red vintage bicycle leaning against the wall on the left" if task == "object_addition"
              else "replace the background with a snowy mountain village at dusk")
    nodes += [
        Node(4, "VeraLoadModel", "Load Vera Model",
             loader_widgets(pack, "Vera-MoT-1.3B.safetensors")),
        Node(5, "VAELoader", "Wan2.1 VAE", {"vae_name": "wan_2.1_vae.safetensors"},
             models=["wan_2.1_vae.safetensors"]),
        Node(13, "CLIPLoader", "umT5 text encoder", {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                     "type": "wan", "device": "default"},
             models=["umt5_xxl_fp8_e4m3fn_scaled.safetensors"]),
        Node(6, "CLIPTextEncode", "Positive prompt", {"text": prompt}, {"clip": (13, 0)}),
        Node(7, "CLIPTextEncode", "Negative prompt", {"text": defaults.negative_prompt},
             {"clip": (13, 0)}),
    ]
    encode_links = {"vae": (5, 0), "video": (source, 0)}
    if task == "background_change":
        nodes.append(Node(10, "LoadImageMask", "Edit region (white = may change)",
                          {"image": "vera_background_mask.png", "channel": "red"}))
        encode_links["edit_region"] = (10, 0)
    nodes += [
        Node(11, "VeraEncode", "Vera Encode", encode_widgets(49), encode_links),
        Node(12, "VeraSampler", "Vera Sampler", sampler_widgets(defaults),
             {"vera_model": (4, 0), "positive": (6, 0), "negative": (7, 0), "vera_source": (11, 0)}),
    ]
    _finish(nodes, (5, 0), defaults.alpha_cutoff, f"vera/wan13b_{task}")
    return nodes


OUTPUTS_NOTE = """## What you get
**Vera Save Layers** writes one new folder per run in `ComfyUI/output/vera/`:
- `*_edit_layer_rgba/` PNGs and `.mov` (ProRes 4444, straight alpha): the edit layer for your editor
- `*_alpha/` matte PNGs and `.mp4` (white = edit layer opaque)
- `*_final_composite/` lossless PNGs and `.mp4` with the source's sound: untouched pixels are the
  source's own, bit for bit
- `settings.json` (model, prompt, seed, steps, cfg, frame rate, context windows, versions); the
  PNGs and the `.mov` carry this workflow (drag a PNG onto ComfyUI to get it back)

Videos are written at the source's exact frame rate (24000/1001 stays 24000/1001), BT.709 and
tagged so. Set `exr` on Save Layers for half-float OpenEXR sequences (linear or sRGB).

**Inside ComfyUI**: `edit_rgba` (Decode Layers, Composite) is a 4-channel IMAGE for Save Image or
other video writers. `JoinImageWithAlpha` wants `mask (1 = transparent)`; `ImageCompositeMasked`
(destination = source, source = edit layer) wants `alpha (1 = opaque)`."""

TINY_NOTE = """# Vera: layered video editing (vera-tiny, runs on a CPU)
1. Put a short clip in `ComfyUI/input/` and pick it in **Source video** (vera_example.mp4 here).
2. Change the instruction in **Positive prompt**; press **Queue**.

vera-tiny is the small model embedded in the pack (no download): it was trained on synthetic
shapes at 64x64, so it adds simple coloured shapes or replaces the background with stripes. It
shows the whole path in about a minute on a CPU; real edits need the Vera-1.3B workflows.

**Vera Encode** takes the frames `start_frame`, `frame_count` and `frame_stride` of the video,
decoding only those; the frame rate and sound travel to the outputs. A shot longer than
vera-tiny's 17-frame window is sampled in context windows (see the long-shot workflow)."""

WAN_NOTE = """# Vera: layered video editing (Vera-1.3B on Wan2.1)
**Model files** (ComfyUI offers to download the Wan2.1 ones when they are missing):
- `models/diffusion_models/Vera-MoT-1.3B.safetensors`: the Vera weights (netflix/Vera-MoT-1.3B on
  Hugging Face, or your own training run; any of the layouts in the pack's README loads)
- `models/vae/wan_2.1_vae.safetensors`
- `models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors`

1. Pick your clip in **Source video** (`ComfyUI/input/`).
2. Write the instruction in **Positive prompt**; press **Queue**.

**Vera Encode** edits `frame_count` frames (49 here) from `start_frame`, decoding only those; work
size 0 x 0 = auto (about 832x480 with your clip's aspect ratio). A shot longer than 81 frames is
sampled in context windows of 81 (connect **Vera Context Windows** to the sampler to change them).
Memory: see the pack's README (`python -m vera plan`)."""

LONG_SHOT_NOTE = f"""## Long shots: context windows
**Vera Encode** reads {LONG_SHOT_FRAMES} frames here, more than vera-tiny's 17-frame clip. The
**Vera Sampler** samples them as overlapping windows (**Vera Context Windows**: 17 frames, 8 shared
by neighbours) blended at every step, so memory stays that of one window however long the shot.
Each window sees only its own frames: expect the edit to drift a little along the shot, and raise
`window_overlap` if you see where windows hand over. `settings.json` lists the windows used.
`mode` off samples the clip in one piece (at most 161 frames)."""

LAYER_STACK_NOTE = """## Layer stacks: an edit on top of an edit
The first edit's **Vera Layer Stack** composites its layer over the shot; its `final` is the
second **Vera Encode**'s frames, and the second **Vera Layer Stack** puts the new layer on top
(`below`). **Vera Save Layers** writes every layer with its matte and settings, the shot's
frames, `stack.json` and comp scripts for Nuke and Blender. Drop, reorder or re-time layers in
`stack.json` and run `python -m vera stack render FOLDER --out NEW` to composite again without
the model."""

BACKGROUND_NOTE = """## Background change
The **edit region** mask says where the edit may change the picture (white / 1 = may change, e.g.
the background; the subject stays). One frame is used for every frame; a mask of another size with
the video's aspect ratio is resized to it."""

WORKFLOWS = {
    "vera_tiny_object_addition": (lambda pack: tiny_workflow("object_addition", pack),
                                  [TINY_NOTE, OUTPUTS_NOTE]),
    "vera_tiny_background_change": (lambda pack: tiny_workflow("background_change", pack),
                                    [TINY_NOTE + "\n\n" + BACKGROUND_NOTE.replace("## ", "### ")
                                     + "\nThe box here is drawn for a 176x144 clip.",
                                     OUTPUTS_NOTE]),
    "vera_tiny_long_shot": (lambda pack: tiny_workflow("long_shot", pack),
                            [TINY_NOTE + "\n\n" + LONG_SHOT_NOTE.replace("## ", "### "),
                             OUTPUTS_NOTE]),
    "vera_tiny_layer_stack": (lambda pack: tiny_workflow("layer_stack", pack),
                              [TINY_NOTE + "\n\n" + LAYER_STACK_NOTE.replace("## ", "### "),
                               OUTPUTS_NOTE]),
    "vera_wan13b_object_addition": (lambda pack: wan_workflow("object_addition", pack),
                                    [WAN_NOTE, OUTPUTS_NOTE]),
    "vera_wan13b_background_change": (lambda pack: wan_workflow("background_change", pack),
                                      [WAN_NOTE + "\n\n" + BACKGROUND_NOTE.replace("## ", "### ")
                                       + "\nPut your mask image in `ComfyUI/input/` and pick it in "
                                         "**Edit region**.", OUTPUTS_NOTE]),
}


def render_all(pack) -> dict[Path, str]:
    files = {}
    for name, (build, notes) in WORKFLOWS.items():
        nodes = build(pack)
        ui = to_ui(nodes, pack, notes)
        files[ROOT / "workflows" / f"{name}.json"] = json.dumps(ui, indent=1) + "\n"
        files[ROOT / "workflows" / "api" / f"{name}_api.json"] = json.dumps(to_api(nodes), indent=1) + "\n"
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file is stale")
    args = parser.parse_args()
    stale = []
    for path, text in render_all(load_pack()).items():
        if not path.is_file() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    for path in stale:
        print(("stale: " if args.check else "wrote: ") + str(path.relative_to(ROOT)))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
