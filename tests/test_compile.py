"""Compiled blocks: equal to eager, one graph for every layer and branch, no recompiles between
steps or passes, block swap kept, and a clear fallback where compiling cannot work."""
import logging

import pytest
import torch
from helpers import inputs

from vera.model import compile as compiled
from vera.model.blockswap import BlockSwap
from vera.model.config import VeraConfig
from vera.model.mot import VeraModel

CONFIG = VeraConfig(dim=32, num_heads=2, num_layers=3, ffn_dim=64, text_dim=32, freq_dim=32)
needs_a_compiler = pytest.mark.skipif(compiled.compile_problem("cpu") is not None,
                                      reason="torch.compile cannot build CPU kernels here")


def model(seed=0):
    torch.manual_seed(seed)
    m = VeraModel(CONFIG).eval()
    with torch.no_grad():  # the conditioning embeddings start at zero: give them values
        for p in (*m.source_embedding.parameters(), m.layer_embedding_alpha,
                  m.layer_embedding_composite):
            p.normal_(0, 0.1)
    return m


def run(m, x):
    with torch.no_grad():
        return m(x["edit"], x["alpha"], x["composite"], x["timestep"], x["context"], x["source"])


@needs_a_compiler
def test_compiled_blocks_equal_eager_with_one_graph_and_no_recompiles(caplog):
    torch._dynamo.reset()
    m = model()
    steps = [inputs(seed=s) for s in (1, 2, 3)]
    for x, t in zip(steps, (999.0, 600.0, 20.0)):
        x["timestep"] = torch.tensor([t])
    eager = [run(m, x) for x in steps]
    assert compiled.compile_blocks(m) is None
    torch._dynamo.utils.counters.clear()
    with caplog.at_level(logging.INFO, logger="vera.model.compile"):
        first = run(m, steps[0])  # compiles: before and after the attention, once each
    said = [r.getMessage() for r in caplog.records if r.name == "vera.model.compile"]
    assert len(said) == 1 and said[0].startswith("Vera compile: blocks compiled (first layer")
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs == 2, dict(torch._dynamo.utils.counters["stats"])
    with torch._dynamo.config.patch(error_on_recompile=True):
        later = [run(m, x) for x in steps[1:]]  # other steps, other text (cond / uncond)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    for got, want in zip([first, *later], eager):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@needs_a_compiler
def test_compiled_blocks_keep_working_under_block_swap():
    torch._dynamo.reset()
    m, x = model(1), inputs(seed=4)
    eager = run(m, x)
    swap = BlockSwap(m, swap_layers=2, device="cpu")
    compiled.compile_blocks(m)
    with torch._dynamo.config.patch(error_on_recompile=True):
        run(m, x)  # the first call compiles; the second must reuse the graphs
        got = run(m, x)
    assert swap.moves  # the swap schedule ran
    for g, w in zip(got, eager):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_without_a_compiler_it_says_why_once_and_runs_uncompiled(monkeypatch, caplog):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    m, x = model(2), inputs(seed=5)
    eager = run(m, x)
    with caplog.at_level(logging.WARNING):
        reason = compiled.compile_blocks(m, "cpu")
    assert "no C++ compiler found" in reason and "install g++ or clang, or set CXX" in reason
    assert [r.getMessage() for r in caplog.records] == [
        f"Vera compile: {reason}; running uncompiled"]
    assert m.block_functions == compiled.EAGER
    for g, w in zip(run(m, x), eager):
        assert torch.equal(g, w)


def test_a_failed_compile_falls_back_to_eager_and_says_so(monkeypatch, caplog):
    m, x = model(3), inputs(seed=6)
    eager = run(m, x)

    def broken_compile(function, **_):
        def fail(*args):
            raise torch._dynamo.exc.BackendCompilerFailed(
                "inductor", RuntimeError("C++ compile error: cannot find -lgomp"), None)
        return fail

    monkeypatch.setattr(compiled, "compile_problem", lambda device: None)
    monkeypatch.setattr(torch, "compile", broken_compile)
    compiled.compile_blocks(m, "cpu")
    with caplog.at_level(logging.WARNING):
        got = run(m, x)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "compiling failed (RuntimeError: C++ compile error" in messages[0]
    assert m.block_functions == compiled.EAGER
    for g, w in zip(got, eager):
        assert torch.equal(g, w)
