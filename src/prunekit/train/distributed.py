"""Multi-process (``torchrun``) support: process-group setup, per-rank batch sharding, reductions.

Every rank iterates the same loader with the same seed, so all ranks see the same global batch;
each rank then keeps the strided slice ``batch[rank::world_size]``. Across a whole epoch that is
exactly a strided slice of the shuffled permutation (what ``DistributedSampler`` does), it works
with any loader, and it keeps the global batch size and the number of steps — hence the LR
schedule — identical to a single-process run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from prunekit.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files and logs."""
        return self.rank == 0

    def rank_device(self) -> int | None:
        """The local rank whose GPU this process uses (``None``: not distributed)."""
        return self.local_rank if self.enabled else None


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def setup_distributed(prefer_cuda: bool | None = None) -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (no-op otherwise).

    Args:
        prefer_cuda: use NCCL on CUDA (else gloo); ``None`` → CUDA when available.

    Returns:
        This process's :class:`DistInfo`.
    """
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    use_cuda = torch.cuda.is_available() if prefer_cuda is None else prefer_cuda
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def cleanup_distributed() -> None:
    """Leave the process group if one is active.

    All ranks meet at a barrier first: a rank that tears down its gloo connections while a
    peer is still finishing (rank 0 writes checkpoints and logs after the last collective) can
    make the peer abort ("terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        try:
            if dist.get_backend() == "gloo":  # bounded: a crashed peer must not hang us
                dist.monitored_barrier(timeout=timedelta(seconds=60))
            else:
                dist.barrier()
        except RuntimeError:
            pass  # a peer is gone: leave anyway
        finally:
            dist.destroy_process_group()


def shard(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's strided slice of a global batch (the batch itself when not distributed)."""
    return tensor[info.rank :: info.world_size] if info.enabled else tensor


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place and return it."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if info.enabled:
        dist.barrier()
