"""Training with FSDP2 (one unit per Vera block) on 2 processes: the same loss curve as DDP,
per-branch learning rates kept, resume bit-identical, and the saved weights load in one process.
`--fsdp` on 2 CPU processes (gloo; the trainer shards the model itself, since accelerate enables
FSDP only on GPUs), and accelerate's own FSDP where 2 GPUs are visible (`bench/gpu_check.sh`)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_training import setup  # noqa: F401  (a fixture)

from vera.checkpoints.safetensors_io import read_header

ROOT = Path(__file__).resolve().parents[1]
two_gpus = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="accelerate runs FSDP only on GPUs (2 needed; its CPU mode is DDP); "
           "bench/gpu_check.sh runs this test on a machine with 2 or more")
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2",
            "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
            "FSDP_TRANSFORMER_CLS_TO_WRAP": "BranchBlock",
            "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT", "FSDP_RESHARD_AFTER_FORWARD": "true"}


def _train(setup, files, out: Path, steps: int, fsdp: str | None, checkpoint_every: int = 0):
    """fsdp: None (DDP), "ours" (--fsdp) or "accelerate" (accelerate's FSDP, GPUs)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vera",
           "train", "--mode", "vera", "--data", str(setup["root"] / "data"), "--out", str(out),
           "--init", str(setup["wan"]), "--vae", str(files["vae_original"]), "--text-encoder",
           str(setup["text_dir"]), "--steps", str(steps), "--batch-size", "1", "--warmup", "4",
           "--lr", "1e-3", "--checkpoint-every", str(checkpoint_every),
           "--mixed-precision", "no", *(["--fsdp"] if fsdp == "ours" else [])]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               **(FSDP_ENV if fsdp == "accelerate" else {}))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("kind", ["ours", pytest.param("accelerate", marks=two_gpus)])
def test_fsdp_training_matches_ddp_resumes_exactly_and_saves_a_whole_model(setup, files,
                                                                         tmp_path, kind):
    from vera.checkpoints.weights import load_model

    steps = 20
    ddp = _train(setup, files, tmp_path / "ddp", steps, fsdp=None)
    fsdp = _train(setup, files, tmp_path / "fsdp", steps, fsdp=kind)
    assert {x["parallel"] for x in ddp} == {"ddp"} and {x["parallel"] for x in fsdp} == {"fsdp"}
    assert [x["step"] for x in fsdp] == [x["step"] for x in ddp]
    for a, b in zip(ddp, fsdp):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6), (a, b)
        assert b["lr"] == pytest.approx(a["lr"])  # the edit branch's 0.1x rate, warmed up
    ddp_weights = _weights(tmp_path / "ddp" / "vera.safetensors")
    fsdp_weights = _weights(tmp_path / "fsdp" / "vera.safetensors")
    assert ddp_weights.keys() == fsdp_weights.keys()
    for key in ddp_weights:
        torch.testing.assert_close(fsdp_weights[key], ddp_weights[key], rtol=1e-4, atol=1e-5)
    # stopped at step 10 and resumed: the same weights, bit for bit
    _train(setup, files, tmp_path / "resumed", 10, fsdp=kind, checkpoint_every=5)
    resumed = _train(setup, files, tmp_path / "resumed", steps, fsdp=kind)
    assert resumed[-1]["step"] == steps
    again = _weights(tmp_path / "resumed" / "vera.safetensors")
    assert all(torch.equal(again[k], fsdp_weights[k]) for k in fsdp_weights)
    model = load_model(tmp_path / "fsdp" / "vera.safetensors")  # one process, a plain model
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel() for t in
                                                              fsdp_weights.values())
    assert read_header(tmp_path / "fsdp" / "vera.safetensors")[1]["format"] == "vera"
