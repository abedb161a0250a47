"""Training on several processes: PyTorch's DistributedDataParallel, launched by `torchrun`.

`torchrun --nproc_per_node=N -m ssl_core train ...` starts N copies of the CLI and tells each its
RANK, WORLD_SIZE and LOCAL_RANK (and, across machines, the rendezvous). Each copy runs the same
engine: gloo between CPU processes, NCCL between GPUs. Without torchrun none of this is touched.

What a run over N processes means here:
- `batch_size` stays the batch of one optimisation step, summed over the processes (as in PyTorch's
  ImageNet example): each process takes `batch_size // N` images of it, so the learning rate and
  the schedule mean what they mean in a single process.
- Each epoch's shuffled order is the same on every process (same seed); each process takes its
  shard of it as `DistributedSampler(drop_last=True)` would, on the tensors, no DataLoader.
- Gradients are averaged by DDP; the step's loss is averaged across processes before the
  finite check, so every process stops on the same step when a run diverges.
- A stop (SIGINT/SIGTERM, or the app's stop button) on any process is agreed at the next step, so
  all end together; only rank 0 evaluates, reports and writes the checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist

from .errors import UserError

# Long enough for rank 0 to decode CIFAR-10 or evaluate a ResNet-18 while the others wait.
TIMEOUT = timedelta(minutes=30)


class DistributedError(UserError, ValueError):
    """A torchrun launch this run cannot use as asked; the message says what to change."""


@dataclass(frozen=True)
class Group:
    """This process's place in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int  # index on this machine: the GPU it drives
    backend: str  # gloo | nccl

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True inside a torchrun launch (it sets these for every process it starts), even of one
    process: `--nproc_per_node=1` on a one-GPU machine runs the DDP and NCCL path too."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def join(device: str = "auto") -> Optional[Group]:
    """Join the process group torchrun prepared (once per process); None outside torchrun.

    NCCL when this run trains on CUDA (`device` auto or cuda with a GPU present), each process on
    GPU LOCAL_RANK; gloo otherwise.
    """
    if not launched_by_torchrun():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if not dist.is_initialized():
        if cuda and local_rank >= torch.cuda.device_count():
            raise DistributedError(f"torchrun started more processes on this machine than it has GPUs "
                                   f"({torch.cuda.device_count()}): use --nproc_per_node={torch.cuda.device_count()}")
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return Group(dist.get_rank(), dist.get_world_size(), local_rank, str(dist.get_backend()))


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_of(group: Group, device: torch.device) -> torch.device:
    """The device a process trains on: its own GPU under NCCL, the CPU under gloo."""
    return torch.device("cuda", group.local_rank) if device.type == "cuda" else device


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of one epoch's order, as `DistributedSampler(drop_last=True)` deals it:
    the tail that does not divide evenly is dropped, then every `world_size`-th index from `rank`."""
    total = len(order) // world_size * world_size
    return order[rank:total:world_size]


def batch_per_process(batch_size: int, world_size: int) -> int:
    if batch_size < world_size:
        raise DistributedError(f"batch size {batch_size} is smaller than the {world_size} processes sharing it; "
                         f"use at least {world_size}")
    return batch_size // world_size


def mean(x: torch.Tensor) -> torch.Tensor:
    """The average of a (detached) tensor over all processes."""
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / dist.get_world_size()


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every process when `flag` is True on any: how a stop on one rank reaches the others."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each process the gradient of its own rows, summed over the
    processes (all_reduce, then its slice): gloo has no reduce_scatter, and every process computes
    the same loss from the gathered rows, so the sum is what DDP's averaging turns into the
    single-process gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.rows = len(x)
        return gather(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows of `x` (the same number each), in rank order, differentiable: SimCLR's
    NT-Xent then sees the negatives of the whole batch, not only this process's share."""
    return _GatherWithGrad.apply(x)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows of `x` (the same number each), in rank order; no gradient (labels)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def describe(group: Group, batch_size: int, task: str) -> dict:
    """What a run over several processes was, for the card and the start message (world_size,
    backend and the learning rate are the config's own fields)."""
    per = batch_per_process(batch_size, group.world_size)
    out = {
        "batch_per_process": per,
        "effective_batch": per * group.world_size,
        "lr_rule": "as given: batch_size is the batch of one step over all processes, so no scaling",
        "sharding": "DistributedSampler semantics (same shuffled order on every rank, drop_last)",
        "batchnorm": "per process (not synchronised)",
    }
    if task == "simclr":
        out["nt_xent_negatives"] = (f"gathered from all {group.world_size} processes with gradients: "
                                    f"{2 * per * group.world_size - 2} negatives per anchor")
    return out
