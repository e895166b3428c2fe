"""Running in little memory: layers from injected operations, block swap, batch_cfg on demand, the
planner, previews."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import inputs

from vera.checkpoints.weights import load_model
from vera.model.blockswap import BlockSwap
from vera.model.config import PRESETS
from vera.sampling import plan
from vera.sampling.sampler import batch_cfg_fits

ROOT = Path(__file__).resolve().parents[1]


def outputs(model):
    with torch.no_grad():
        return model(**inputs(mask=True))


class CastOps:
    """An imitation of ComfyUI's manual-cast layers: weights are stored in bf16 and cast to the
    input's dtype (and device) on every forward, as they are when they did not fit on the GPU."""

    class Linear(torch.nn.Linear):
        def forward(self, x):
            return F.linear(x, self.weight.to(x), None if self.bias is None else self.bias.to(x))

    class Conv3d(torch.nn.Conv3d):
        def forward(self, x):
            return self._conv_forward(x, self.weight.to(x), self.bias.to(x))

    from vera.model.fp8 import FP8Linear
    from vera.model.mot import LayerNorm, RMSNorm


def test_the_model_runs_from_injected_layers_with_weights_cast_per_forward(files):
    reference = load_model(files["wan_comfy"], "fp32", num_heads=4, from_wan=True).eval()
    cast = load_model(files["wan_comfy"], "bf16", num_heads=4, from_wan=True, operations=CastOps).eval()
    assert isinstance(cast.branches["alpha"].blocks[1].ffn[0], CastOps.Linear)
    assert cast.branches["alpha"].blocks[1].ffn[0].weight.dtype == torch.bfloat16
    x = inputs(mask=True)
    with torch.no_grad():  # bf16 weights, fp32 activations: bf16 rounding of the weights only
        got = cast(**{k: v.float() for k, v in x.items()})
        want = reference(**x)
    for a, b in zip(want, got):
        assert (a - b).abs().mean() < 0.02 * a.abs().mean()


@pytest.mark.parametrize("swap", [1, 2])
def test_block_swap_gives_the_same_outputs_and_moves_each_swapped_layer_once(files, swap):
    reference = load_model(files["wan_comfy"], num_heads=4, from_wan=True).eval()
    swapped = load_model(files["wan_comfy"], num_heads=4, from_wan=True).eval()
    hook = BlockSwap(swapped, swap, "cpu")
    assert swapped.layer_hook is hook and hook.swapped == list(range(2 - swap, 2))
    for a, b in zip(outputs(reference), outputs(swapped)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert dict(hook.moves) == {layer: 1 for layer in hook.swapped} and not hook.inflight
    outputs(swapped)
    assert dict(hook.moves) == {layer: 2 for layer in hook.swapped}  # once per forward, no more
    with pytest.raises(ValueError, match="swap_layers 3: must be from 0 to 2"):
        BlockSwap(swapped, 3, "cpu")


def test_batch_cfg_auto_batches_only_when_the_estimate_fits(files):
    model = load_model(files["wan_comfy"], num_heads=4, from_wan=True)
    latent = torch.zeros(1, 16, 3, 8, 8)
    need = plan.latent_activation_bytes(model, latent, passes=2)
    assert need > plan.latent_activation_bytes(model, latent, passes=1) > 0
    assert batch_cfg_fits(model, latent, "auto", lambda device: int(need) + 1)
    assert not batch_cfg_fits(model, latent, "auto", lambda device: int(need) - 1)
    assert batch_cfg_fits(model, latent, "on", lambda device: 0)
    assert not batch_cfg_fits(model, latent, "off", lambda device: 2**60)


def test_planner_counts_weights_and_flops_as_measured_elsewhere():
    config = PRESETS["wan2.1-1.3B"]
    tokens = plan.branch_tokens(config, 49, 480, 832)
    assert tokens == 13 * 30 * 52 and 3 * tokens == 60_840  # GUIDE section 6
    assert abs(plan.flops_per_step(config, tokens) / 1e15 - 1.68) < 0.05  # GUIDE: 1.68 PFLOP
    assert abs(plan.weight_bytes(config, "bf16", 2) / 1e9 - 8.51) < 0.01  # BENCHMARKS: 8.51 GB
    assert abs(plan.weight_bytes(config, "fp8", 2) / 1e9 - 4.34) < 0.02  # fp8.py: 4.34 GB
    made = plan.make_plan(config, 49, 480, 832, "fp8")
    assert made.weights < made.sampling_need(False) < made.sampling_need(True)
    assert "fits" in made.advice(80) and made.advice(80) != made.advice(8)
    assert "tiles" in made.advice(8) and "tiles" not in made.advice(80)  # decode 8.3 GB at 832x480


def test_planner_estimate_is_within_15_percent_of_each_calibration_measurement():
    measured = json.loads((ROOT / "bench" / "results" / "activation_peak.json").read_text())
    model_rows = [r for r in measured if "tokens" in r]
    assert len(model_rows) >= 6
    for r in model_rows:
        config = PRESETS["wan2.1-1.3B" if r["dim"] == 1536 else "wan2.1-14B"]
        estimate = plan.activation_bytes(config, r["tokens"], 1, r["element"])
        assert abs(estimate - r["peak_bytes"]) <= 0.15 * r["peak_bytes"], r
    for r in (r for r in measured if "pixels" in r):
        estimate = plan.vae_decode_bytes(r["height"], r["width"]) - plan.VAE_WEIGHTS_BYTES
        assert abs(estimate - r["peak_bytes"]) <= 0.15 * r["peak_bytes"], r


def test_plan_command_prints_the_table(capsys):
    from vera.__main__ import main

    assert main(["plan", "--model", "14B", "--frames", "49", "--size", "832x480", "--weight-dtype",
                 "fp8"]) == 0
    out = capsys.readouterr().out
    assert "60,840 in the joint attention" in out and "PFLOP per step" in out
    assert all(f"{size:>3} GB" in out for size in plan.VRAM_SIZES_GB)


class LinearCodec:
    """A stand-in VAE whose latent is a known linear function of the colour (8x8 block means, 4
    frames per latent frame after the first), so the least-squares map has a closed form."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.mix, self.offset = torch.randn(16, 3, generator=g), torch.randn(16, generator=g)

    def encode_frames(self, frames):
        groups = [frames[:1]] + [frames[1 + 4 * i: 5 + 4 * i] for i in range((len(frames) - 1) // 4)]
        small = torch.stack([F.avg_pool2d(g.mean(0).permute(2, 0, 1), 8) for g in groups], 1)
        latent = torch.einsum("kc,cthw->kthw", self.mix, small * 2 - 1)
        return (latent + self.offset.view(16, 1, 1, 1))[None]


def test_preview_map_fitted_by_least_squares_inverts_a_linear_codec():
    from vera.sampling.preview import fit_latent_rgb, latent_to_rgb, preview_frames

    codec = LinearCodec()
    g = torch.Generator().manual_seed(1)
    clips = [torch.rand(5, 32, 32, 3, generator=g) for _ in range(6)]
    factors, bias = fit_latent_rgb(codec, clips)
    assert factors.shape == (16, 3) and bias.shape == (3,)
    new = torch.rand(5, 32, 32, 3, generator=torch.Generator().manual_seed(2))
    latent = codec.encode_frames(new)
    rgb = latent_to_rgb(latent, factors, bias)  # the first latent frame: the first video frame
    torch.testing.assert_close(rgb, F.avg_pool2d(new[0].permute(2, 0, 1), 8).permute(1, 2, 0),
                               atol=1e-4, rtol=0)
    image = preview_frames({"edit": latent, "alpha": latent, "composite": latent}, factors, bias)
    assert image.shape == (4, 8, 3) and image.dtype == torch.uint8


def test_readme_shows_the_planners_current_table():
    readme = (ROOT / "README.md").read_text()
    assert plan.fits_table(49, 480, 832) in readme, "run python -m vera plan --table, update README"


def test_planner_gives_a_long_shot_one_windows_memory_and_every_windows_flops():
    config = PRESETS["wan2.1-1.3B"]
    one = plan.make_plan(config, 81, 480, 832, "bf16")
    shot = plan.make_plan(config, 481, 480, 832, "bf16", window=81, overlap=24)
    # 481 frames = 121 latent frames; windows of 21 sharing 6 start every 15: 0, 15, ..., 100
    assert shot.windows == 8 and shot.window_frames == 81
    assert shot.tokens == one.tokens and shot.sampling_need(True) == one.sampling_need(True)
    assert shot.flops == 8 * one.flops
    assert plan.seconds(shot, 50, 400) == 8 * plan.seconds(one, 50, 400)
    whole = plan.make_plan(config, 121, 480, 832, "bf16", window=0)
    assert whole.windows == 1 and whole.tokens > one.tokens


def test_plan_command_says_how_a_shot_is_windowed(capsys):
    from vera.__main__ import main

    assert main(["plan", "--frames", "481", "--window", "81", "--overlap", "24"]) == 0
    out = capsys.readouterr().out
    assert "481 frames in 8 windows of 81; memory below is one window's" in out
    assert "s of sampling for 481 frames at 50 steps" in out
    assert main(["plan", "--frames", "481", "--window", "80"]) == 2
    assert "window = 80" in capsys.readouterr().err
