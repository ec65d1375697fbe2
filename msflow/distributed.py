"""Data-parallel training on several processes, GPUs or nodes, with ``torch.distributed`` under ``torchrun``.

One process per device. ``torchrun`` (or SLURM's ``srun`` running it) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`context` reads them, joins the process group (NCCL for CUDA, gloo for
the CPU) with a timeout on every collective, and pins each process to its GPU. Without them the context is a
single process and nothing changes.

The division of work keeps a run the same whatever the number of processes: every process draws the whole global
batch (its images, noise and times, from the step's own generator) and trains on its contiguous share, and
:class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients, so the learning-rate schedule, the data
order and (up to float rounding) the weights are those of one process with the same config and seed. The EMA, the
validation that selects the checkpoint, the checkpoints, the results files and the progress bar belong to the main
process (rank 0) alone.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

TIMEOUT_ENV = "MSFLOW_DIST_TIMEOUT"
"""The environment variable that sets how many seconds a collective may wait for the other processes before the run
fails, 1800 by default. A process that died thus ends the run with an error, not a hang."""


@dataclass(frozen=True)
class Context:
    """The processes of a run.

    Attributes:
        world: how many processes train together.
        rank: this process's number, 0 for the main process.
        local_rank: its number on its node (its GPU's index).
    """

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files."""
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the processes (itself for one)."""
        if self.world == 1:
            return value
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world

    def gather(self, obj) -> list:
        """``obj`` of every process, in rank order."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mine(self, batch: int) -> bool:
        """Whether this process reads batch number ``batch`` of a split (the processes take the batches in turn)."""
        return batch % self.world == self.rank

    def merge(self, parts: dict) -> dict:
        """The union of every process's ``{key: value}`` (itself for one)."""
        return parts if self.world == 1 else {k: v for part in self.gather(parts) for k, v in part.items()}


def context(device: torch.device) -> Context:
    """The processes this one trains with, from torchrun's environment, joining their group on first use.

    Raises:
        ValueError: asked for more processes on a node than it has GPUs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {local_rank} of this node has no GPU: the node has {torch.cuda.device_count()}; "
                             "start at most that many processes per node (torchrun --nproc-per-node)")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        timeout = _dt.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return Context(world, rank, local_rank)


def join(device: torch.device) -> tuple[Context, torch.device]:
    """The processes this one works with (:func:`context`) and this process's device: its own GPU
    (``cuda:<local_rank>``) when the run is on CUDA under torchrun, else ``device``."""
    ctx = context(device)
    return ctx, torch.device("cuda", ctx.local_rank) if device.type == "cuda" and ctx.world > 1 else device
