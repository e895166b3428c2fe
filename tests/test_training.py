import json

import pytest
import torch

from vera.checkpoints.safetensors_io import atomic_save as save_tensors
from vera.checkpoints.safetensors_io import read_header
from vera.checkpoints.weights import load_model, save_vera
from vera.data.layout import write_manifest, write_sample
from vera.data.synthetic import SyntheticBuilder, vocabulary
from vera.model.config import BRANCHES, VeraConfig
from vera.training.latents import encode_dataset
from vera.training.text_model import build_text_encoder
from vera.training.trainer import TrainConfig, Trainer, vera_param_groups

SMALL = VeraConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=128, text_dim=32, freq_dim=32, name="test")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, files, tiny_vae_model):
    """A 4-sample layered dataset (9 frames, 32x32), its latents, a tiny text encoder and a Wan file."""
    from vera.data.clips import load_background_clips
    from vera.model.single import WanVideoModel
    from vera.training.run import save_wan

    root = tmp_path_factory.mktemp("train")
    builder = SyntheticBuilder(load_background_clips(max_frames=20), frames=9, height=32, width=32)
    entries = [write_sample(root / "data", builder.sample(0, i, t)) for i in range(2) for t in ("object_addition", "background_change")]
    write_manifest(root / "data", entries)
    latents = encode_dataset(root / "data", tiny_vae_model)
    text_dir = root / "text"
    build_text_encoder(text_dir, vocabulary(), d_model=32)
    torch.manual_seed(0)
    wan = save_wan(WanVideoModel(SMALL), root / "wan.safetensors")
    return dict(root=root, latents=latents, text_dir=text_dir, wan=wan)


def make_trainer(setup, out, steps, mode="vera", **kw):
    from vera.encoders.text import TextEncoder
    from vera.training.run import wan_video_model

    cfg = TrainConfig(mode=mode, steps=steps, batch_size=2, lr=1e-3, warmup_steps=1, checkpoint_every=0, **kw)
    model = load_model(setup["wan"], from_wan=True) if mode == "vera" else wan_video_model(setup["wan"], None, mode == "baseline")
    text = TextEncoder.from_folder(setup["text_dir"])
    return Trainer(cfg, model, setup["latents"], text, out, train_text=mode == "t2v")


def test_latent_cache_shapes(setup):
    lat = setup["latents"]
    assert lat["source"].shape == (4, 16, 3, 4, 4) and lat["mask"].shape == (4, 16, 3, 4, 4)
    assert lat["has_mask"].tolist() == [True] * 4 and lat["task"][:2] == ["object_addition", "background_change"]


@pytest.mark.parametrize("mode", ["vera", "t2v", "baseline"])
def test_five_steps_lower_the_loss(setup, tmp_path, mode):
    trainer = make_trainer(setup, tmp_path, 5, mode)
    with torch.no_grad():
        before = trainer.loss(0)[0].item()  # the loss of a fixed batch with fixed noise
    trainer.run(progress=False)
    with torch.no_grad():
        after = trainer.loss(0)[0].item()
    assert after < before
    log = [json.loads(line) for line in (tmp_path / "loss.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 5 and (mode != "vera" or {"loss_edit", "loss_alpha", "loss_composite"} <= set(log[-1]))


def test_resume_continues_to_the_same_state(setup, tmp_path):
    straight = make_trainer(setup, tmp_path / "a", 5)
    straight.run(progress=False)
    first = make_trainer(setup, tmp_path / "b", 3)
    first.run(progress=False)  # saves checkpoint/ at step 3
    resumed = make_trainer(setup, tmp_path / "b", 5)
    assert resumed.resume() and resumed.step == 3
    resumed.run(progress=False)
    a, b = straight.unwrapped().state_dict(), resumed.unwrapped().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.optimizer.state_dict()["state"].keys() == resumed.optimizer.state_dict()["state"].keys()
    fresh = make_trainer(setup, tmp_path / "c", 5)
    fresh.run(progress=False)
    assert all(torch.equal(a[k], fresh.unwrapped().state_dict()[k]) for k in a)  # same seed, same result
    other = make_trainer(setup, tmp_path / "d", 5, seed=1)
    other.run(progress=False)
    assert not all(torch.equal(a[k], other.unwrapped().state_dict()[k]) for k in a)


def test_optimizer_holds_the_per_branch_learning_rates(setup, tmp_path):
    trainer = make_trainer(setup, tmp_path, 2)
    model = trainer.unwrapped()
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["edit"]["lr"] == pytest.approx(1e-4) and groups["alpha"]["lr"] == pytest.approx(1e-2)
    assert groups["composite"]["lr"] == pytest.approx(1e-2)
    ids = lambda ps: {id(p) for p in ps}
    for name in BRANCHES:
        assert ids(model.branches[name].parameters()) <= ids(groups[name]["params"])
    assert id(model.mask_embedding.weight) in ids(groups["alpha"]["params"])
    assert id(model.source_embedding.weight) in ids(groups["composite"]["params"])
    assert id(model.layer_embedding_composite) in ids(groups["composite"]["params"])
    every = [id(p) for g in groups.values() for p in g["params"]]
    assert len(every) == len(set(every)) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="missing \\['alpha'\\]"):
        TrainConfig(branch_lr_scale={"edit": 0.1, "composite": 10})


def test_mask_dropout_reaches_the_model(setup, tmp_path):
    seen = []
    trainer = make_trainer(setup, tmp_path, 1, mask_dropout={"object_addition": 1.0, "background_change": 0.0})
    original = trainer.model.forward

    def spy(*args, mask_keep=None, **kw):
        seen.append(mask_keep.clone())
        return original(*args, mask_keep=mask_keep, **kw)

    trainer.model.forward = spy
    for step in range(4):
        idx = trainer.batches.indices(step)
        trainer.loss(step)
        tasks = [setup["latents"]["task"][i] for i in idx.tolist()]
        assert seen[-1].tolist() == [0.0 if t == "object_addition" else 1.0 for t in tasks]


def test_lora_shares_one_base_and_merges_to_a_standard_vera_model(setup, tmp_path):
    from vera.model.mot import VeraModel
    from vera.training.lora import merge_lora, shared_base_lora, weight_bytes

    model = load_model(setup["wan"], from_wan=True)
    full = weight_bytes(model)
    shared_base_lora(model, rank=4)
    assert weight_bytes(model) < 0.6 * full
    q = [model.branches[n].blocks[0].self_attn.q for n in BRANCHES]
    assert q[0].base_layer.weight is q[1].base_layer.weight and not q[0].base_layer.weight.requires_grad
    opt = torch.optim.AdamW(vera_param_groups(model, 1e-2, {"edit": 1, "alpha": 1, "composite": 1}, 0.0))
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(1, 16, 3, 4, 4, generator=g) for _ in range(4)]
    ctx = torch.randn(1, 8, 32, generator=g)
    for _ in range(2):
        loss = sum(o.pow(2).mean() for o in model(*x[:3], torch.tensor([500.0]), ctx, x[3]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        before = model(*x[:3], torch.tensor([500.0]), ctx, x[3])
    # the adapters (and every other tensor training moved) as a LoRA file, read back onto the base
    from vera.checkpoints.lora import LoraSpec, read_lora
    from vera.model import lora as lora_ops
    from vera.training.lora import lora_file_tensors

    base = load_model(setup["wan"], from_wan=True)
    lora_file = save_tensors(lora_file_tensors(model, base), tmp_path / "vera_lora.safetensors")
    patches, report = read_lora(LoraSpec(lora_file), base)
    assert report.applied == report.total and any(".diff" in k for k in read_header(lora_file)[0])
    lora_ops.attach(base, patches)
    with torch.no_grad():
        read_back = base(*x[:3], torch.tensor([500.0]), ctx, x[3])
    for a, b in zip(before, read_back):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    merge_lora(model)
    assert sorted(model.state_dict()) == sorted(VeraModel(SMALL).state_dict())
    with torch.no_grad():
        after = model(*x[:3], torch.tensor([500.0]), ctx, x[3])
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="must start identical"):
        shared_base_lora(model, rank=4)
    ptrs = [p.data_ptr() for p in model.parameters()]
    assert len(ptrs) == len(set(ptrs)) == len(model.state_dict())  # every branch owns its tensors again
    path = save_vera(model, tmp_path / "merged.safetensors")
    with torch.no_grad():
        reloaded = load_model(path)(*x[:3], torch.tensor([500.0]), ctx, x[3])
    for a, b in zip(after, reloaded):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_same_script_runs_data_parallel_on_two_processes(setup, files, tmp_path):
    """torchrun with 2 CPU processes (gloo): each takes its own slice of the batch; the schedule stays in steps."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from vera.checkpoints.weights import detect

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vera", "train", "--mode", "vera",
           "--data", str(setup["root"] / "data"), "--out", str(out), "--init", str(setup["wan"]), "--vae",
           str(files["vae_original"]), "--text-encoder", str(setup["text_dir"]), "--steps", "2", "--batch-size", "2",
           "--warmup", "4", "--lr", "1e-3", "--checkpoint-every", "0"]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    log = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert log[-1]["processes"] == 2 and log[-1]["step"] == 2
    assert log[-1]["lr"] == pytest.approx(1e-4 * 2 / 4)  # edit group: 0.1 x 1e-3, warm-up 2 of 4 steps
    assert detect(out / "vera.safetensors").format == "vera"
    assert sorted(p.name for p in (out / "checkpoint").glob("random_states_*")) == ["random_states_0.pkl", "random_states_1.pkl"]


def test_vae_colour_helpers_give_saturated_frames_and_keep_pixel_values():
    """The VAE trainer's colour options: patch frames hold flat saturated colours in [-1, 1];
    a channel permutation moves values between channels of the same pixel and nothing else."""
    import numpy as np

    from vera.training.vae_trainer import colour_patches, opponent, permute_channels

    rng = np.random.default_rng(0)
    frames = colour_patches(6, 5, (32, 48), rng)
    assert frames.shape == (6, 3, 5, 32, 48) and frames.min() >= -1 and frames.max() <= 1
    assert torch.equal(frames[:, :, 0], frames[:, :, 4])  # still frames
    chroma = (frames.max(1).values - frames.min(1).values)
    assert (chroma > 0.6).float().mean() > 0.3  # much of each frame is strongly coloured
    moving = colour_patches(6, 5, (32, 48), np.random.default_rng(1), motion=3)
    assert moving.shape == frames.shape and moving.min() >= -1 and moving.max() <= 1
    assert not torch.equal(moving[:, :, 0], moving[:, :, 4])
    # a moving rectangle is a shifted copy: its colours stay the ones it started with
    for clip in moving:
        first = set(map(tuple, clip[:, 0].reshape(3, -1).T.tolist()))
        assert set(map(tuple, clip[:, 4].reshape(3, -1).T.tolist())) <= first
    x = torch.rand(4, 3, 2, 8, 8) * 2 - 1
    y = permute_channels(x, rng)
    assert torch.equal(y.sort(1).values, x.sort(1).values) and not torch.equal(x, y)
    grey = torch.full((1, 3, 1, 4, 4), 0.3)
    assert opponent(grey).abs().max() == 0 and opponent(x).shape == (4, 2, 2, 8, 8)


def test_reconstruction_error_weights_saturated_pixels():
    """Closed form: a grey pixel keeps weight 1, a fully saturated one (red: 1, -1, -1) 1 + w."""
    from vera.training.vae_trainer import reconstruction_error

    target = torch.tensor([[0.2, 0.2, 0.2], [1.0, -1.0, -1.0]]).T.reshape(1, 3, 1, 1, 2)
    recon = target + 0.5
    per_element = 0.5 + 0.25
    assert reconstruction_error(recon, target) == pytest.approx(per_element)
    assert reconstruction_error(recon, target, 4.0) == pytest.approx(per_element * (1 + 5) / 2)
