"""Comp scripts that open a run's layer stack in a compositor: Nuke (`comp.nk`) and Blender
(`comp_blender.py`, which builds the compositor node tree and can render it headless).

Both read every file raw (no colour conversion) and merge each straight-alpha layer over the
source in the stack's order, so they reproduce Vera's composite on sRGB-encoded values
(`layers.COMPOSITING`). Paths inside the run folder are relative to the script's own folder.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

from ..frames import layers
from ..media.files import atomic_path
from .stack import Stack, write_stack

NUKE_SCRIPT = "comp.nk"
BLENDER_SCRIPT = "comp_blender.py"


def write_comp_scripts(root: Path, stack: Stack) -> dict[str, str]:
    """Write both scripts into `root` (the run folder the stack describes); {kind: file}."""
    frames = _png_sequences(root, stack)
    for name, text in ((NUKE_SCRIPT, nuke_script(stack, frames)),
                       (BLENDER_SCRIPT, blender_script(stack, frames))):
        with atomic_path(root / name) as tmp:
            tmp.write_text(text)
    return {"nuke_script": NUKE_SCRIPT, "blender_script": BLENDER_SCRIPT}


def finish_stack(root: Path, stack: Stack) -> dict[str, str]:
    """Write the comp scripts, then stack.json (last: its presence marks a finished run);
    {kind: file}."""
    files = write_comp_scripts(root, stack)
    write_stack(root, stack)
    return {**files, "stack": "stack.json"}


def _first_png(root: Path, folder: str) -> str:
    """The first PNG of a sequence folder, relative to `root`."""
    files = sorted(p.name for p in (root / folder).iterdir() if p.suffix.lower() == ".png")
    return f"{folder.rstrip('/')}/{files[0]}"


def _png_sequences(root: Path, stack: Stack) -> dict:
    """The first frame's file of the source (when copied) and of every layer."""
    found = {"layers": [_first_png(root, layer.rgba) for layer in stack.layers]}
    if stack.source.folder is not None:
        found["source"] = _first_png(root, stack.source.folder)
    return found


def _numbered(first: str) -> str:
    """source/source_00000.png -> source/source_%05d.png (the printf pattern Nuke reads)."""
    name, suffix = first[:-4], first[-4:]
    stem = name.rstrip("0123456789")
    return f"{stem}%0{len(name) - len(stem)}d{suffix}"


# ---------------------------------------------------------------------------------------------
# Nuke

def _nuke_path(relative: str) -> str:
    return "\\[file dirname \\[value root.name]]/" + relative


def nuke_script(stack: Stack, files: dict) -> str:
    """A Nuke script: Read nodes (raw) for the source and each layer, each layer premultiplied
    and merged over what lies below it at its frame offset, and a Write node (raw PNG)."""
    source, last = stack.source, stack.source.count - 1
    width, height = source.size
    lines = ["#! nuke", "version 13.2 v1",
             f"# Vera layer stack: {len(stack.layers)} layer(s) over the source.",
             f"# {layers.COMPOSITING}",
             "# Every Read and the Write are raw: values go through unconverted, so Merge (over)",
             "# blends the sRGB-encoded values as Vera does.",
             "Root {", " inputs 0", " first_frame 0", f" last_frame {last}",
             f" fps {float(source.rate):.6f}",
             f' format "{width} {height} 0 0 {width} {height} 1 vera_shot"', "}"]
    if source.folder is not None:
        lines += _nuke_read("Source", _nuke_path(_numbered(files["source"])), 0, last)
    else:
        lines += _nuke_read("Source", source.path, 1, source.start + source.count)
        lines += ["TimeOffset {", f" time_offset {-(source.start + 1)}", " name SourceTime",
                  "}"]
        if source.crop is not None:
            top, left, crop_h, crop_w = source.crop
            full_h = top * 2 + crop_h  # the crop is centred
            lines += ["Crop {", f" box {{{left} {full_h - top - crop_h} {left + crop_w} "
                      f"{full_h - top}}}", " reformat true", " name SourceCrop", "}"]
    lines.append("set N_below [stack 0]")
    for number, (layer, first) in enumerate(zip(stack.layers, files["layers"]), start=1):
        lines += _nuke_read(f"Layer{number}", _nuke_path(_numbered(first)), 0,
                            layer.frames - 1)
        lines += ["TimeOffset {", f" time_offset {layer.offset}", f" name Layer{number}Time",
                  "}", "Premult {", f" name Layer{number}Premult", "}", "push $N_below",
                  "Merge2 {", " inputs 2", " operation over", f" name Over{number}",
                  f' label "{_nuke_text(layer.prompt or layer.name)}"', "}",
                  "set N_below [stack 0]"]
    lines += ["Write {", f' file "{_nuke_path("nuke_render/final_%05d.png")}"', " raw true",
              " file_type png", ' datatype "8 bit"', " channels rgb", " create_directories true",
              " name WriteFinal", "}", ""]
    return "\n".join(lines)


def _nuke_read(name: str, file: str, first: int, last: int) -> list[str]:
    return ["Read {", " inputs 0", f' file "{file}"', f" first {first}", f" last {last}",
            f" origfirst {first}", f" origlast {last}", " before black", " after black",
            " raw true", f" name {name}", "}"]


def _nuke_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("[", "\\[").replace("]", "\\]")


# ---------------------------------------------------------------------------------------------
# Blender

def blender_script(stack: Stack, files: dict) -> str:
    """A Python file for Blender (3.x and later) that builds the stack as a compositor node tree
    (Image nodes read as Non-Color, Alpha Over with Convert Premultiplied for the straight layers,
    the Raw view so values pass unchanged); run headless it renders the frames."""
    source = stack.source
    plan = {
        "size": list(source.size), "frames": source.count,
        "rate": [Fraction(source.rate).numerator, Fraction(source.rate).denominator],
        "source": ({"file": files["source"], "movie": False, "first": 0}
                   if source.folder is not None else
                   {"file": source.path, "movie": True, "first": source.start,
                    "crop": None if source.crop is None else list(source.crop)}),
        "layers": [{"file": first, "frames": layer.frames, "offset": layer.offset,
                    "name": layer.name} for layer, first in zip(stack.layers, files["layers"])],
    }
    return _BLENDER_TEMPLATE.replace("@PLAN@", json.dumps(plan, indent=1)).replace(
        "@COMPOSITING@", layers.COMPOSITING)


_BLENDER_TEMPLATE = '''"""Vera layer stack as a Blender compositor node tree (by ComfyUI-Vera).

@COMPOSITING@

Open it in Blender's Scripting tab and run it, or render headless:
    blender -b -P comp_blender.py -- --render OUT_FOLDER
Images are read as Non-Color and the view is Raw, so the compositor blends the files' own
sRGB-encoded values as Vera does; Alpha Over converts the straight-alpha layers.
"""
import json
import os
import sys

import bpy

HERE = os.path.dirname(os.path.abspath(__file__))
PLAN = json.loads("""@PLAN@""")


def load(path, movie):
    path = path if os.path.isabs(path) else os.path.join(HERE, path)
    image = bpy.data.images.load(path, check_existing=False)
    image.source = "MOVIE" if movie else "SEQUENCE"
    image.colorspace_settings.name = "Non-Color"
    image.alpha_mode = "STRAIGHT"
    return image


def image_node(tree, path, movie, frames, first_file_frame, scene_frame):
    """Show file frame `first_file_frame` (0-based) at scene frame `scene_frame`, onwards."""
    node = tree.nodes.new("CompositorNodeImage")
    node.image = load(path, movie)
    node.frame_duration = frames
    node.frame_start = scene_frame
    node.frame_offset = first_file_frame if movie else first_file_frame + file_number(path)
    node.use_cyclic = False
    return node


def file_number(path):
    """A sequence's first file number (Blender counts frames from it)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    digits = stem[len(stem.rstrip("0123456789")):]
    return int(digits) - 1 if digits else 0


def build(scene):
    scene.use_nodes = True
    tree = scene.node_tree
    tree.nodes.clear()
    width, height = PLAN["size"]
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    numerator, denominator = PLAN["rate"]
    render.fps = round(numerator / denominator)
    render.fps_base = render.fps * denominator / numerator
    render.dither_intensity = 0.0
    render.use_compositing = True
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGB"
    render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Raw"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.frame_start, scene.frame_end = 0, PLAN["frames"] - 1
    source = PLAN["source"]
    below = image_node(tree, source["file"], source["movie"], PLAN["frames"],
                       source["first"], 0).outputs["Image"]
    if source.get("crop"):
        top, left, crop_h, crop_w = source["crop"]
        crop = tree.nodes.new("CompositorNodeCrop")
        crop.use_crop_size = True
        crop.relative = False
        full_h = top * 2 + crop_h
        crop.min_x, crop.max_x = left, left + crop_w
        crop.min_y, crop.max_y = full_h - top - crop_h, full_h - top
        tree.links.new(below, crop.inputs["Image"])
        below = crop.outputs["Image"]
    for layer in PLAN["layers"]:
        node = image_node(tree, layer["file"], False, layer["frames"], 0, layer["offset"])
        over = tree.nodes.new("CompositorNodeAlphaOver")
        over.label = layer["name"]
        over.use_premultiply = True
        tree.links.new(below, over.inputs[1])
        tree.links.new(node.outputs["Image"], over.inputs[2])
        below = over.outputs["Image"]
    composite = tree.nodes.new("CompositorNodeComposite")
    composite.use_alpha = False
    tree.links.new(below, composite.inputs["Image"])


def main():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    scene = bpy.context.scene
    build(scene)
    if "--render" in argv:
        out = os.path.abspath(argv[argv.index("--render") + 1])
        scene.render.filepath = os.path.join(out, "final_#####")
        bpy.ops.render.render(animation=True)


main()
'''
