"""The processes of a parallel edit (`torchrun --nproc_per_node N -m vera edit --parallel ...`):
process group set-up from torchrun's environment, which process writes, and how the writer's
inputs reach the others."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..model.parallel import Layout, ParallelError, join_group, layout, leave_group

TIMEOUT_ENV = "VERA_PARALLEL_TIMEOUT"  # seconds a process waits for the others (default 600)


@dataclass
class Processes:
    """This process's place in the run: the layout, its rank and the device it computes on. Rank
    0 reads the source, encodes, and writes the files; the others only sample."""

    layout: Layout
    rank: int = 0
    device: torch.device | None = None

    @property
    def writer(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.layout.world > 1

    def share(self, value):
        """Rank 0's `value` (any picklable object, tensors moved to the CPU) on every process."""
        if not self.parallel:
            return value
        box = [value if self.writer else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Leave the run (the model must be dropped by now: see `leave_group`)."""
        if self.parallel:
            leave_group()


def start(mode: str | None, num_heads: int, device: str = "auto") -> Processes:
    """Join the run torchrun started (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR in the
    environment) and choose the layout; one process without --parallel (or with auto) is a plain
    run. NCCL when the processes compute on CUDA, gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        if mode not in (None, "auto"):
            raise ParallelError(f"--parallel {mode} needs several processes: launch with "
                                "torchrun --nproc_per_node N -m vera edit ... (see the README, "
                                "Several GPUs and machines)")
        return Processes(Layout("single", 1))
    chosen = layout(mode or "auto", world, num_heads)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    on_cuda = device != "cpu" and torch.cuda.is_available()
    place = torch.device("cuda", local) if on_cuda else torch.device("cpu")
    if on_cuda:
        torch.cuda.set_device(place)
    seconds = float(os.environ.get(TIMEOUT_ENV, "600"))
    join_group("nccl" if on_cuda else "gloo", timeout=datetime.timedelta(seconds=seconds))
    return Processes(chosen, rank, place)
