"""Vera over several processes on this CPU (gloo): each parallel mode's velocities equal the
single-process model's, a branch-parallel process holds one branch, and layouts that cannot work
are named."""
import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vera.edit.bundle import tiny_available
from vera.model.config import BRANCHES, VeraConfig
from vera.model.mot import VeraModel
from vera.model.parallel import (
    ParallelError,
    branch_for,
    join_group,
    layout,
    leave_group,
    parallel_model,
)

needs_tiny = pytest.mark.skipif(not tiny_available(), reason="vera-tiny weights are not in this "
                                                             "checkout")


def small_model(conditioning: str = "add") -> VeraModel:
    """A random model (4 heads, 2 layers) with its conditioning embeddings made non-zero."""
    torch.manual_seed(0)
    config = VeraConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=128, text_dim=32,
                        freq_dim=32, conditioning=conditioning)
    model = VeraModel(config).eval()
    with torch.no_grad():
        for p in (*model.source_embedding.parameters(), *model.mask_embedding.parameters(),
                  model.layer_embedding_alpha, model.layer_embedding_composite):
            p.normal_(0, 0.05)
    return model


def inputs(batch: int, frames: int = 3, size: int = 6):
    """Latents `[batch, 16, frames, size, size]` (edit, alpha, composite), timesteps, text,
    source and mask."""
    g = torch.Generator().manual_seed(1)
    latent = lambda: torch.randn(batch, 16, frames, size, size, generator=g)
    return (latent(), latent(), latent(), torch.tensor([700.0, 300.0][:batch] * (batch // 2 or 1)),
            torch.randn(batch, 7, 32, generator=g), latent(), latent())


def _gloo_threads() -> list[str]:
    """This process's gloo worker threads (read on Linux from /proc; elsewhere none are seen)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return []
    return [n for n in (t.joinpath("comm").read_text().strip() for t in tasks.iterdir())
            if n.startswith("pt_gloo")]


def _member(rank: int, world: int, store: str, results: str, work, *args):
    """One gloo process: `work(rank, world, *args)` between joining and leaving the group; its
    values and the gloo threads left after leaving go to `results/<rank>.json`."""
    join_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        values = work(rank, world, *args)
        dist.barrier()  # no process leaves while another still talks to it
    finally:
        leave_group()
    with open(os.path.join(results, f"{rank}.json"), "w") as f:
        json.dump({"values": values, "threads": _gloo_threads()}, f)


def _spawn(tmp_path, world: int, work, *args) -> list[list]:
    """`work`'s values from each of `world` gloo processes. None may leave a gloo thread running:
    one still running when the interpreter shuts down may free the last collective's tensors
    then and abort the process."""
    results = tmp_path / "results"
    results.mkdir()
    mp.spawn(_member, args=(world, str(tmp_path / "store"), str(results), work, *args),
             nprocs=world, join=True)
    found = [json.loads((results / f"{rank}.json").read_text()) for rank in range(world)]
    assert not [f["threads"] for f in found if f["threads"]], found
    return [f["values"] for f in found]


def _held(model) -> int:
    """Parameters this process holds (FSDP2's shards are DTensors: their local part)."""
    return sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())


def _compare(rank: int, world: int, mode: str, conditioning: str, shard: bool):
    """The worst relative difference of this process's velocities from the single-process
    model's, the weights this process holds, and the layout it ran."""
    model = small_model(conditioning)
    args = inputs(2)
    with torch.no_grad():
        expected = model(*args)
    chosen = layout(mode, world, model.config.num_heads)
    keep = branch_for(chosen, rank)
    if keep is not None:  # this process holds only its branch
        model.branches = torch.nn.ModuleDict({keep: model.branches[keep]})
    wrapped = parallel_model(model, chosen, shard=shard)
    weights = _held(model)
    got = wrapped(*args)
    # relative to each velocity's scale: a batch of 1 and of 2 already differ by ~1e-7 of it
    worst = max(float((g - e).abs().max() / e.abs().max()) for g, e in zip(got, expected))
    return [worst, weights, chosen.describe()]


def run_parallel(tmp_path, mode: str, world: int, conditioning: str = "add",
                 shard: bool = False) -> list[list]:
    return _spawn(tmp_path, world, _compare, mode, conditioning, shard)


@pytest.mark.parametrize("mode, world, conditioning", [
    ("branch", 3, "add"), ("branch", 3, "sequence"), ("cfg", 2, "add"), ("sequence", 2, "add"),
    ("sequence", 4, "sequence")])  # branch x cfg on 6: in the sharded test below
def test_each_parallel_mode_gives_the_single_process_velocities(tmp_path, mode, world,
                                                                conditioning):
    single = sum(p.numel() for p in small_model(conditioning).parameters())
    found = run_parallel(tmp_path, mode, world, conditioning)
    for worst, weights, described in found:
        assert worst < 1e-5, (mode, world, worst)
        assert described.startswith(f"--parallel {mode}: {world} processes")
        if mode == "branch":  # one branch and the small conditioning embeddings
            assert weights < 0.4 * single, (weights, single)


@pytest.mark.parametrize("mode, world", [("cfg", 2), ("sequence", 2), ("branch", 6)])
def test_sharded_weights_give_the_same_velocities_from_a_share_of_the_blocks(tmp_path, mode,
                                                                             world):
    model = small_model()
    count = lambda module: sum(p.numel() for p in module.parameters())
    single, branch = count(model), count(model.branches["edit"])
    blocks = count(model.branches["edit"].blocks)  # per branch
    if mode == "branch":  # one branch, its blocks halved, and the conditioning embeddings
        per_process = single - 3 * branch + branch - blocks / 2
    else:  # every branch, its blocks halved
        per_process = single - 3 * blocks / 2
    for worst, weights, _ in run_parallel(tmp_path, mode, world, shard=True):
        assert worst < 1e-5, (mode, world, worst)
        assert weights <= per_process * 1.05 + 100, (weights, per_process)


def test_layouts_that_cannot_work_are_named():
    assert layout("auto", 3, 12).branch and layout("auto", 2, 12).cfg == 2
    assert layout("auto", 4, 12).sequence == 4 and layout("auto", 6, 40).cfg == 2
    with pytest.raises(ParallelError, match="branch on 4 processes: it needs 3 .* or 6"):
        layout("branch", 4, 12)
    with pytest.raises(ParallelError, match="12 heads do not divide by 5; launch one of 2, 3, 4"):
        layout("sequence", 5, 12)
    with pytest.raises(ParallelError, match="cfg on 3 processes"):
        layout("cfg", 3, 12)
    with pytest.raises(ParallelError, match="auto on 7 processes: none of the modes fits"):
        layout("auto", 7, 12)
    assert [branch_for(layout("branch", 6, 12), r) for r in range(6)] == [*BRANCHES, *BRANCHES]


PROMPT = "add a large red circle moving from left to right"


def _torchrun(tmp_path, world: int, *arguments: str):
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    return subprocess.run([torchrun, "--standalone", "--nproc_per_node", str(world), "-m", "vera",
                           "edit", *arguments], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    from vera.__main__ import main

    out = tmp_path_factory.mktemp("single") / "out"
    assert main(["edit", "--prompt", PROMPT, "--steps", "3", "--out", str(out)]) == 0
    return out


@needs_tiny
@pytest.mark.parametrize("mode, world, extra", [
    ("branch", 3, ()), ("cfg", 2, ()), ("sequence", 2, ("--shard-weights",))])
def test_a_parallel_edit_under_torchrun_writes_the_single_process_result(
        tmp_path, single_run, mode, world, extra):
    from vera.media.video import read_png

    out = tmp_path / "out"
    done = _torchrun(tmp_path, world, "--parallel", mode, *extra, "--prompt", PROMPT, "--steps",
                     "3", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"--parallel {mode}: {world} processes" in done.stdout
    for folder in ("final_composite", "edit_layer_rgba", "alpha"):
        ours = sorted((out / folder).glob("*.png"))
        theirs = sorted((single_run / folder).glob("*.png"))
        assert len(ours) == len(theirs) == 17
        worst = max(int((read_png(a).int() - read_png(b).int()).abs().max())
                    for a, b in zip(ours, theirs))
        assert worst <= 1, (folder, worst)
    report = json.loads((out / "report.json").read_text())
    assert report["preservation"]["preserved_exact"] == 1.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@needs_tiny
def test_parallel_modes_that_cannot_run_are_refused(tmp_path, capsys):
    from vera.__main__ import main

    assert main(["edit", "--parallel", "branch", "--prompt", PROMPT, "--out",
                 str(tmp_path / "a")]) == 2
    assert "needs several processes: launch with torchrun" in capsys.readouterr().err
    assert main(["edit", "--shard-weights", "--prompt", PROMPT, "--out",
                 str(tmp_path / "a")]) == 2
    assert "--shard-weights needs processes" in capsys.readouterr().err
    done = _torchrun(tmp_path, 2, "--parallel", "branch", "--prompt", PROMPT, "--out",
                     str(tmp_path / "b"))
    assert done.returncode != 0 and "it needs 3 (one per branch) or 6" in done.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _load_sharded(rank: int, world: int, path: str) -> list:
    """Each process reads only its rows of the blocks from the file (`--shard-weights`)."""
    from vera.checkpoints.weights import load_model
    from vera.model.parallel import shard_mesh

    model = load_model(path, "fp32", shard_mesh=shard_mesh(None, "cpu"))
    local = _held(model)
    got = parallel_model(model, layout("sequence", world, 4), shard=True)(*inputs(1))
    expected = load_model(path, "fp32")(*inputs(1))
    return [max(float((g - e).abs().max() / e.abs().max()) for g, e in zip(got, expected)), local]


def test_sharded_loading_reads_only_this_processs_rows_of_each_block(tmp_path):
    from vera.checkpoints.weights import save_vera

    model = small_model()
    path = save_vera(model, tmp_path / "small.safetensors")
    found = _spawn(tmp_path, 2, _load_sharded, str(path))
    count = lambda module: sum(p.numel() for p in module.parameters())
    blocks = sum(count(b.blocks) for b in model.branches.values())
    assert all(worst < 1e-5 for worst, _ in found), found
    locals_ = [local for _, local in found]
    # the blocks' rows split between the two (unevenly where a tensor has one row), the rest whole
    assert sum(locals_) == 2 * (count(model) - blocks) + blocks
    assert all(n < count(model) - 0.45 * blocks for n in locals_)
