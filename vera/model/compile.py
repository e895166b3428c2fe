"""Compiled blocks: `torch.compile` of each layer's per-branch work, not of the whole model.

    note = compile_blocks(model)   # None, or why it runs uncompiled (said once)

A Vera layer is three branch blocks around one joint attention. What each branch does before the
attention (modulation, norm, QKV, RoPE) and after it (output projection, cross-attention, FFN) is
compiled as two functions shared by every block: the blocks of all layers and all three branches
have the same structure, and their weights enter the graph as inputs, so one graph serves them all
and nothing recompiles between layers, branches, steps, or the cond and uncond passes (only a new
latent or batch size compiles again). The joint attention between them stays the attention
backend's own kernel. Block swap keeps working (weights move in before their layer runs, the graph
only reads them); ComfyUI's layers (`comfy.ops`) are traced as they are, with the per-call weight
casts they make under partial loading.

Where compiling cannot work (no C++ compiler for CPU kernels, no Triton or a GPU older than compute
capability 7.0) or fails on the first call, the model runs uncompiled and the reason is said once.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import time

import torch

from .mot import EAGER_BLOCK_FUNCTIONS as EAGER

log = logging.getLogger(__name__)
TRITON_MIN_CAPABILITY = (7, 0)


def compile_problem(device: torch.device | str) -> str | None:
    """Why torch.compile cannot build kernels for `device` here, or None when it can."""
    device = torch.device(device)
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton (torch.compile's GPU code generator) is not installed"
        capability = torch.cuda.get_device_capability(device)
        if capability < TRITON_MIN_CAPABILITY:
            name = torch.cuda.get_device_name(device)
            return (f"{name} has compute capability {capability[0]}.{capability[1]}; Triton "
                    f"needs {TRITON_MIN_CAPABILITY[0]}.{TRITON_MIN_CAPABILITY[1]} or newer")
        return None
    if device.type == "cpu":
        named = os.environ.get("CXX")
        found = [c for c in ((named,) if named else ("g++", "c++", "clang++")) if shutil.which(c)]
        if not found:
            return ("no C++ compiler found (torch.compile builds CPU kernels with one: install "
                    "g++ or clang, or set CXX)")
        return None
    return f"compiled blocks are not set up for {device.type} devices"


class _CompiledBlocks:
    """Both block functions compiled. The first time a compiled call returns, it says so (with how
    long compiling took); the first time compiling fails, both go back to eager for good and it
    says why."""

    def __init__(self, model):
        self.model = model
        self.compiled = [torch.compile(f) for f in EAGER]
        self.active, self.started, self.reported = True, None, False

    def run(self, which: int, *args):
        if self.active:
            if self.started is None:
                self.started = time.perf_counter()
            try:
                out = self.compiled[which](*args)
            except torch._dynamo.exc.BackendCompilerFailed as error:
                self.active = False
                uncompile_blocks(self.model)
                inner = error.inner_exception
                log.warning("Vera compile: compiling failed (%s: %s); running uncompiled",
                            type(inner).__name__, str(inner).splitlines()[0][:200])
            else:
                if which == 1 and not self.reported:  # the first layer has run compiled
                    self.reported = True
                    log.info("Vera compile: blocks compiled (first layer %.1f s)",
                             time.perf_counter() - self.started)
                return out
        return EAGER[which](*args)


def compile_blocks(model, device: torch.device | str | None = None) -> str | None:
    """Run `model`'s (a VeraModel) per-branch block work compiled from now on. Returns None, or the
    reason it stays uncompiled (also logged once as a warning)."""
    if device is None:
        device = next(model.parameters()).device
    problem = compile_problem(device)
    if problem is not None:
        log.warning("Vera compile: %s; running uncompiled", problem)
        return problem
    blocks = _CompiledBlocks(model)
    model.block_functions = (functools.partial(blocks.run, 0), functools.partial(blocks.run, 1))
    return None


def uncompile_blocks(model) -> None:
    """Back to the eager block functions."""
    model.block_functions = EAGER
