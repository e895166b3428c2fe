"""Vera Save Layers: the layer files an artist takes into compositing, written into ComfyUI's output folder."""
from __future__ import annotations

import shutil
import uuid

import torch

from ..vera.edit.deliverables import RGBA_FORMATS, ExrOptions, LayerFileWriter, run_settings
from ..vera.edit.comp_scripts import finish_stack
from ..vera.edit.stack import StackLayer, write_stack_folder
from ..vera.frames import layers
from ..vera.media.clip import SourceClip
from ..vera.media.exr import ALPHA_MODES, TRANSFERS
from ..vera.media.naming import expand_tokens, publish_folder, safe_prefix
from ..vera.media.video import exact_rate
from . import host
from .handles import VERA_SHOT, VERA_STACK
from .layer_ops import as_alpha_frames
from .previews import layer_previews

EXR_CHOICES = ("off",) + TRANSFERS
CHUNK_FRAMES = 16  # frames converted to 8 bits and written at a time (no whole-shot copies)


def prompt_texts(graph: dict | None, node_id=None, input_name: str = "edit_layer"
                 ) -> tuple[str | None, str | None]:
    """(positive, negative) prompt text of a Vera Sampler in an API-format prompt graph: the
    nearest one upstream of node `node_id`'s `input_name` (so each edit of a layer stack gets its
    own), else the first in the graph; the `text` input of the nodes feeding its positive and
    negative inputs, when they are text."""
    graph = graph or {}
    sampler = _upstream_sampler(graph, node_id, input_name) if node_id is not None else None
    if sampler is None:
        sampler = next((n for n in graph.values() if n.get("class_type") == "VeraSampler"), None)
    texts = []
    for name in ("positive", "negative"):
        link = ((sampler or {}).get("inputs") or {}).get(name)
        node = graph.get(str(link[0])) if isinstance(link, list) and link else None
        text = ((node or {}).get("inputs") or {}).get("text")
        texts.append(text if isinstance(text, str) else None)
    return texts[0], texts[1]


def _upstream_sampler(graph: dict, node_id, input_name: str) -> dict | None:
    """The VeraSampler nearest upstream of `input_name` of node `node_id` (breadth first)."""
    link = ((graph.get(str(node_id)) or {}).get("inputs") or {}).get(input_name)
    queue, seen = ([str(link[0])] if isinstance(link, list) and link else []), set()
    while queue:
        current = queue.pop(0)
        node = graph.get(current)
        if current in seen or node is None:
            continue
        seen.add(current)
        if node.get("class_type") == "VeraSampler":
            return node
        queue += [str(v[0]) for v in (node.get("inputs") or {}).values()
                  if isinstance(v, list) and v]
    return None


def run_record(shot, graph: dict | None, frames: int, size: tuple[int, int], fps,
               exr_options: ExrOptions | None, node_id=None) -> dict:
    """settings.json for a saved run: what the Vera nodes recorded (with the context windows,
    `[[first, last], ...]` source frames) plus the prompt text (of the sampler upstream of node
    `node_id`'s edit_layer, see `prompt_texts`)."""
    positive, negative = prompt_texts(graph, node_id)
    settings = shot.settings if shot is not None else None
    record = run_settings(settings, model=shot.model_name if shot else None, prompt=positive,
                          frames=frames, size=size, clip=shot.clip if shot else None,
                          extra=dict(saved_fps=str(fps), exr=exr_options and vars(exr_options),
                                     model_evaluations=shot and shot.evaluations,
                                     loras=list(shot.loras) if shot else [],
                                     windows=shot.windows if shot else None))
    if negative is not None and settings is not None:
        record["negative_prompt"] = negative
    return record


class VeraSaveLayers:
    DESCRIPTION = ("Write the edit as compositing assets into ComfyUI's output folder, one new folder per run "
                   "(nothing is overwritten): the RGBA edit layer as PNGs plus ProRes 4444 .mov "
                   "and/or WebM VP9 with alpha, the alpha matte (PNGs + mp4), the final composite "
                   "(lossless PNGs + mp4 with the source's sound), optional OpenEXR sequences, and "
                   "settings.json. Videos are BT.709 and tagged so; PNGs and the .mov carry the "
                   "prompt and workflow, as Save Image does.")
    CATEGORY = "Vera/layers"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "edit_layer": ("IMAGE", {"tooltip": "The edit layer (from Vera Decode Layers)."}),
                "alpha": ("MASK", {"tooltip": "The matte, 1 = edit layer opaque; stored as the RGBA alpha."}),
                "final": ("IMAGE", {"tooltip": "The final composite (from Vera Composite)."}),
                "filename_prefix": ("STRING", {"default": "vera/edit", "tooltip": (
                    "Subfolder/name inside the output folder; a numbered folder name_00001 is "
                    "created per run. Tokens as in Save Image: %date:yyyy-MM-dd%, %year%, %month%, "
                    "%day%, %hour%, %minute%, %second%, %width%, %height%, %Node title.input% "
                    "(e.g. %Vera Sampler.seed%). Unsafe characters become '_'.")}),
                "fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1000.0, "step": 0.001,
                                  "tooltip": (
                    "Frame rate of the video files; 0 = the source's exact rate (from vera_shot; "
                    "16 without it). 23.976 / 29.97 / 59.94 are written as 24000/1001 etc.")}),
                "rgba_format": (list(RGBA_FORMATS), {"default": "mov", "tooltip": (
                    "Edit layer video with alpha: mov = ProRes 4444 (editing apps), webm = VP9 with alpha "
                    "(browsers), both.")}),
            },
            "optional": {
                "source": ("IMAGE", {"tooltip": (
                    "The source frames the layers line up with: copied losslessly into the run "
                    "(source/) with stack.json and the comp scripts, so the folder rebuilds the "
                    "final alone; also the layer viewer's compare view.")}),
                "vera_shot": (VERA_SHOT, {"tooltip": (
                    "From Vera Decode Layers: the source's frame rate and sound, and the settings "
                    "written to settings.json.")}),
                "exr": (list(EXR_CHOICES), {"default": "off", "tooltip": (
                    "Also write half-float OpenEXR sequences (edit layer RGBA, alpha, final) for "
                    "Nuke and other compositors. linear: sRGB decoded to linear light (what EXR "
                    "users expect); srgb: the PNG values unchanged.")}),
                "exr_alpha": (list(ALPHA_MODES), {"default": "premultiplied", "tooltip": (
                    "The EXR edit layer's colour: premultiplied by alpha (Nuke's convention) or "
                    "straight. The PNGs and videos are always straight.")}),
                "stack": (VERA_STACK, {"tooltip": (
                    "From Vera Layer Stack (its top layer is the edit saved here): also write "
                    "the layers below, the shot's source frames, stack.json and the comp "
                    "scripts; the rate and sound are the shot's. Without it, a connected source "
                    "makes a stack of one.")}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO",
                       "unique_id": "UNIQUE_ID"},
        }

    def save(self, edit_layer, alpha, final, filename_prefix="vera/edit", fps=0.0,
             rgba_format="mov", source=None, vera_shot=None, exr="off",
             exr_alpha="premultiplied", stack=None, prompt=None, extra_pnginfo=None,
             unique_id=None):
        if edit_layer.shape[:3] != final.shape[:3]:
            raise ValueError(f"edit_layer {tuple(edit_layer.shape)} and final {tuple(final.shape)} must have the same "
                             "frames and size")
        if exr not in EXR_CHOICES:
            raise ValueError(f"exr {exr!r}: choose one of {EXR_CHOICES}")
        exr_options = ExrOptions(exr, exr_alpha) if exr != "off" else None
        clip = vera_shot.clip if vera_shot is not None else SourceClip()
        if stack is not None:
            clip = stack.clip
        rate = exact_rate(fps) if fps else clip.rate
        alpha4 = as_alpha_frames(alpha, edit_layer)
        if stack is not None and not torch.equal(stack.layers[-1][0][..., 3:],
                                                 layers.to_uint8(alpha4.float())):
            raise ValueError("stack: its top layer is not the edit saved here; connect the "
                             "edit_layer and alpha that went into that Vera Layer Stack")
        frames, height, width = final.shape[:3]
        prefix = expand_tokens(filename_prefix, size=(height, width), graph=prompt)
        subfolder, name = safe_prefix(prefix)
        metadata = None
        if host.metadata_enabled():
            metadata = {**({"prompt": prompt} if prompt is not None else {}),
                        **(extra_pnginfo or {})}
        record = run_record(vera_shot, prompt, frames, (height, width), rate, exr_options,
                            unique_id)
        root = host.output_dir()
        parent = root / subfolder
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".{name}.{uuid.uuid4().hex[:8]}.partial"
        try:
            with LayerFileWriter(staging, rate, rgba_format, name=f"{name}_", audio=clip.audio,
                                 metadata=metadata, exr_options=exr_options) as writer:
                for first in range(0, frames, CHUNK_FRAMES):
                    part = slice(first, first + CHUNK_FRAMES)
                    writer.add(edit_layer[part, ..., :3].float(), alpha4[part].float(),
                               layers.to_uint8(final[part, ..., :3].float()))
                files = writer.close(settings=record)
            if stack is not None or source is not None:
                below = stack.layers[:-1] if stack is not None else ()
                base = stack.source if stack is not None else layers.to_uint8(
                    source[..., :3].float())
                top = StackLayer(files["edit_layer_png"], frames, record.get("prompt"),
                                 files["settings"])
                finish_stack(staging, write_stack_folder(staging, base, rate, list(below), top,
                                                         files["final_png"], f"{name}_"))
            folder = publish_folder(staging, parent, name)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        files = [dict(filename=p.name, subfolder=p.parent.relative_to(root).as_posix(), type="output")
                 for p in sorted(folder.rglob("*")) if p.is_file()]
        previews = layer_previews(source, edit_layer, alpha4, final)
        previews["folder"] = folder.relative_to(root).as_posix()
        shown = [f for f in files if f["filename"] == f"{name}_final_composite.mp4"]
        return {"ui": {"images": shown, "animated": (True,), "vera_layers": [previews],
                       "vera_files": files}}


NODES = {"VeraSaveLayers": ("Vera Save Layers", VeraSaveLayers)}
