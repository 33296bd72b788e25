"""Data-parallel training on several processes with ``torch.distributed`` (gloo on CPU, NCCL on CUDA).

``torchrun --nproc-per-node N -m uadlab.cli train ...`` starts N copies of the same training; each
copy (a *rank*) sees the environment variables torchrun sets (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR``...). :func:`uadlab.training.train` (through :func:`uadlab.training.fit.fit`) then:

- builds the same initial weights on every rank (same seed) and the same shuffled batches (the
  epoch's generator is seeded from ``(seed, epoch)`` alone);
- gives each rank every N-th sample of each batch (:func:`shard`), so the *global* batch is the
  profile's ``batch_size`` as with one process; erasing and the latent sampling draw from generators
  seeded per rank (``(seed, epoch, rank)``), so ranks do not repeat each other's draws;
- averages the gradients over the ranks after each backward pass, each rank weighted by its share of
  the batch (:func:`average_gradients`: the gradient of the global batch mean, as one process would
  compute it), and averages BatchNorm's running statistics after each epoch
  (:func:`average_buffers`), so that every rank holds identical weights, validates identically and
  takes the same early-stopping decision;
- lets rank 0 alone lock the run folder and write ``config.yaml``, ``checkpoint.pt`` and
  ``history.csv``; a resume loads the same checkpoint on every rank.

What differs from one process: BatchNorm normalises each rank's shard with that shard's statistics
(as ``DistributedDataParallel`` without ``SyncBatchNorm`` does), and the erasing and latent draws
differ, so results match one process only within a tolerance (``tests/speed/test_distributed.py``), not
bit for bit. The gradients are averaged with one ``all_reduce`` per parameter tensor rather than
through ``DistributedDataParallel``, because the models compute their loss in
``model.training_loss`` rather than in ``forward``, which DDP's wrapper needs to see.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Context", "setup", "launched_rank", "shard", "average_gradients", "average_buffers", "all_sum"]


class Context:
    """Rank and world size of this process (``rank 0 of 1`` without ``torchrun``).

    Attributes:
        rank: this process's index, 0 to ``world_size - 1``.
        world_size: processes training together.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, device: torch.device | None = None) -> None:
        self.rank, self.world_size = rank, world_size
        self.device = torch.device("cpu") if device is None else device

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (no-op with one process)."""
        if self.active:
            dist.barrier()


def launched_rank() -> int:
    """This process's rank as torchrun announces it (``RANK``; 0 without torchrun), before :func:`setup`."""
    value = os.environ.get("RANK", "").strip()
    return int(value) if value.isdigit() and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else 0


def setup(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group torchrun describes (once per process) and pick this rank's device.

    Args:
        device: the configured device; on CUDA each rank takes ``cuda:LOCAL_RANK``.

    Returns:
        The :class:`Context` and the device this rank trains on.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1 or not dist.is_available():
        return Context(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), device), device


def shard(index: np.ndarray, context: Context) -> np.ndarray:
    """This rank's samples of a batch: every ``world_size``-th index, starting at ``rank``.

    >>> shard(np.arange(5), Context(1, 2))
    array([1, 3])
    """
    return index[context.rank::context.world_size]


def average_gradients(model: torch.nn.Module, weight: float, context: Context) -> None:
    """Replace each gradient by the sum over ranks of ``weight * gradient``.

    With ``weight`` = this rank's share of the global batch, the result is the gradient of the mean
    loss over the whole batch. Parameters without a gradient (a rank with an empty shard) count as
    zero.
    """
    if not context.active:
        return
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        parameter.grad.mul_(weight)
        dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)


def average_buffers(model: torch.nn.Module, context: Context) -> None:
    """Average floating-point buffers (BatchNorm running mean and variance) over the ranks."""
    if not context.active:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(context.world_size)


def all_sum(values: list[float], context: Context) -> list[float]:
    """``values`` summed over the ranks (float64)."""
    if not context.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()
