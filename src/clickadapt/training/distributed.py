"""torch.distributed helpers: one code path for a single process and for ``torchrun`` workers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) job.

    Attributes:
        rank: Global rank (0 in a single process).
        world_size: Number of processes.
        device: Device this process trains on.
    """

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 validates, logs and writes checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True under ``torchrun`` with more than one process."""
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group set up by ``torchrun`` (gloo on CPU, NCCL on GPU), or run alone.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as ``torchrun`` sets them.

    Args:
        device: ``"auto"`` (the process's GPU when CUDA is available, else the CPU), ``"cpu"`` or
            ``"cuda"``.

    Raises:
        ValueError: ``device`` is not one of those, or is ``"cuda"`` where torch sees no GPU.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device 'cuda' asked for, but torch {torch.__version__} sees no CUDA GPU "
            "(a CPU build of torch, or no GPU on this machine): use --device cpu or auto"
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device != "cpu" and torch.cuda.is_available():
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, device=chosen)


def all_reduce_mean(value: float, context: DistributedContext) -> float:
    """Average a scalar over all processes (identity in a single process)."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / context.world_size


def shutdown_distributed(context: DistributedContext) -> None:
    """Leave the process group, if any."""
    if context.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
