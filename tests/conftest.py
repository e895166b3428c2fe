import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tiny_models as tiny  # noqa: E402


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def pack():
    """The node pack, imported by file location as ComfyUI imports a custom node folder."""
    from helpers import workflow_script

    return workflow_script().load_pack()


@pytest.fixture(scope="session")
def tiny_wan():
    return tiny.tiny_diffusers_wan(seed=0)


@pytest.fixture(scope="session")
def tiny_vae_model():
    return tiny.tiny_vae(seed=0)


@pytest.fixture(scope="session")
def files(tmp_path_factory, tiny_wan, tiny_vae_model):
    """The tiny models saved in every layout users have on disk."""
    from vera.checkpoints.safetensors_io import atomic_save
    from vera.encoders.vae import save_vae_original

    d = tmp_path_factory.mktemp("models")
    out = {
        "wan_comfy": atomic_save(tiny.wan_original_state_dict(tiny_wan, comfy_prefix=True), d / "wan_comfy.safetensors"),
        "wan_original": atomic_save(tiny.wan_original_state_dict(tiny_wan, comfy_prefix=False), d / "wan_orig.safetensors"),
        "wan_diffusers": atomic_save(tiny_wan.state_dict(), d / "wan_diffusers.safetensors"),
        "vae_original": save_vae_original(tiny_vae_model, d / "vae_comfy.safetensors"),
    }
    folder = d / "wan_diffusers_folder"
    tiny_wan.save_pretrained(folder)
    out["wan_diffusers_folder"] = folder
    return out
