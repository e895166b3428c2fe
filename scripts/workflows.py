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
    "GetVideoComponents": ([("video", "VIDEO")], [], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")], []),
    "ImageFromBatch": ([("image", "IMAGE")], ["batch_index", "length"], [("IMAGE", "IMAGE")], []),
    "SolidMask": ([], ["value", "width", "height"], [("MASK", "MASK")], []),
    "MaskComposite": ([("destination", "MASK"), ("source", "MASK")], ["x", "y", "operation"], [("MASK", "MASK")], []),
    "LoadImageMask": ([], ["image", "channel"], [("MASK", "MASK")], ["image"]),
    "VAELoader": ([], ["vae_name"], [("VAE", "VAE")], []),
    "CLIPLoader": ([], ["clip_name", "type", "device"], [("CLIP", "CLIP")], []),
    "CLIPTextEncode": ([("clip", "CLIP")], ["text"], [("CONDITIONING", "CONDITIONING")], []),
    "PreviewImage": ([("images", "IMAGE")], [], [], []),
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


def to_ui(nodes: list[Node], pack, note: str) -> dict:
    depth, rows, links, ui_nodes = _depths(nodes), {}, [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    for n in nodes:
        in_links, _, _, _ = node_signature(n.class_type, pack)
        for slot, (name, kind) in enumerate(in_links):
            if name in n.links:
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
            "inputs": [{"name": name, "type": kind, "link": link_of.get((n.id, slot))}
                       for slot, (name, kind) in enumerate(in_links) if (n.id, slot) in link_of or name in n.links],
            "outputs": [{"name": name, "type": kind, "links": out_links.get((n.id, slot), []), "slot_index": slot}
                        for slot, (name, kind) in enumerate(outputs)],
            "properties": {"Node name for S&R": n.class_type},
            "widgets_values": [("fixed" if w is None else n.widgets[w]) for w in widget_names] + extra,
        })
    order = sorted(nodes, key=lambda n: (depth[n.id], n.id))
    for i, n in enumerate(order):
        next(u for u in ui_nodes if u["id"] == n.id)["order"] = i
    return {"last_node_id": max(n.id for n in nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": {"vera_note": note}, "version": 0.4}


def ui_to_api(ui: dict, pack) -> dict:
    """A UI-format workflow -> API format (what the frontend's "Export (API)" does for these nodes)."""
    links = {l[0]: l for l in ui["links"]}
    api = {}
    for node in ui["nodes"]:
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


def _source(nodes, file_name: str, frames: int) -> int:
    nodes += [Node(1, "LoadVideo", "Source video", {"file": file_name}),
              Node(2, "GetVideoComponents", "Get video frames", links={"video": (1, 0)}),
              Node(3, "ImageFromBatch", "Source frames", {"batch_index": 0, "length": frames}, {"image": (2, 0)})]
    return 3


def _finish(nodes, vae: tuple[int, int], alpha_cutoff: float, prefix: str) -> None:
    nodes += [
        Node(20, "VeraDecodeLayers", "Vera Decode Layers", {"alpha_cutoff": alpha_cutoff},
             {"vae": vae, "vera_layers": (12, 0)}),
        Node(21, "VeraComposite", "Vera Composite", {"recover_semi_transparent": False},
             {"source": (20, 3), "edit_layer": (20, 0), "alpha": (20, 1)}),
        Node(22, "VeraSaveLayers", "Vera Save Layers", {"filename_prefix": prefix, "fps": 16.0, "rgba_format": "mov"},
             {"edit_layer": (20, 0), "alpha": (20, 1), "final": (21, 0), "source": (20, 3)}),
        Node(23, "VeraDifferenceHeatmap", "Vera Difference Heatmap", {"gain": 4.0}, {"source": (20, 3), "output": (21, 0)}),
        Node(24, "PreviewImage", "Difference preview", links={"images": (23, 0)}),
    ]


def loader_widgets(pack, model_name: str) -> dict:
    """Load Vera Model's widgets: the model, and the node's own defaults for the rest."""
    spec = pack.NODE_CLASS_MAPPINGS["VeraLoadModel"].INPUT_TYPES()["required"]
    return {"model_name": model_name, "weight_dtype": spec["weight_dtype"][1]["default"],
            "attention": spec["attention"][1]["default"]}


def sampler_widgets(settings, seed: int = 1) -> dict:
    """The Vera Sampler's widget values from a `SamplingSettings` (the seed is the workflow's)."""
    return {"seed": seed, "steps": settings.steps, "cfg": settings.cfg, "shift": settings.shift,
            "sampler": settings.sampler, "batch_cfg": settings.batch_cfg}


def tiny_workflow(task: str, pack) -> list[Node]:
    """vera-tiny on CPU: its bundled VAE and text encoder, model run at its training size, layers
    scaled back; clip length and sampling settings from its recipe."""
    recipe, defaults = pack.vera.bundle.tiny_recipe(), pack.vera.bundle.tiny_defaults()
    height, width = recipe["resolution"]
    nodes: list[Node] = []
    frames_node = _source(nodes, "vera_example.mp4", recipe["frames"])
    prompt = ("add a large red circle moving from left to right" if task == "object_addition"
              else "replace the background with a blue and white stripes")
    nodes += [
        Node(4, "VeraLoadModel", "Load Vera Model", loader_widgets(pack, "vera-tiny")),
        Node(5, "VeraBundledVAE", "Vera Bundled VAE", links={"vera_model": (4, 0)}),
        Node(6, "VeraTextEncode", "Positive prompt", {"text": prompt}, {"vera_model": (4, 0)}),
        Node(7, "VeraTextEncode", "Negative prompt", {"text": defaults.negative_prompt},
             {"vera_model": (4, 0)}),
    ]
    encode_links = {"vae": (5, 0), "video": (frames_node, 0)}
    if task == "background_change":  # edit region = everything but a box around the person (1 = may change)
        nodes += [Node(8, "SolidMask", "Whole frame", {"value": 1.0, "width": 176, "height": 144}),
                  Node(9, "SolidMask", "Subject box", {"value": 0.0, "width": 116, "height": 144}),
                  Node(10, "MaskComposite", "Edit region (1 = may change)", {"x": 34, "y": 0, "operation": "multiply"},
                       {"destination": (8, 0), "source": (9, 0)})]
        encode_links["edit_region"] = (10, 0)
    nodes += [
        Node(11, "VeraEncode", "Vera Encode",
             {"frame_policy": "crop", "work_width": width, "work_height": height}, encode_links),
        Node(12, "VeraSampler", "Vera Sampler", sampler_widgets(defaults),
             {"vera_model": (4, 0), "positive": (6, 0), "negative": (7, 0), "vera_source": (11, 0)}),
    ]
    _finish(nodes, (5, 0), defaults.alpha_cutoff, f"vera/tiny_{task}")
    return nodes


def wan_workflow(task: str, pack) -> list[Node]:
    """Wan2.1-1.3B-based Vera weights with ComfyUI's own Wan VAE and umT5 text encoder, 49 frames at 832x480."""
    nodes: list[Node] = []
    defaults = pack.vera.settings.WAN_DEFAULTS
    frames_node = _source(nodes, "vera_source_832x480.mp4", 49)
    prompt = ("add a red vintage bicycle leaning against the wall on the left" if task == "object_addition"
              else "replace the background with a snowy mountain village at dusk")
    nodes += [
        Node(4, "VeraLoadModel", "Load Vera Model",
             loader_widgets(pack, "Vera-MoT-1.3B.safetensors")),
        Node(5, "VAELoader", "Wan2.1 VAE", {"vae_name": "wan_2.1_vae.safetensors"}),
        Node(13, "CLIPLoader", "umT5 text encoder", {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                     "type": "wan", "device": "default"}),
        Node(6, "CLIPTextEncode", "Positive prompt", {"text": prompt}, {"clip": (13, 0)}),
        Node(7, "CLIPTextEncode", "Negative prompt", {"text": defaults.negative_prompt},
             {"clip": (13, 0)}),
    ]
    encode_links = {"vae": (5, 0), "video": (frames_node, 0)}
    if task == "background_change":
        nodes.append(Node(10, "LoadImageMask", "Edit region (white = may change)",
                          {"image": "vera_background_mask.png", "channel": "red"}))
        encode_links["edit_region"] = (10, 0)
    nodes += [
        Node(11, "VeraEncode", "Vera Encode", {"frame_policy": "crop", "work_width": 832, "work_height": 480},
             encode_links),
        Node(12, "VeraSampler", "Vera Sampler", sampler_widgets(defaults),
             {"vera_model": (4, 0), "positive": (6, 0), "negative": (7, 0), "vera_source": (11, 0)}),
    ]
    _finish(nodes, (5, 0), defaults.alpha_cutoff, f"vera/wan13b_{task}")
    return nodes


WORKFLOWS = {
    "vera_tiny_object_addition": (lambda pack: tiny_workflow("object_addition", pack),
                                  "vera-tiny on CPU: put a short clip in ComfyUI/input as vera_example.mp4 "
                                  "(or pick yours in Source video)."),
    "vera_tiny_background_change": (lambda pack: tiny_workflow("background_change", pack),
                                    "vera-tiny on CPU; the edit region is a box-shaped mask for a 176x144 clip."),
    "vera_wan13b_object_addition": (lambda pack: wan_workflow("object_addition", pack),
                                    "Vera-1.3B weights in models/diffusion_models, wan_2.1_vae.safetensors in "
                                    "models/vae, umt5_xxl_fp8_e4m3fn_scaled.safetensors in models/text_encoders."),
    "vera_wan13b_background_change": (lambda pack: wan_workflow("background_change", pack),
                                      "As the object-addition workflow, plus a mask image in ComfyUI/input (white = "
                                      "background that may change)."),
}


def render_all(pack) -> dict[Path, str]:
    files = {}
    for name, (build, note) in WORKFLOWS.items():
        nodes = build(pack)
        files[ROOT / "workflows" / f"{name}.json"] = json.dumps(to_ui(nodes, pack, note), indent=1) + "\n"
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
