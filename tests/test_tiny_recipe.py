"""The vera-tiny recipe end to end at its smoke scale: every stage runs, the edit-branch rate is
picked on the validation split and reaches the Vera stage and the bundle's recipe.json."""
import json
import math

import pytest
import torch

from vera.training import tiny_recipe


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny_recipe")
    threads = torch.get_num_threads()
    try:
        assert tiny_recipe.main(["--work", str(work), "--scale", "smoke", "--threads", "1",
                                 "--stages", "data", "vae", "t2v", "edit_lr", "vera", "baseline"]) == 0
    finally:
        torch.set_num_threads(threads)
    return work


def test_every_stage_leaves_its_output(smoke_run):
    for split in ("train", "test", "val"):
        assert (smoke_run / "data" / split / "manifest.jsonl").exists()
    for path in ("vae/vae.safetensors", "t2v/wan_t2v.safetensors", "vera/vera.safetensors",
                 "baseline/baseline.safetensors", "edit_lr/choice.json"):
        assert (smoke_run / path).exists(), path


def test_edit_lr_stage_picks_the_best_candidate_and_vera_uses_it(smoke_run):
    choice = json.loads((smoke_run / "edit_lr" / "choice.json").read_text())
    assert set(choice["results"]) == {f"{s:g}" for s in tiny_recipe.EDIT_LR_SCALES}
    mean_psnr = {key: sum(m["composite_psnr"] for m in tasks.values()) / len(tasks)
                 for key, tasks in choice["results"].items()}
    assert choice["picked"] == float(max(mean_psnr, key=mean_psnr.get))
    for key in choice["results"]:
        config = json.loads((smoke_run / "edit_lr" / f"edit_x{key}" / "train_config.json").read_text())
        assert config["config"]["branch_lr_scale"]["edit"] == float(key)
        assert config["config"]["steps"] == tiny_recipe.SCALES["smoke"]["sweep_steps"]
    vera = json.loads((smoke_run / "vera" / "train_config.json").read_text())["config"]
    assert vera["branch_lr_scale"] == dict(tiny_recipe.PAPER_BRANCH_LR_SCALE, edit=choice["picked"])


def test_bundle_records_the_choice(smoke_run, tmp_path):
    tiny_recipe.stage_bundle(smoke_run, tiny_recipe.SCALES["smoke"], dest=tmp_path)
    recipe = json.loads((tmp_path / "recipe.json").read_text())
    assert recipe["edit_lr"]["picked"] == recipe["train_configs"]["vera"]["config"][
        "branch_lr_scale"]["edit"]
    earlier = [phase[0] for phase in tiny_recipe.VAE_PHASES[:-1]]
    for name in earlier:  # each phase as its own summary has it
        summary = json.loads((smoke_run / name / "vae_summary.json").read_text())
        summary.pop("config")
        assert recipe["vae_earlier_phases"][name] == summary
    assert set(recipe["vae_earlier_phases"]) == set(earlier)
    assert recipe["vae"]["init"] == f"../{earlier[-1]}/vae.safetensors"
    for phase in [*recipe["vae_earlier_phases"].values(), recipe["vae"]]:
        assert phase["crop"] == tiny_recipe.VAE_TRAINING["crop"]
        assert phase["saturation_weight"] == tiny_recipe.VAE_TRAINING["saturation_weight"]
    assert {p.name for p in tmp_path.iterdir()} >= {"vera.safetensors", "vae.safetensors",
                                                    "text_encoder", "recipe.json"}


def test_vae_trainer_colour_options_run_and_are_recorded(smoke_run, tmp_path):
    from vera.encoders.vae import load_vae
    from vera.training.vae_trainer import train_vae

    path = train_vae(smoke_run / "data" / "train", tmp_path, steps=2, windows=(5,), limit=2,
                     init=smoke_run / "vae" / "vae.safetensors", patch_share=0.5, patch_motion=2,
                     crop=32, saturation_weight=4.0)
    summary = json.loads((tmp_path / "vae_summary.json").read_text())
    assert (summary["crop"], summary["saturation_weight"], summary["patch_motion"]) == (32, 4.0, 2)
    assert all(math.isfinite(psnr) for psnr in summary["reconstruction_psnr_db"].values())
    assert load_vae(path).config.z_dim == 16
    with pytest.raises(ValueError, match="crop 12 must be a multiple of 8"):
        train_vae(smoke_run / "data" / "train", tmp_path / "bad", steps=1, limit=2, crop=12)


def test_without_edit_lr_the_recorded_pick_is_used_and_recorded(tmp_path):
    assert "edit_lr" not in tiny_recipe.DEFAULT_STAGES
    choice = tiny_recipe.edit_lr_choice(tmp_path)
    assert choice["picked"] == tiny_recipe.EDIT_LR_PICKED == tiny_recipe.picked_edit_scale(tmp_path)
    assert "EDIT_LR_PICKED" in choice["source"]


def test_the_recorded_pick_is_the_measured_one():
    from pathlib import Path

    measured = Path(__file__).parent.parent / "bench/results/edit_lr_choice_2026-11-22.json"
    choice = json.loads(measured.read_text())
    mean_psnr = {key: sum(m["composite_psnr"] for m in tasks.values()) / len(tasks)
                 for key, tasks in choice["results"].items()}
    assert float(max(mean_psnr, key=mean_psnr.get)) == choice["picked"] == tiny_recipe.EDIT_LR_PICKED
