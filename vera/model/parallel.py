"""Vera over several processes with `torch.distributed` (NCCL on GPUs, gloo on CPU).

Three ways to split one model evaluation, each a module with VeraModel's call signature
(velocities for the three branches on every process, so the sampler runs unchanged everywhere):

- branch: one branch per process (3 processes). Each holds and runs only its branch; per layer
  the joint attention needs the other branches' keys and values (all-gather), and each process
  attends with its own queries. Weights and nearly all compute split three ways.
- cfg (batch): the batch split over processes; with cond and uncond in one batch (batch CFG) the
  two passes run side by side on 2 processes. Composes with branch (2 x 3 = 6 processes).
- sequence (Ulysses): every stream's tokens split over processes; per layer an all-to-all trades
  tokens for heads, so each process attends over all tokens with its share of the heads (the head
  count must divide by the process count), and a second all-to-all trades them back.

Beside any of them, `shard_weights` spreads each layer's weights over processes with FSDP2
(`fully_shard` per block): a process holds its share and gathers a layer's weights just before it
runs, for a model (or a branch) that does not fit one device.

`layout(...)` picks and checks the mode for a process count and head count.
"""
from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from .attention import attention
from .config import BRANCHES

MODES = ("auto", "branch", "cfg", "sequence")


class ParallelError(ValueError):
    """A parallel mode that cannot work with these processes or this model."""


@dataclass(frozen=True)
class Layout:
    """How `world` processes share the work: `branch` True (one branch per process in groups of
    three), `cfg` (how many groups split the batch), `sequence` (processes splitting tokens)."""

    mode: str
    world: int
    branch: bool = False
    cfg: int = 1
    sequence: int = 1

    def describe(self) -> str:
        parts = [f"{self.world} processes"]
        if self.branch:
            parts.append("one branch each (edit, alpha, composite)")
        if self.cfg > 1:
            parts.append(f"the batch (cond / uncond) over {self.cfg}")
        if self.sequence > 1:
            parts.append(f"tokens over {self.sequence} (Ulysses)")
        return f"--parallel {self.mode}: " + ", ".join(parts)


def layout(mode: str, world: int, num_heads: int) -> Layout:
    """The layout for `mode` on `world` processes (auto: branch for 3 or 6, cfg for 2, else
    sequence when the heads divide), or a ParallelError that says what would work."""
    if mode not in MODES:
        raise ParallelError(f"--parallel {mode!r}: choose one of {', '.join(MODES)}")
    if world == 1:
        return Layout("single", 1)
    if mode == "auto":
        if world in (3, 6):
            mode = "branch"
        elif world == 2:
            mode = "cfg"
        elif num_heads % world == 0:
            mode = "sequence"
        else:
            raise ParallelError(f"--parallel auto on {world} processes: none of the modes fits "
                                f"(branch needs 3 or 6, cfg 2, sequence a count that divides the "
                                f"model's {num_heads} heads); launch 2, 3, 6 or a divisor of "
                                f"{num_heads}")
    if mode == "branch":
        if world not in (3, 6):
            raise ParallelError(f"--parallel branch on {world} processes: it needs 3 (one per "
                                "branch) or 6 (3 branches x cond / uncond); launch "
                                "--nproc_per_node 3 or 6")
        return Layout("branch", world, branch=True, cfg=world // 3)
    if mode == "cfg":
        if world != 2:
            raise ParallelError(f"--parallel cfg on {world} processes: it splits cond and uncond "
                                "over 2; launch --nproc_per_node 2 (or 6 with --parallel branch)")
        return Layout("cfg", world, cfg=2)
    if num_heads % world:
        divisors = [n for n in range(2, num_heads + 1) if num_heads % n == 0]
        raise ParallelError(f"--parallel sequence on {world} processes: the model's {num_heads} "
                            f"heads do not divide by {world}; launch one of "
                            f"{', '.join(map(str, divisors[:8]))} processes")
    return Layout("sequence", world, sequence=world)


def _gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
    """Every process's tensor of the same shape, in rank order."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return parts


def _gather_tokens(tensor: torch.Tensor, lengths: list[int], group=None) -> torch.Tensor:
    """`[B, L_r, ...]` of different L_r per process -> `[B, sum L, ...]` in rank order (padded
    to the longest for the all-gather)."""
    longest = max(lengths)
    pad = longest - tensor.shape[1]
    if pad:
        tensor = torch.cat([tensor, tensor.new_zeros(tensor.shape[0], pad, *tensor.shape[2:])],
                           dim=1)
    parts = _gather(tensor, group)
    return torch.cat([p[:, :n] for p, n in zip(parts, lengths)], dim=1)


class _Parallel(nn.Module):
    """A parallel wrapper: what the sampler asks of a model (config, dtype) from the one
    inside."""

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype


def _stream_lengths(config, tokens: int, masked: bool) -> list[int]:
    """Tokens of the edit, alpha and composite streams (see `VeraModel.embed`): `tokens` each,
    doubled where sequence conditioning appends the source (composite) or the mask (alpha)."""
    appended = config.conditioning != "add"
    return [tokens, tokens * (2 if appended and masked else 1), tokens * (2 if appended else 1)]


class BranchParallel(_Parallel):
    """One branch of `model` on this process (`model` may hold only that branch, see
    `load_model(branches=...)`); the others run on the other processes of `group`, whose rank r
    runs BRANCHES[r]."""

    def __init__(self, model: nn.Module, group=None):
        super().__init__()
        if dist.get_world_size(group) != len(BRANCHES):
            raise ParallelError(f"branch parallel needs {len(BRANCHES)} processes in its group")
        self.model, self.group = model, group
        self.name = BRANCHES[dist.get_rank(group)]
        self.config = model.config

    @torch.no_grad()
    def forward(self, edit, alpha, composite, timestep, context, source, mask=None):
        model, name = self.model, self.name
        prepared = model.embed(edit, alpha, composite, timestep, context, source, mask,
                               names=(name,))
        lengths = _stream_lengths(model.config, prepared.tokens, mask is not None)

        def attend(qkv):
            q, k, v = qkv[0]
            keys = _gather_tokens(k, lengths, self.group)
            values = _gather_tokens(v, lengths, self.group)
            return [attention(q, keys, values, model.attention_backend)]

        streams = model.run_layers((name,), prepared, attend=attend)
        velocity = model.velocities((name,), streams, prepared)[0]
        return tuple(_gather(velocity, self.group))


class BatchParallel(_Parallel):
    """The batch split over the processes of `group` (rank r takes the r-th part): with cond and
    uncond batched (batch CFG), CFG-parallel. `model` is any velocity model (VeraModel or
    BranchParallel)."""

    def __init__(self, model: nn.Module, group=None):
        super().__init__()
        self.model, self.group, self.config = model, group, model.config
        self.parts, self.rank = dist.get_world_size(group), dist.get_rank(group)

    @torch.no_grad()
    def forward(self, edit, alpha, composite, timestep, context, source, mask=None):
        batch = edit.shape[0]
        if batch % self.parts:
            raise ParallelError(f"a batch of {batch} does not split over {self.parts} processes "
                                "(cfg parallel needs cond and uncond in one batch: batch CFG on)")
        share = batch // self.parts
        part = slice(self.rank * share, (self.rank + 1) * share)
        timestep = timestep.reshape(-1).expand(batch)
        picked = [None if t is None else t[part] for t in
                  (edit, alpha, composite, timestep, context, source, mask)]
        velocities = self.model(*picked)
        return tuple(torch.cat(_gather(v, self.group)) for v in velocities)


class SequenceParallel(_Parallel):
    """Ulysses: each stream's tokens split over the processes of `group`; `model` is the whole
    VeraModel on every process."""

    def __init__(self, model: nn.Module, group=None):
        super().__init__()
        self.model, self.group, self.config = model, group, model.config
        self.parts, self.rank = dist.get_world_size(group), dist.get_rank(group)
        if model.config.num_heads % self.parts:
            raise ParallelError(f"sequence parallel: {model.config.num_heads} heads do not "
                                f"divide by {self.parts} processes")

    def _share(self, length: int) -> tuple[slice, list[int]]:
        sizes = [len(c) for c in torch.arange(length).tensor_split(self.parts)]
        start = sum(sizes[:self.rank])
        return slice(start, start + sizes[self.rank]), sizes

    @torch.no_grad()
    def forward(self, edit, alpha, composite, timestep, context, source, mask=None):
        model = self.model
        prepared = model.embed(edit, alpha, composite, timestep, context, source, mask)
        shares = {}
        for name, x in prepared.streams.items():
            part, sizes = self._share(x.shape[1])
            shares[name] = sizes
            prepared.streams[name] = x[:, part]
            prepared.ropes[name] = tuple(r[part] for r in prepared.ropes[name])
        # tokens each process holds of the joint sequence: known from the split, not asked for
        counts = [sum(sizes[r] for sizes in shares.values()) for r in range(self.parts)]
        streams = model.run_layers(BRANCHES, prepared,
                                   attend=lambda qkv: self._attend(qkv, counts))
        full = [_gather_tokens(x, shares[name], self.group) for name, x in zip(BRANCHES, streams)]
        return tuple(model.velocities(BRANCHES, full, prepared))

    def _attend(self, qkv: list, counts: list[int]) -> list[torch.Tensor]:
        """This process's tokens of every stream, `(q, k, v)` `[B, l_i, H, Dh]` each -> their
        attention over every process's tokens (`counts`: how many each process holds)."""
        lengths = [q.shape[1] for q, _, _ in qkv]
        local = [torch.cat([s[i] for s in qkv], dim=1) for i in range(3)]
        q, k, v = (self._to_heads(t, counts) for t in local)
        out = self._to_tokens(attention(q, k, v, self.model.attention_backend), counts)
        return list(out.split(lengths, dim=1))

    def _to_heads(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """`[B, l, H, Dh]` (this process's tokens, all heads) -> `[B, sum l, H/N, Dh]` (every
        process's tokens, this process's heads)."""
        b, l, h, d = x.shape
        send = x.reshape(b, l, self.parts, h // self.parts, d).permute(2, 1, 0, 3, 4)
        received = torch.empty(sum(counts), b, h // self.parts, d, dtype=x.dtype,
                               device=x.device)
        dist.all_to_all_single(received, send.reshape(self.parts * l, b, h // self.parts, d)
                               .contiguous(), output_split_sizes=counts,
                               input_split_sizes=[l] * self.parts, group=self.group)
        return received.permute(1, 0, 2, 3)

    def _to_tokens(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """The inverse of `_to_heads`: `[B, sum l, H/N, Dh]` -> `[B, l, H, Dh]`."""
        b, _, hn, d = x.shape
        mine = counts[self.rank]
        received = torch.empty(self.parts * mine, b, hn, d, dtype=x.dtype, device=x.device)
        dist.all_to_all_single(received, x.permute(1, 0, 2, 3).contiguous(),
                               output_split_sizes=[mine] * self.parts,
                               input_split_sizes=counts, group=self.group)
        return received.reshape(self.parts, mine, b, hn, d).permute(2, 1, 0, 3, 4).reshape(
            b, mine, self.parts * hn, d)


def parallel_model(model: nn.Module, chosen: Layout, shard: bool = False,
                   device_type: str = "cpu", groups: Groups | None = None) -> nn.Module:
    """Wrap `model` (loaded for this process: one branch in branch mode) for the layout. groups:
    from `process_groups` (built here when not given: every process must call this in the same
    order). shard: also shard the blocks' weights with FSDP2 (`shard_weights`) over all
    processes, or in branch mode over the processes running the same branch."""
    if shard:
        check_shard(chosen)
    if chosen.world == 1:
        return model
    groups = groups or process_groups(chosen)
    if shard:
        shard_weights(model, groups.across, device_type)
    if chosen.branch:
        wrapped = BranchParallel(model, groups.branch)
        return BatchParallel(wrapped, groups.across) if chosen.cfg > 1 else wrapped
    if chosen.cfg > 1:
        return BatchParallel(model, None)
    return SequenceParallel(model, None)


def branch_for(chosen: Layout, rank: int) -> str | None:
    """The one branch a process loads in branch mode (None: it loads all three)."""
    return BRANCHES[rank % 3] if chosen.branch else None


class ShardedLayers:
    """A layer hook (`VeraModel.layer_hook`) for a model whose blocks are sharded with FSDP2:
    each layer's blocks are gathered (all-gather) before it runs and dropped after."""

    def __init__(self, model: nn.Module):
        self.blocks = [[branch.blocks[i] for branch in model.branches.values()]
                       for i in range(model.config.num_layers)]

    def before(self, layer: int) -> None:
        for block in self.blocks[layer]:
            block.unshard()

    def after(self, layer: int) -> None:
        for block in self.blocks[layer]:
            block.reshard()


def shard_blocks(model: nn.Module, mesh) -> None:
    """FSDP2 `fully_shard` on every block of `model` over `mesh` (a DeviceMesh); works on the meta
    device too (then each process allocates and reads only its shards, see `load_model`)."""
    from torch.distributed.fsdp import fully_shard

    for branch in model.branches.values():
        for block in branch.blocks:
            fully_shard(block, mesh=mesh, reshard_after_forward=True)


def _blocks_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(next(iter(model.branches.values())).blocks[0], FSDPModule)


_MESHES: weakref.WeakSet = weakref.WeakSet()  # made by shard_mesh, let go of by leave_group


def shard_mesh(group, device_type: str):
    """The DeviceMesh of a process group (None: all processes)."""
    from torch.distributed.device_mesh import DeviceMesh

    mesh = DeviceMesh.from_group(group or dist.group.WORLD, device_type)
    _MESHES.add(mesh)
    return mesh


def join_group(backend: str, **options) -> None:
    """`init_process_group(backend, **options)`, with FSDP imported first: importing it later
    imports `torch.distributed.nn`, whose functions take the live default group as a default
    argument and so keep it alive after `leave_group` (see there)."""
    import torch.distributed.fsdp  # noqa: F401

    dist.init_process_group(backend, **options)


def leave_group() -> None:
    """Destroy the process groups and drop every reference this package made to them, so that
    gloo's worker threads are joined now. `destroy_process_group` alone leaves a group's threads
    running while anything still refers to it (a DeviceMesh does, and DTensor specs that outlive
    the model keep their mesh); such a thread may drop the last collective's tensors while the
    interpreter shuts down, which aborts the process ("terminate called without an active
    exception"). Drop sharded models before calling this."""
    if dist.is_initialized():
        dist.destroy_process_group()
    for mesh in list(_MESHES):
        registry = getattr(mesh, "_pg_registry", None)  # the mesh's groups, by name
        if isinstance(registry, dict):
            registry.clear()
    gc.collect()


def shard_weights(model: nn.Module, group=None, device_type: str = "cpu") -> None:
    """Shard every block of `model` (a VeraModel, or one branch of it) over the processes of
    `group` with FSDP2 (unless `load_model` already did), and gather each layer as it runs;
    embeddings, conditioning and heads stay whole on every process."""
    if model.layer_hook is not None:
        raise ParallelError("--shard-weights with --swap-layers: choose one way to keep the "
                            "weights off the device (sharding over processes or swapping)")
    if not _blocks_sharded(model):
        shard_blocks(model, shard_mesh(group, device_type))
    model.layer_hook = ShardedLayers(model)


@dataclass
class Groups:
    """The process groups of a layout: `branch` (the three processes of one branch triple) and
    `across` (the processes running the same branch, or all of them)."""

    branch: object = None
    across: object = None


def process_groups(chosen: Layout) -> Groups:
    """Build the layout's process groups (every process must call this, in the same order): only
    branch mode has groups of its own; the other modes use all processes."""
    if not chosen.branch:
        return Groups()
    rank = dist.get_rank()
    triples = [dist.new_group(list(range(c * 3, c * 3 + 3))) for c in range(chosen.cfg)]
    across = None
    if chosen.cfg > 1:
        across = [dist.new_group([b + 3 * c for c in range(chosen.cfg)]) for b in range(3)]
        across = across[rank % 3]
    return Groups(triples[rank // 3], across)


def check_shard(chosen: Layout) -> None:
    if chosen.world == 1 or (chosen.branch and chosen.cfg == 1):
        raise ParallelError("--shard-weights needs processes that hold the same weights: launch "
                            "several (with --parallel cfg, sequence, or branch on 6)")
