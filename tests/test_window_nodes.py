"""Long shots through the nodes (no ComfyUI here): Vera Context Windows, the sampler's windows (the
model's own when unconnected, one window's memory asked of the manager, the cap without windows),
the windows in settings.json, and the long-shot workflow."""
import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
from helpers import run_node as run
from test_node_graph import text, tiny  # noqa: F401  (tiny is a fixture)

from vera.data.clips import bundled_clip
from vera.edit import pipeline
from vera.edit.bundle import load_bundle, tiny_available
from vera.frames import layers
from vera.media import video
from vera.sampling.plan import latent_activation_bytes
from vera.sampling.settings import MAX_WINDOW, WAN_DEFAULTS

needs_tiny = pytest.mark.skipif(not tiny_available(),
                                reason="vera-tiny weights are not in this checkout")
PROMPT = "add a large red circle moving from left to right"


def windows_node(pack, **changes):
    values = {**dict(mode="windows", window=81, window_overlap=24, window_fuse="linear",
                     window_noise="freenoise"), **changes}
    (chosen,), _ = run(pack, "VeraContextWindows", **values)
    return chosen


def test_context_windows_node_gives_the_settings_and_the_librarys_messages(pack):
    spec = pack.NODE_CLASS_MAPPINGS["VeraContextWindows"].INPUT_TYPES()["required"]
    window = spec["window"][1]
    assert (window["default"], window["min"], window["step"]) == (81, 5, 4)
    assert window["max"] == MAX_WINDOW
    # the frontend rounds an INT to min % step + k * step: 1 + 4k here
    assert window["min"] % window["step"] == 1
    assert spec["window_overlap"][1]["default"] == WAN_DEFAULTS.window_overlap
    assert list(spec) == ["mode", "window", "window_overlap", "window_fuse", "window_noise"]
    assert windows_node(pack, window=33, window_overlap=8, window_fuse="pyramid",
                        window_noise="independent") == dict(
        window=33, window_overlap=8, window_fuse="pyramid", window_noise="independent")
    assert windows_node(pack, mode="off")["window"] == 0
    error = pack.vera.sampling.settings.SettingsError  # the pack's own copy of the library
    with pytest.raises(error, match=r"window = 19: a context window must be 1 \+ 4k .* 17 or 21"):
        windows_node(pack, window=19)
    with pytest.raises(error, match="window_overlap = 16 with window = 17: .* at most 13"):
        windows_node(pack, window=17, window_overlap=16)
    with pytest.raises(error, match="window_fuse = 'flat': must be one of linear, pyramid"):
        windows_node(pack, window_fuse="flat")
    with pytest.raises(ValueError, match="mode = 'auto': must be one of windows, off"):
        windows_node(pack, mode="auto")


def test_long_shot_workflow_connects_the_windows_and_reads_past_one_window(pack):
    from helpers import workflow_script

    wf = workflow_script()
    api = json.loads((wf.ROOT / "workflows" / "api" / "vera_tiny_long_shot_api.json").read_text())
    by_type = {n["class_type"]: n for n in api.values()}
    sampler, windows = by_type["VeraSampler"]["inputs"], by_type["VeraContextWindows"]["inputs"]
    assert api[sampler["context_windows"][0]]["class_type"] == "VeraContextWindows"
    defaults = pack.vera.edit.bundle.tiny_defaults()
    assert (windows["window"], windows["window_overlap"]) == (defaults.window,
                                                              defaults.window_overlap)
    assert windows["mode"] == "windows"
    assert by_type["VeraEncode"]["inputs"]["frame_count"] == 65 > 3 * windows["window"]


def test_sampler_without_windows_refuses_more_than_161_frames_before_any_work(pack):
    """The check comes first: a source of 165 frames with windows off names the input and the
    fix (nothing else of the source or the model is touched)."""
    source = SimpleNamespace(source_u8=torch.zeros(165, 1, 1, 3, dtype=torch.uint8))
    model = SimpleNamespace(defaults=WAN_DEFAULTS)
    with pytest.raises(ValueError, match=r"vera_source has 165 frames but context_windows is off "
                                         r"\(window 0\).* at most 161 .*mode to windows.*"
                                         r"frame_count to 161 or less"):
        run(pack, "VeraSampler", vera_model=model, positive=None, negative=None,
            vera_source=source, seed=0, steps=1, cfg=1.0, shift=3.0, sampler="euler",
            context_windows=windows_node(pack, mode="off"))


@pytest.fixture(scope="module")
def long_clip():
    frames, _ = video.read_frames(bundled_clip(), 33)
    return frames.float() / 255  # IMAGE [33, 144, 176, 3]: 9 latent frames, vera-tiny's 5 each


@needs_tiny
def test_long_shot_in_the_models_windows_matches_the_library_and_records_them(
        pack, tiny, long_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("VERA_OUTPUT_DIR", str(tmp_path / "output"))
    handle, vae = tiny
    host = pack.nodes.host
    asked = []
    monkeypatch.setattr(host, "load_for_use", lambda manager, *sizes: asked.append(sizes))
    (source,), _ = run(pack, "VeraEncode", vae=vae, frames=long_clip, frame_policy="error",
                       work_width=64, work_height=64)
    (lay,), _ = run(pack, "VeraSampler", vera_model=handle, positive=text(pack, handle, PROMPT),
                    negative=text(pack, handle, ""), vera_source=source, seed=4, steps=3, cfg=2.0,
                    shift=3.0, sampler="unipc")  # context_windows unconnected: vera-tiny's 17 / 8
    assert (lay.settings.window, lay.settings.window_overlap) == (17, 8)
    # latent windows (0, 5), (3, 8), (4, 9): the last one ends at the shot's end
    assert lay.windows == [[0, 16], [9, 28], [13, 32]]
    one = source.source_latent[:, :, :5]
    model = handle.model
    assert asked == [(latent_activation_bytes(model, one, 2),
                      latent_activation_bytes(model, one, 1))]
    assert asked[0][0] < latent_activation_bytes(model, source.source_latent, 2)

    (edit, alpha, _, src, _, _, shot), _ = run(pack, "VeraDecodeLayers", vae=vae, vera_layers=lay,
                                               alpha_cutoff=0.1)
    bundle = load_bundle("vera-tiny", "fp32", "cpu")
    settings = bundle.defaults.updated(steps=3, cfg=2.0, shift=3.0, seed=4, alpha_cutoff=0.1)
    ref = pipeline.edit(bundle, long_clip, PROMPT, settings, work_size=(64, 64))
    torch.testing.assert_close(edit, ref.edit_layer, atol=2e-4, rtol=0)

    (final, _, _), _ = run(pack, "VeraComposite", source=src, edit_layer=edit, alpha=alpha,
                           vera_shot=shot)
    _, ui = run(pack, "VeraSaveLayers", edit_layer=edit, alpha=alpha, final=final,
                filename_prefix="long", vera_shot=shot)
    folder = tmp_path / "output" / ui["vera_layers"][0]["folder"]
    saved = json.loads((folder / "long_settings.json").read_text())
    assert saved["windows"] == [[0, 16], [9, 28], [13, 32]] and saved["window"] == 17
    assert saved["frames"] == 33
    pngs = sorted((folder / "long_final_composite").glob("*.png"))
    assert len(pngs) == 33  # written in chunks of 16: 16 + 16 + 1
    assert torch.equal(torch.stack([video.read_png(p) for p in pngs]), layers.to_uint8(final))


@needs_tiny
def test_connected_windows_replace_the_models_and_wan_models_default_to_81(
        pack, tiny, long_clip, monkeypatch):
    handle, vae = tiny
    host = pack.nodes.host
    asked = []
    monkeypatch.setattr(host, "load_for_use", lambda manager, *sizes: asked.append(sizes))
    monkeypatch.setattr(host, "interrupt_requested", lambda: True)  # stop before the first step
    (source,), _ = run(pack, "VeraEncode", vae=vae, frames=long_clip, frame_policy="error",
                       work_width=64, work_height=64)
    cond = text(pack, handle, PROMPT)
    args = dict(positive=cond, negative=cond, vera_source=source, seed=0, steps=2, cfg=2.0,
                shift=3.0, sampler="euler", batch_cfg="on")
    whole = latent_activation_bytes(handle.model, source.source_latent, 2)
    for model, windows in ((handle, windows_node(pack, window=33, window_overlap=8)),
                           (dataclasses.replace(handle, defaults=WAN_DEFAULTS), None)):
        with pytest.raises(InterruptedError):  # 33 frames fit one window of 33 or 81: the whole
            run(pack, "VeraSampler", vera_model=model, context_windows=windows, **args)
        assert asked.pop() == (whole, whole)
