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

import logging
import os
import shutil

import torch

from .mot import BranchBlock

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


class _CompiledOrEager:
    """A compiled function that turns into the eager one, for good, when compiling it or a sibling
    sharing `state` fails; `state["fell_back"](reason)` is called once."""

    def __init__(self, function, state: dict):
        self.eager, self.state = function, state
        self.compiled = torch.compile(function)

    def __call__(self, *args):
        if self.state["active"]:
            try:
                return self.compiled(*args)
            except torch._dynamo.exc.BackendCompilerFailed as error:
                self.state["active"] = False
                inner = error.inner_exception
                self.state["fell_back"](f"compiling failed ({type(inner).__name__}: "
                                        f"{str(inner).splitlines()[0][:200]})")
        return self.eager(*args)


def compile_blocks(model, device: torch.device | str | None = None) -> str | None:
    """Run `model`'s (a VeraModel) per-branch block work compiled from now on. Returns None, or the
    reason it stays uncompiled (also logged once as a warning)."""
    if device is None:
        device = next(model.parameters()).device
    problem = compile_problem(device)
    if problem is not None:
        log.warning("Vera compile: %s; running uncompiled", problem)
        return problem

    def fell_back(reason: str) -> None:
        uncompile_blocks(model)
        log.warning("Vera compile: %s; running uncompiled", reason)

    state = {"active": True, "fell_back": fell_back}
    model.block_functions = (_CompiledOrEager(BranchBlock.before_attention, state),
                             _CompiledOrEager(BranchBlock.after_attention, state))
    return None


def uncompile_blocks(model) -> None:
    """Back to the eager block functions."""
    model.block_functions = (BranchBlock.before_attention, BranchBlock.after_attention)
