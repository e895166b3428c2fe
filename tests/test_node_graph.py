"""The Vera nodes run end to end through the same calls ComfyUI makes (no ComfyUI here): vera-tiny and
tiny random Wan files, the VAE bridge, cancel, progress, errors and the saved files."""
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers import run_node as run
from helpers import tiny_lora
from tiny_models import tiny_diffusers_wan, tiny_vae, wan_original_state_dict

from vera.data.clips import bundled_clip
from vera.edit import pipeline
from vera.edit.bundle import load_bundle, tiny_available
from vera.frames import layers
from vera.media import exr, video

needs_tiny = pytest.mark.skipif(not tiny_available(), reason="vera-tiny weights are not in this checkout")


@pytest.fixture(scope="module")
def clip():
    frames, _ = video.read_frames(bundled_clip(), 17)
    return frames.float() / 255  # IMAGE [17, 144, 176, 3]


@pytest.fixture(scope="module")
def tiny(pack):
    (handle,), _ = run(pack, "VeraLoadModel", model_name="vera-tiny", weight_dtype="auto", attention="auto")
    (vae,), _ = run(pack, "VeraBundledVAE", vera_model=handle)
    return handle, vae


def text(pack, handle, prompt):
    (cond,), _ = run(pack, "VeraTextEncode", vera_model=handle, text=prompt)
    return cond


@needs_tiny
def test_vera_tiny_graph_matches_the_library_and_keeps_untouched_pixels(pack, tiny, clip, tmp_path, monkeypatch):
    monkeypatch.setenv("VERA_OUTPUT_DIR", str(tmp_path / "output"))
    handle, vae = tiny
    prompt = "add a large red circle moving from left to right"
    (source,), _ = run(pack, "VeraEncode", vae=vae, frames=clip, frame_policy="error", work_width=64, work_height=64,
                       fps=23.976)
    (lay,), _ = run(pack, "VeraSampler", vera_model=handle, positive=text(pack, handle, prompt),
                    negative=text(pack, handle, ""), vera_source=source, seed=7, steps=6, cfg=2.0, shift=3.0,
                    sampler="unipc")
    (edit, alpha, model_comp, src, rgba4, mask, shot), ui = run(pack, "VeraDecodeLayers", vae=vae, vera_layers=lay,
                                                                 alpha_cutoff=0.1)
    assert rgba4.shape == (*clip.shape[:3], 4) and torch.equal(rgba4[..., 3], alpha)
    assert torch.equal(rgba4[..., :3], edit) and torch.equal(mask, 1 - alpha)  # ComfyUI's convention
    assert shot.clip.rate == Fraction(24000, 1001) and shot.settings.seed == 7 and shot.model_name
    assert edit.shape == clip.shape and alpha.shape == clip.shape[:3] and torch.equal(src, clip)
    assert len(ui["vera_layers"][0]["frames"]) == 16  # previews for the layer viewer

    # the library's one-call path (diffusers VAE directly, no ComfyUI-style bridge) gives the same layers
    bundle = load_bundle("vera-tiny", "fp32", "cpu")
    settings = bundle.defaults.updated(steps=6, cfg=2.0, shift=3.0, seed=7, alpha_cutoff=0.1)
    ref = pipeline.edit(bundle, clip, prompt, settings, work_size=(64, 64))
    torch.testing.assert_close(edit, ref.edit_layer, atol=2e-4, rtol=0)
    assert (alpha - ref.alpha[..., 0]).abs().max() <= 1 / 255 + 1e-6
    assert (alpha > 0).any() and (alpha == 0).any()

    (final, rgba_out, final_video), _ = run(pack, "VeraComposite", source=src, edit_layer=edit, alpha=alpha,
                                            vera_shot=shot)
    untouched = alpha == 0
    assert torch.equal(layers.to_uint8(final)[untouched], layers.to_uint8(clip)[untouched])
    assert torch.equal(rgba_out, rgba4)
    parts = final_video.get_components()
    assert parts.frame_rate == Fraction(24000, 1001) and torch.equal(parts.images, final)

    _, ui = run(pack, "VeraSaveLayers", edit_layer=edit, alpha=alpha, final=final, filename_prefix="shots/sh 010",
                fps=0.0, rgba_format="both", source=src, vera_shot=shot, exr="srgb", exr_alpha="straight",
                prompt={"1": {"class_type": "VeraSampler"}}, extra_pnginfo={"workflow": {"nodes": []}})
    folder = tmp_path / "output" / ui["vera_layers"][0]["folder"]
    assert folder == tmp_path / "output" / "shots" / "sh_010_00001"
    rgba = video.read_rgba_video(folder / "sh_010_edit_layer_rgba.mov")
    assert (rgba[..., 3].int() - layers.to_uint8(alpha).int()).abs().max() <= 1
    pngs = sorted((folder / "sh_010_final_composite").glob("*.png"))
    assert len(pngs) == 17 and torch.equal(video.read_png(pngs[5]), layers.to_uint8(final[5]))
    settings = json.loads((folder / "sh_010_settings.json").read_text())
    assert settings["seed"] == 7 and settings["steps"] == 6 and settings["alpha_cutoff"] == 0.1
    assert settings["clip"]["fps"] == "24000/1001" and settings["frames"] == 17
    with av.open(str(folder / "sh_010_edit_layer_rgba.mov")) as container:
        assert container.streams.video[0].average_rate == Fraction(24000, 1001)
        assert json.loads(container.metadata["workflow"]) == {"nodes": []}
    exr_rgba, header = exr.read_exr(folder / "sh_010_edit_layer_exr" / "edit_00005.exr")
    assert header["vera:alpha"] == "straight" and header["vera:transfer"] == "srgb"
    np.testing.assert_allclose(exr_rgba["RGBA"][..., 3].astype(np.float32),
                               layers.to_uint8(alpha[5]).float().numpy() / 255, atol=1e-3)
    assert ui["images"] == [dict(filename="sh_010_final_composite.mp4", subfolder="shots/sh_010_00001",
                                 type="output")] and ui["animated"] == (True,)
    listed = {(f["subfolder"], f["filename"]) for f in ui["vera_files"]}
    assert ("shots/sh_010_00001", "sh_010_edit_layer_rgba.webm") in listed and all(
        f["type"] == "output" for f in ui["vera_files"])
    _, ui2 = run(pack, "VeraSaveLayers", edit_layer=edit, alpha=alpha, final=final, filename_prefix="shots/sh 010")
    assert ui2["vera_layers"][0]["folder"] == "shots/sh_010_00002"  # a new folder, the first one untouched
    assert not list((tmp_path / "output" / "shots").glob(".*partial"))


@needs_tiny
def test_the_vera_cache_node_skips_steps_as_the_library_does_and_records_the_saving(
        pack, tiny, clip, tmp_path, monkeypatch):
    monkeypatch.setenv("VERA_OUTPUT_DIR", str(tmp_path / "output"))
    handle, vae = tiny
    prompt = "add a small blue square moving from top to bottom"
    (cache,), _ = run(pack, "VeraCache", cache_method="easycache", cache_threshold=0.2,
                      cache_start=0.15, cache_end=0.95)
    (source,), _ = run(pack, "VeraEncode", vae=vae, frames=clip, frame_policy="error",
                       work_width=64, work_height=64)
    (lay,), _ = run(pack, "VeraSampler", vera_model=handle, positive=text(pack, handle, prompt),
                    negative=text(pack, handle, ""), vera_source=source, seed=3, steps=20, cfg=2.0,
                    shift=3.0, sampler="unipc", cache=cache)
    assert lay.settings.cache_method == "easycache" and lay.evaluations["cached"] > 0
    assert lay.evaluations["full"] + lay.evaluations["cached"] == 40
    (edit, alpha, _, src, _, _, shot), _ = run(pack, "VeraDecodeLayers", vae=vae, vera_layers=lay,
                                               alpha_cutoff=0.1)
    bundle = load_bundle("vera-tiny", "fp32", "cpu")
    settings = bundle.defaults.updated(steps=20, cfg=2.0, shift=3.0, seed=3, alpha_cutoff=0.1,
                                       **cache)
    ref = pipeline.edit(bundle, clip, prompt, settings, work_size=(64, 64))
    assert ref.details["model_evaluations"] == lay.evaluations
    torch.testing.assert_close(edit, ref.edit_layer, atol=2e-4, rtol=0)
    _, ui = run(pack, "VeraSaveLayers", edit_layer=edit, alpha=alpha, final=src,
                filename_prefix="cached", vera_shot=shot)
    folder = tmp_path / "output" / ui["vera_layers"][0]["folder"]
    saved = json.loads((folder / "cached_settings.json").read_text())
    assert saved["model_evaluations"] == lay.evaluations and saved["cache_threshold"] == 0.2
    with pytest.raises(ValueError, match="cache_start = 0.9 and cache_end = 0.5"):
        run(pack, "VeraCache", cache_method="easycache", cache_threshold=0.2, cache_start=0.9,
            cache_end=0.5)


@needs_tiny
def test_the_vera_lora_node_equals_the_librarys_lora_and_leaves_the_loaded_model_alone(
        pack, tiny, clip, tmp_path, monkeypatch):
    monkeypatch.setenv("VERA_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models" / "loras").mkdir(parents=True)
    path = tiny_lora(tmp_path / "models" / "loras" / "style.safetensors")
    handle, vae = tiny
    prompt = "add a large green circle moving from left to right"
    (source,), _ = run(pack, "VeraEncode", vae=vae, frames=clip, frame_policy="error",
                       work_width=64, work_height=64)
    args = dict(positive=text(pack, handle, prompt), negative=text(pack, handle, ""),
                vera_source=source, seed=5, steps=4, cfg=2.0, shift=3.0, sampler="unipc")
    (plain,), _ = run(pack, "VeraSampler", vera_model=handle, **args)
    (loraed,), _ = run(pack, "VeraLoRA", vera_model=handle, lora_name="style.safetensors",
                       strength=0.8, branches="edit+composite")
    assert loraed.loras == ["LoRA style.safetensors: applied 4 of 4 tensors (2 layers)"]
    (with_lora,), _ = run(pack, "VeraSampler", vera_model=loraed, **args)
    (again,), _ = run(pack, "VeraSampler", vera_model=handle, **args)
    assert all(torch.equal(plain.latents[k], again.latents[k]) for k in plain.latents)
    assert not torch.equal(with_lora.latents["edit"], plain.latents["edit"])
    (edit, alpha, _, src, _, _, shot), _ = run(pack, "VeraDecodeLayers", vae=vae,
                                               vera_layers=with_lora, alpha_cutoff=0.1)
    monkeypatch.setenv("VERA_OUTPUT_DIR", str(tmp_path / "output"))
    _, ui = run(pack, "VeraSaveLayers", edit_layer=edit, alpha=alpha, final=src,
                filename_prefix="loraed", vera_shot=shot)
    saved = json.loads((tmp_path / "output" / ui["vera_layers"][0]["folder"]
                        / "loraed_settings.json").read_text())
    assert saved["loras"] == loraed.loras
    bundle = load_bundle("vera-tiny", "fp32", "cpu", loras=[f"{path}:0.8:edit,composite"])
    settings = bundle.defaults.updated(steps=4, cfg=2.0, shift=3.0, seed=5, alpha_cutoff=0.1)
    ref = pipeline.edit(bundle, clip, prompt, settings, work_size=(64, 64))
    torch.testing.assert_close(edit, ref.edit_layer, atol=2e-4, rtol=0)
    with pytest.raises(ValueError, match="branches 'matte'"):
        run(pack, "VeraLoRA", vera_model=handle, lora_name="style.safetensors", strength=1.0,
            branches="matte")


@needs_tiny
def test_sampler_reports_progress_and_cancel_stops_before_the_next_step(pack, tiny, clip, monkeypatch):
    handle, vae = tiny
    host = pack.nodes.host
    (source,), _ = run(pack, "VeraEncode", vae=vae, frames=clip[:5], frame_policy="error", work_width=64,
                       work_height=64)
    seen, previews = [], []

    class Recorder:  # ComfyUI's progress bar, with previews turned on
        wants_previews = True

        def __init__(self, total):
            self.total = total

        def update(self, done, preview_rgb=None):
            seen.append((done, self.total))
            previews.append(preview_rgb)

    monkeypatch.setattr(host, "Progress", Recorder)
    monkeypatch.setattr(host, "interrupt_requested", lambda: len(seen) >= 2)
    cond = text(pack, handle, "add a blue square")
    with pytest.raises(InterruptedError):
        run(pack, "VeraSampler", vera_model=handle, positive=cond, negative=cond, vera_source=source, seed=0,
            steps=10, cfg=2.0, shift=3.0, sampler="euler")
    assert seen == [(1, 10), (2, 10)]  # stopped before step 3 of 10
    # a preview per step: composite | edit layer over a checkerboard, at latent resolution (8x8),
    # through vera-tiny's own latent-to-RGB map
    assert handle.latent_rgb is not None
    assert all(p.shape == (8, 16, 3) and p.dtype == torch.uint8 for p in previews)


@needs_tiny
def test_encode_and_sampler_inputs_are_checked(pack, tiny, clip):
    handle, vae = tiny
    with pytest.raises(ValueError, match=r"frames: bad 10 frames .*trim to 9 or pad to 13"):
        run(pack, "VeraEncode", vae=vae, frames=clip[:10, :64, :64], frame_policy="error", work_width=0, work_height=0)
    (padded,), _ = run(pack, "VeraEncode", vae=vae, frames=clip[:10, :60, :64], frame_policy="pad", work_width=0,
                       work_height=0)
    assert padded.geometry.model == (13, 64, 64) and padded.source_u8.shape == (10, 60, 64, 3)
    with pytest.raises(ValueError, match="set both"):
        run(pack, "VeraEncode", vae=vae, frames=clip, work_width=64, work_height=0)
    box = torch.zeros(1, 144, 176)
    box[:, 20:60, 30:90] = 1
    (with_mask,), _ = run(pack, "VeraEncode", vae=vae, frames=clip[:5], work_width=64, work_height=64, edit_region=box)
    assert with_mask.mask_latent is not None and with_mask.mask_latent.shape == with_mask.source_latent.shape
    with pytest.raises(ValueError, match=r"edit_region is 176x100 but the video is 176x144: a different aspect"):
        run(pack, "VeraEncode", vae=vae, frames=clip[:5], work_width=64, work_height=64, edit_region=box[:, :100])
    half = box[:, ::2, ::2]  # a hard mask at half the size: resized nearest, so it stays hard
    (resized,), _ = run(pack, "VeraEncode", vae=vae, frames=clip[:5], work_width=64, work_height=64, edit_region=half)
    torch.testing.assert_close(resized.mask_latent, with_mask.mask_latent, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="connect the source to video .* or to frames"):
        run(pack, "VeraEncode", vae=vae, work_width=64, work_height=64)
    (whole,), _ = run(pack, "VeraEncode", vae=vae, frames=clip, frame_count=200, work_width=64,
                      work_height=64, frame_policy="crop")  # past the old cap of 161: the clip's 17
    assert whole.source_u8.shape[0] == 17
    with pytest.raises(ValueError, match="frame_count 100001: at most 100000 frames"):
        run(pack, "VeraEncode", vae=vae, frames=clip, frame_count=100_001)
    wan_width = [[torch.zeros(1, 512, 4096), {}]]
    with pytest.raises(ValueError, match="4096-wide but this model expects 64.*Vera Text Encode"):
        run(pack, "VeraSampler", vera_model=handle, positive=wan_width, negative=wan_width, vera_source=with_mask,
            seed=0, steps=1, cfg=2.0, shift=3.0, sampler="euler")
    cond = text(pack, handle, "add a blue square")
    with pytest.raises(ValueError, match="combined"):
        run(pack, "VeraSampler", vera_model=handle, positive=cond + cond, negative=cond, vera_source=with_mask,
            seed=0, steps=1, cfg=2.0, shift=3.0, sampler="euler")


class ComfyStyleVAE:
    """A stand-in with ComfyUI's VAE conventions: raw (un-normalised) latents, IMAGE in, [1, T, H, W, C] out,
    and no `vera_latent_stats`, so the bridge must use the Wan2.1 statistics."""

    latent_channels, latent_dim = 16, 3

    def __init__(self, vae):
        self.vae = vae

    def encode(self, pixels):
        video = pixels.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1
        return self.vae.encode(video).latent_dist.mode()

    def decode(self, raw):
        out = self.vae.decode(raw).sample.clamp(-1, 1)
        return ((out.permute(0, 2, 3, 4, 1) + 1) / 2)


def test_comfy_vae_bridge_normalises_like_wan(pack):
    from vera.encoders.vae import WanCodec

    vae = tiny_vae(3)  # diffusers' default latents_mean / latents_std: Wan2.1's
    bridge = pack.nodes.vae_bridge
    ours, comfy = WanCodec(vae), bridge.ComfyVAECodec(ComfyStyleVAE(vae))
    clip = torch.rand(5, 32, 32, 3, generator=torch.Generator().manual_seed(0))  # IMAGE frames
    latent = ours.encode_frames(clip)
    torch.testing.assert_close(comfy.encode_frames(clip), latent, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(comfy.decode_frames(latent), ours.decode_frames(latent), atol=1e-5,
                               rtol=1e-5)
    assert comfy.decode_frames(latent).shape == clip.shape
    # the bundled-VAE adapter speaks ComfyUI's interface and round-trips through the bridge
    bundled = bridge.BundledVAE(vae)
    raw = bundled.encode(clip)
    torch.testing.assert_close((raw - bundled.vera_latent_stats[0]) / bundled.vera_latent_stats[1], latent,
                               atol=1e-5, rtol=1e-5)
    assert bundled.decode(raw).shape == (1, 5, 32, 32, 3)

    class Wan22:
        latent_channels, latent_dim = 48, 3

    with pytest.raises(ValueError, match="48-channel.*wan_2.1_vae"):
        bridge.ComfyVAECodec(Wan22())


def test_loader_nodes_list_vera_and_wan_files_apart_and_load_each_dtype(pack, tmp_path, monkeypatch):
    models = tmp_path / "models"
    from vera.checkpoints.safetensors_io import atomic_save
    from vera.checkpoints.weights import load_model, save_vera

    wan = atomic_save(wan_original_state_dict(tiny_diffusers_wan(0)),
                      models / "diffusion_models" / "wan_tiny_t2v.safetensors",
                      {"num_attention_heads": "4"})  # a width-64 model's head count is not in its shapes
    save_vera(load_model(wan, from_wan=True), models / "diffusion_models" / "vera" / "mine.safetensors")
    (models / "diffusion_models" / "notes.safetensors").write_bytes(b"not a model")
    monkeypatch.setenv("VERA_MODELS_DIR", str(models))
    choices = pack.NODE_CLASS_MAPPINGS["VeraLoadModel"].INPUT_TYPES()["required"]["model_name"][0]
    assert choices == ["vera-tiny", "vera/mine.safetensors"]  # the Wan file is not offered for editing
    wan_choices = pack.NODE_CLASS_MAPPINGS["VeraFromWan"].INPUT_TYPES()["required"]["wan_name"][0]
    assert wan_choices == ["wan_tiny_t2v.safetensors"]
    (mine,), _ = run(pack, "VeraLoadModel", model_name="vera/mine.safetensors", weight_dtype="fp32",
                     attention="sdpa")
    (fp32,), _ = run(pack, "VeraFromWan", wan_name="wan_tiny_t2v.safetensors", weight_dtype="fp32",
                     attention="sdpa")
    (fp8,), _ = run(pack, "VeraFromWan", wan_name="wan_tiny_t2v.safetensors", weight_dtype="fp8",
                    attention="sdpa")
    assert all(torch.equal(a, b) for a, b in zip(mine.model.state_dict().values(),
                                                 fp32.model.state_dict().values()))
    assert fp32.text_encoder is None and fp32.model.dtype == torch.float32
    FP8Linear = pack.vera.model.fp8.FP8Linear  # the pack's own copy (ComfyUI-style import)
    assert sum(isinstance(m, FP8Linear) for m in fp8.model.modules()) == 3 * 2 * (4 + 4 + 2)  # branches x layers x linears
    g = torch.Generator().manual_seed(0)
    lat = [torch.randn(1, 16, 2, 8, 8, generator=g) for _ in range(4)]
    ctx = torch.randn(1, 12, 32, generator=g)
    with torch.no_grad():
        a = fp32.model(*lat[:3], torch.tensor([500.0]), ctx, lat[3])
        b = fp8.model(*lat[:3], torch.tensor([500.0]), ctx, lat[3])
    for x, y in zip(a, b):
        assert ((x - y).norm() / x.norm()) < 0.05
    with pytest.raises(ValueError, match="xformers.*CUDA"):
        run(pack, "VeraFromWan", wan_name="wan_tiny_t2v.safetensors", weight_dtype="fp32",
            attention="xformers")
    with pytest.raises(FileNotFoundError, match="gone.safetensors.*models/diffusion_models"):
        run(pack, "VeraLoadModel", model_name="gone.safetensors", weight_dtype="fp32", attention="sdpa")
    with pytest.raises(ValueError, match="no bundled text encoder"):
        run(pack, "VeraTextEncode", vera_model=fp32, text="hello")


def test_fp8_linear_matches_a_naive_dequantised_reference():
    from vera.model.fp8 import FP8Linear

    linear = torch.nn.Linear(24, 40)
    x = torch.randn(3, 24)
    q = FP8Linear.from_linear(linear)
    scale = linear.weight.abs().max() / 448
    reference = x @ ((linear.weight / scale).to(torch.float8_e4m3fn).float() * scale).T + linear.bias
    torch.testing.assert_close(q(x), reference, atol=1e-6, rtol=1e-6)
    assert q.weight.dtype == torch.float8_e4m3fn and (q(x) - linear(x)).abs().max() < 0.05


def test_save_names_stay_inside_the_output_folder(pack):
    safe_prefix = pack.nodes.save_nodes.safe_prefix
    assert safe_prefix("vera/edit") == (Path("vera"), "edit")
    assert safe_prefix("my shot: take#2") == (Path(), "my_shot_take_2")
    assert safe_prefix("") == (Path(), "vera")
    for bad in ("../x", "/etc/x", "a/../../b", "C:/x"):
        with pytest.raises(ValueError, match="inside ComfyUI's output folder"):
            safe_prefix(bad)


def test_wan_width_graph_takes_clip_text_encode_conditioning_and_a_comfy_vae(pack, tmp_path, monkeypatch):
    """A Wan-shaped model (text width 4096) loaded from models/diffusion_models, CONDITIONING shaped as ComfyUI's
    CLIPTextEncode gives it for the Wan text encoder, and a VAE with ComfyUI's interface."""
    from vera.checkpoints.safetensors_io import atomic_save

    models = tmp_path / "models"
    atomic_save(wan_original_state_dict(tiny_diffusers_wan(1, text_dim=4096)),
                models / "diffusion_models" / "wan_4096.safetensors", {"num_attention_heads": "4"})
    monkeypatch.setenv("VERA_MODELS_DIR", str(models))
    (handle,), _ = run(pack, "VeraFromWan", wan_name="wan_4096.safetensors", weight_dtype="auto",
                       attention="auto")
    vae = ComfyStyleVAE(tiny_vae(0))
    clip = torch.rand(5, 32, 48, 3, generator=torch.Generator().manual_seed(1))
    (source,), _ = run(pack, "VeraEncode", vae=vae, frames=clip, frame_policy="error", work_width=0, work_height=0)

    def clip_text_encode(seed):  # [1, 512, 4096], zero past the prompt, with ComfyUI's extra dict
        context = torch.zeros(1, 512, 4096)
        context[0, :7] = torch.randn(7, 4096, generator=torch.Generator().manual_seed(seed))
        return [[context, {"pooled_output": None}]]

    (lay,), _ = run(pack, "VeraSampler", vera_model=handle, positive=clip_text_encode(1), negative=clip_text_encode(2),
                    vera_source=source, seed=0, steps=2, cfg=5.0, shift=5.0, sampler="euler", batch_cfg=False)
    (edit, alpha, comp, src, *_), _ = run(pack, "VeraDecodeLayers", vae=vae, vera_layers=lay, alpha_cutoff=0.0)
    assert edit.shape == clip.shape and alpha.shape == clip.shape[:3] and torch.equal(src, layers.to_uint8(clip).float() / 255)
    with pytest.raises(ValueError, match="64-wide but this model expects 4096.*CLIPTextEncode"):
        run(pack, "VeraSampler", vera_model=handle, positive=[[torch.zeros(1, 16, 64), {}]],
            negative=clip_text_encode(2), vera_source=source, seed=0, steps=1, cfg=5.0, shift=5.0, sampler="euler")


@needs_tiny
@pytest.mark.parametrize("batch_cfg, passes", [("auto", (2, 1)), ("on", (2, 2)), ("off", (1, 1))])
def test_sampler_asks_comfyuis_manager_for_memory_as_its_own_sampler_does(pack, tiny, clip,
                                                                          monkeypatch, batch_cfg,
                                                                          passes):
    """load_models_gpu gets the batched estimate as memory_required and, for auto (which can fall
    back to one pass at a time), the one-pass estimate as minimum_memory_required."""
    from vera.sampling.plan import latent_activation_bytes

    handle, vae = tiny
    host = pack.nodes.host
    (source,), _ = run(pack, "VeraEncode", vae=vae, frames=clip[:5], frame_policy="error",
                       work_width=64, work_height=64)
    asked = []
    monkeypatch.setattr(host, "load_for_use", lambda manager, *sizes: asked.append(sizes))
    monkeypatch.setattr(host, "interrupt_requested", lambda: True)  # stop before the first step
    cond = text(pack, handle, "add a blue square")
    with pytest.raises(InterruptedError):
        run(pack, "VeraSampler", vera_model=handle, positive=cond, negative=cond,
            vera_source=source, seed=0, steps=2, cfg=2.0, shift=3.0, sampler="euler",
            batch_cfg=batch_cfg)
    estimate = lambda n: latent_activation_bytes(handle.model, source.source_latent, n)
    assert asked == [tuple(estimate(n) for n in passes)]
    assert estimate(2) > estimate(1)
