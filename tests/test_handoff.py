"""The compositor hand-off, checked with tools nobody here wrote: a two-edit stack made with the
CLI, re-rendered by `stack render`, ffmpeg's overlay, oiiotool --over and Blender's compositor
against our final PNGs (within 2 levels, exact where every alpha is 0), the sound's offset as
ffmpeg decodes it, and the bad inputs of stacks."""
import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import blender_comp

from vera.__main__ import main
from vera.edit.bundle import tiny_available
from vera.media.video import read_png

pytestmark = pytest.mark.skipif(not tiny_available(), reason="vera-tiny weights are not in "
                                                             "vera/assets/vera-tiny")
RATE, FRAMES = Fraction(30000, 1001), 17


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (CI installs it with apt; see .ci/run)")
    return found


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    """A source with sound, one edit on it (sRGB EXRs, .mov and .webm) and a second edit over it
    (linear EXRs): {"source", "first", "second"}."""
    from helpers import pink_noise

    from vera.data.clips import bundled_clip
    from vera.media.video import read_video, write_mp4

    root = tmp_path_factory.mktemp("handoff")
    frames, _ = read_video(bundled_clip(), max_frames=FRAMES)
    sound = {"waveform": pink_noise(int(FRAMES / RATE * 48000))[None], "sample_rate": 48000}
    source = write_mp4(frames, root / "plate.mp4", RATE, audio=sound)
    first, second = root / "first", root / "second"
    assert main(["edit", "--input", str(source), "--prompt", "add a large red circle moving from "
                 "left to right", "--steps", "4", "--rgba", "both", "--exr", "srgb",
                 "--out", str(first)]) == 0
    assert main(["edit", "--over", str(first), "--prompt", "add a small green square moving "
                 "from top to bottom", "--steps", "4", "--seed", "7", "--exr", "linear",
                 "--out", str(second)]) == 0
    return {"source": source, "first": first, "second": second}


def _pngs(folder: Path) -> torch.Tensor:
    """uint8 `[T, H, W, C]` of a folder's sorted PNGs."""
    return torch.stack([read_png(p) for p in sorted(Path(folder).glob("*.png"))])


def _alphas(run: Path) -> torch.Tensor:
    """uint8 `[T, H, W]`: the largest alpha of any layer of the run's stack at each pixel."""
    stack = json.loads((run / "stack.json").read_text())
    return torch.stack([_pngs(run / layer["rgba"])[..., 3] for layer in stack["layers"]]).amax(0)


def _matches_final(frames: torch.Tensor, run: Path, most: int = 2) -> None:
    """Within `most` levels of the run's final PNGs, and exact where every alpha is 0."""
    final = _pngs(run / "final_composite")
    assert frames.shape == final.shape, (frames.shape, final.shape)
    difference = (frames.int() - final.int()).abs().amax(-1)
    untouched = _alphas(run) == 0
    assert untouched.any() and (~untouched).any()
    assert int(difference.max()) <= most, int(difference.max())
    assert int(difference[untouched].max()) == 0


def _closed_form(below: torch.Tensor, layers: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
    """Eq. 2 in float64 with numpy, layer by layer: below uint8 `[T, H, W, 3]`, each layer uint8
    straight RGBA `[t, H, W, 4]` with the source frame its frame 0 lies on."""
    out = below.numpy().astype(np.float64)
    for rgba, offset in layers:
        for j in range(rgba.shape[0]):
            k = j + offset
            if 0 <= k < out.shape[0]:
                a = rgba[j, ..., 3:].numpy() / 255.0
                mixed = (1 - a) * out[k] / 255 + a * rgba[j, ..., :3].numpy() / 255
                out[k] = np.where(a > 0, np.round(mixed * 255), out[k])
    return torch.from_numpy(out.astype(np.uint8))


def test_a_two_edit_cli_stack_keeps_both_layers_and_renders_bit_exactly(shot, tmp_path):
    second = shot["second"]
    stack = json.loads((second / "stack.json").read_text())
    assert [x["prompt"] for x in stack["layers"]] == [
        "add a large red circle moving from left to right",
        "add a small green square moving from top to bottom"]
    assert stack["source"]["folder"] == "source/" and stack["source"]["count"] == FRAMES
    assert stack["source"]["fps"] == "30000/1001" and stack["compositing"].startswith("final = ")
    for layer in stack["layers"]:
        assert (second / layer["settings"]).is_file()
        assert len(list((second / layer["rgba"]).glob("*.png"))) == FRAMES
    assert torch.equal(_pngs(second / "source"), _pngs(shot["first"] / "source"))
    settings = json.loads((second / "settings.json").read_text())
    assert settings["over"] == str(shot["first"].resolve())
    for run in (shot["first"], second):
        out = tmp_path / run.name
        assert main(["stack", "render", str(run), "--out", str(out)]) == 0
        assert torch.equal(_pngs(out / "final_composite"), _pngs(run / "final_composite"))
    # the stack equals eq. 2 applied twice over the copied source, by an independent closed form
    layers = [(_pngs(second / x["rgba"]), 0) for x in stack["layers"]]
    expected = _closed_form(_pngs(second / "source"), layers)
    assert int((expected.int() - _pngs(second / "final_composite").int()).abs().max()) <= 1


@pytest.mark.parametrize("change", ["drop", "reorder", "retime"])
def test_a_changed_stack_renders_what_the_closed_form_gives(shot, tmp_path, change):
    run = tmp_path / "stack"
    shutil.copytree(shot["second"], run)
    stack = json.loads((run / "stack.json").read_text())
    if change == "drop":
        stack["layers"] = stack["layers"][1:]
    elif change == "reorder":
        stack["layers"] = stack["layers"][::-1]
    else:
        stack["layers"][1]["offset"] = 3
    (run / "stack.json").write_text(json.dumps(stack))
    assert main(["stack", "render", str(run), "--out", str(tmp_path / "render")]) == 0
    rendered = _pngs(tmp_path / "render" / "final_composite")
    expected = _closed_form(_pngs(run / "source"), [(_pngs(run / x["rgba"]), x["offset"])
                                                    for x in stack["layers"]])
    assert rendered.shape == expected.shape
    assert int((rendered.int() - expected.int()).abs().max()) <= 1
    assert not torch.equal(rendered, _pngs(run / "final_composite"))


def test_a_referenced_source_renders_like_the_edit(shot, tmp_path):
    run = tmp_path / "ref"
    assert main(["edit", "--input", str(shot["source"]), "--start", "2", "--frames", "13",
                 "--prompt", "add a red circle", "--steps", "2", "--source-frames", "reference",
                 "--out", str(run)]) == 0
    source = json.loads((run / "stack.json").read_text())["source"]
    assert source["folder"] is None and source["path"] == str(shot["source"].resolve())
    assert (source["start"], source["count"], source["stride"]) == (2, 13, 1)
    assert not (run / "source").exists()
    assert main(["stack", "render", str(run), "--out", str(tmp_path / "render")]) == 0
    assert torch.equal(_pngs(tmp_path / "render" / "final_composite"),
                       _pngs(run / "final_composite"))
    frames = blender_comp(run, tmp_path / "blender")  # it reads frames 2.. of the movie itself
    if frames is not None:
        _matches_final(frames, run)


def _ffmpeg_frames(arguments: list[str], size: tuple[int, int]) -> torch.Tensor:
    """Run ffmpeg writing rgb24 raw video to stdout -> uint8 `[T, H, W, 3]`."""
    done = subprocess.run([_tool("ffmpeg"), "-v", "error", *arguments, "-f", "rawvideo",
                           "-pix_fmt", "rgb24", "-"], capture_output=True, check=True)
    width, height = size
    return torch.frombuffer(bytearray(done.stdout), dtype=torch.uint8).view(-1, height, width, 3)


def test_ffmpeg_overlay_of_the_png_and_mov_layers_reproduces_the_final(shot):
    second = shot["second"]
    stack = json.loads((second / "stack.json").read_text())
    rate = "30000/1001"
    # the lower layer from its PNGs, the top one from the ProRes 4444 .mov of the first run
    lower = str(second / stack["layers"][0]["rgba"] / "edit_%05d.png")
    graph = ("[0:v]format=rgb24[s];[s][1:v]overlay=format=rgb:alpha=straight[b];"
             "[b][2:v]overlay=format=rgb:alpha=straight,format=rgb24")
    top = str(second / "edit_layer_rgba/edit_%05d.png")
    frames = _ffmpeg_frames(["-framerate", rate, "-i", str(second / "source/source_%05d.png"),
                             "-framerate", rate, "-i", lower, "-framerate", rate, "-i", top,
                             "-filter_complex", graph], stack["source"]["size"])
    _matches_final(frames, second)
    first = shot["first"]
    for layer in ("edit_layer_rgba.mov", "edit_layer_rgba.webm"):
        decoder = ["-c:v", "libvpx-vp9"] if layer.endswith(".webm") else []
        frames = _ffmpeg_frames(["-framerate", rate, "-i", str(first / "source/source_%05d.png"),
                                 *decoder, "-i", str(first / layer), "-filter_complex",
                                 "[0:v]format=rgb24[s];[s][1:v]overlay=format=rgb:alpha=straight,"
                                 "format=rgb24"], stack["source"]["size"])
        if layer.endswith(".webm"):  # 4:2:0 colour: only the count and the untouched pixels
            final = _pngs(first / "final_composite")
            assert frames.shape == final.shape
            untouched = _alphas(first) == 0
            assert torch.equal(frames[untouched], final[untouched])
        else:
            _matches_final(frames, first)


OPAQUE = ("--ch", "R,G,B,A=1.0")  # the source as an image with alpha, which --over needs


def _oiiotool(*arguments) -> None:
    subprocess.run([_tool("oiiotool"), *map(str, arguments)], check=True, capture_output=True)


def test_oiiotool_over_of_png_and_srgb_exr_layers_reproduces_the_final(shot, tmp_path):
    first = shot["first"]
    frames = {"png": [], "exr": []}
    for k in range(FRAMES):
        source = first / f"source/source_{k:05d}.png"
        for kind, layer in (("png", f"edit_layer_rgba/edit_{k:05d}.png"),
                            ("exr", f"edit_layer_exr/edit_{k:05d}.exr")):
            _oiiotool(first / layer, source, *OPAQUE, "--over", "-d", "uint8", "-o",
                      tmp_path / f"{kind}.png")
        frames["png"].append(read_png(tmp_path / "png.png")[..., :3])
        frames["exr"].append(read_png(tmp_path / "exr.png")[..., :3])
    for kind in frames:
        _matches_final(torch.stack(frames[kind]), first)


def test_the_linear_exrs_comped_in_linear_light_differ_only_at_soft_edges(shot, tmp_path):
    """The measurement the README quotes: the second edit's linear premultiplied EXR over what
    lay below it (the first edit's final), both in linear light in oiiotool, encoded back to
    sRGB, against our sRGB-space final."""
    second, below, k = shot["second"], shot["first"], 8
    _oiiotool(second / f"edit_layer_exr/edit_{k:05d}.exr",
              below / f"final_composite/final_{k:05d}.png", *OPAQUE, "--colorconvert", "sRGB",
              "linear", "--over", "--colorconvert", "linear", "sRGB", "-d", "uint8", "-o",
              tmp_path / "linear.png")
    linear = read_png(tmp_path / "linear.png")[..., :3].int()
    final = read_png(second / f"final_composite/final_{k:05d}.png")[..., :3].int()
    alpha = read_png(second / f"edit_layer_rgba/edit_{k:05d}.png")[..., 3]
    difference = (linear - final).abs().amax(-1)
    soft = (alpha > 0) & (alpha < 255)
    assert soft.any() and (alpha == 0).any()
    assert int(difference[(alpha == 0) | (alpha == 255)].max()) <= 1
    print(f"linear-light comp vs final: soft edges max {int(difference[soft].max())} levels, "
          f"mean {float(difference[soft].float().mean()):.2f} over {int(soft.sum())} px")


def test_blenders_compositor_renders_the_generated_comp_to_the_final(shot, tmp_path):
    _tool("blender")
    _matches_final(blender_comp(shot["second"], tmp_path), shot["second"])


def nuke_graph(script: Path) -> dict:
    """{name: (kind, knobs, input names)} of a Nuke script, replaying Nuke's node stack: a node
    takes its inputs from the top of the stack, input 0 first; `set` names the top, `push` puts
    a named node back."""
    nodes, stack, named = {}, [], {}
    lines = iter(script.read_text().splitlines())
    for line in lines:
        if line.startswith("set "):
            named[line.split()[1]] = stack[-1]
        elif line.startswith("push "):
            stack.append(named[line.split()[1].lstrip("$")])
        elif line.endswith(" {") and not line.startswith(("Root", "#")):
            kind, knobs = line[:-2], {}
            for knob in lines:
                if knob == "}":
                    break
                key, _, value = knob.strip().partition(" ")
                knobs[key] = value
            inputs = [stack.pop() for _ in range(int(knobs.get("inputs", 1)))]
            nodes[knobs["name"]] = (kind, knobs, inputs)
            stack.append(knobs["name"])
    return nodes


def check_nuke_script(run: Path) -> None:
    """The run's comp.nk reads raw and merges each layer of stack.json, premultiplied, over the
    one below, in order, into the Write."""
    nodes = nuke_graph(run / "comp.nk")
    assert all(knobs["raw"] == "true" for kind, knobs, _ in nodes.values()
               if kind in ("Read", "Write"))
    stack = json.loads((run / "stack.json").read_text())
    if stack["source"]["folder"]:
        assert nodes["Source"][1]["file"].endswith(stack["source"]["folder"] + 'source_%05d.png"')
    below = "Source"
    for number, layer in enumerate(stack["layers"], start=1):
        kind, knobs, (b, a) = nodes[f"Over{number}"]
        assert kind == "Merge2" and knobs["operation"] == "over" and b == below
        assert a == f"Layer{number}Premult" and nodes[a][2] == [f"Layer{number}Time"]
        assert nodes[f"Layer{number}Time"][1]["time_offset"] == str(layer["offset"])
        read = nodes[f"Layer{number}"][1]
        assert read["file"].endswith(layer["rgba"] + 'edit_%05d.png"')
        assert read["last"] == str(layer["frames"] - 1)
        below = f"Over{number}"
    assert nodes["WriteFinal"][2] == [below]


def test_the_nuke_script_reads_raw_and_merges_each_layer_over_the_one_below(shot):
    """Nuke is not installable here: its script is checked by replaying its node graph."""
    check_nuke_script(shot["second"])


def test_every_file_states_how_the_final_is_made(shot):
    import av
    from PIL import Image

    from vera.frames.layers import COMPOSITING
    from vera.media.exr import read_exr

    first = shot["first"]
    assert json.loads((first / "stack.json").read_text())["compositing"] == COMPOSITING
    for folder in ("edit_layer_rgba", "alpha", "final_composite", "source"):
        with Image.open(next((first / folder).glob("*.png"))) as image:
            assert image.text["vera:compositing"] == COMPOSITING, folder
    for name in ("edit_layer_rgba.mov", "edit_layer_rgba.webm", "alpha.mp4",
                 "final_composite.mp4"):
        with av.open(str(first / name)) as container:
            tags = {key.lower(): value for key, value in  # Matroska writes tag names upper-case
                    {**container.metadata, **container.streams.video[0].metadata}.items()}
            assert tags.get("vera:compositing") == COMPOSITING, (name, sorted(tags))
    for folder in ("edit_layer_exr", "alpha_exr", "final_composite_exr"):
        _, header = read_exr(next((first / folder).glob("*.exr")))
        assert header["vera:compositing"] == COMPOSITING, folder


def test_the_composites_sound_is_in_sync_as_ffmpeg_decodes_it(shot):
    from helpers import lag_of

    def decoded(path: Path) -> torch.Tensor:
        done = subprocess.run([_tool("ffmpeg"), "-v", "error", "-i", str(path), "-map", "0:a",
                               "-ac", "1", "-f", "f32le", "-"], capture_output=True, check=True)
        return torch.frombuffer(bytearray(done.stdout), dtype=torch.float32)

    source = decoded(shot["source"])
    for run in (shot["first"], shot["second"]):
        lag, correlation = lag_of(source, decoded(run / "final_composite.mp4"), most=2048)
        assert lag == 0 and correlation > 0.9, (run.name, lag, correlation)


def _refused(arguments: list[str], capsys, *needles: str) -> None:
    assert main(arguments) == 2
    error = capsys.readouterr().err
    for needle in needles:
        assert needle in error, error


def test_over_a_folder_that_is_not_a_finished_run_is_refused(shot, tmp_path, capsys):
    half = tmp_path / "half"
    shutil.copytree(shot["first"], half)
    (half / "stack.json").unlink()
    out = tmp_path / "out"
    _refused(["edit", "--over", str(half), "--prompt", "x", "--out", str(out)], capsys,
             str(half), "not a finished Vera run")
    _refused(["edit", "--over", str(shot["first"]), "--start", "2", "--prompt", "x", "--out",
              str(out)], capsys, "leave out --start and --frames")
    _refused(["edit", "--over", str(shot["first"]), "--source-frames", "reference", "--prompt",
              "x", "--out", str(out)], capsys, "--source-frames", "earlier run's source")
    assert not out.exists()


def test_over_with_an_input_that_is_not_the_runs_source_is_refused(shot, tmp_path, capsys):
    from vera.media.video import read_video, write_mp4

    frames, _ = read_video(shot["source"])
    other = write_mp4(frames[:, :64, :64], tmp_path / "other.mp4", 25)
    out = tmp_path / "out"
    _refused(["edit", "--over", str(shot["first"]), "--input", str(other), "--prompt", "x",
              "--out", str(out)], capsys, "does not match the source", "rate 25", "size 64x64")
    assert not out.exists()


@pytest.mark.parametrize("damage, needle", [
    (lambda s: s.update(version=9), "version 9 is not one this Vera reads"),
    (lambda s: s["layers"].append(dict(s["layers"][0])), "are the same layer"),
    (lambda s: s["layers"][0].update(rgba="layers/9/edit_layer_rgba/"), "found 0"),
    (lambda s: s["source"].update(folder=None), "exactly one of 'folder'"),
    (lambda s: s.pop("layers"), "'layers' must be a list"),
])
def test_a_stack_json_edited_into_nonsense_is_named(shot, tmp_path, capsys, damage, needle):
    run = tmp_path / "stack"
    shutil.copytree(shot["second"], run)
    stack = json.loads((run / "stack.json").read_text())
    damage(stack)
    (run / "stack.json").write_text(json.dumps(stack))
    _refused(["stack", "render", str(run), "--out", str(tmp_path / "render")], capsys,
             str(run / "stack.json"), needle)
    assert not (tmp_path / "render").exists()


def test_a_render_into_a_folder_with_files_needs_overwrite(shot, tmp_path, capsys):
    out = tmp_path / "render"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _refused(["stack", "render", str(shot["first"]), "--out", str(out)], capsys, str(out),
             "--overwrite")
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
    assert main(["stack", "render", str(shot["first"]), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "final_composite.mp4").is_file()
