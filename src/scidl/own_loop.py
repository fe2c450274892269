"""``scidl.setup``: SciDL's data parallelism inside a training loop of your own.

::

    model, optimizer, loader = scidl.setup(model, optimizer, loader, comm="powersgd")
    for epoch in range(epochs):
        for x, y in loader:                 # this rank's shard, reshuffled every epoch
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()  # gradients reduced by the comm strategy
            optimizer.step()

Run the script with ``torchrun --nproc-per-node N script.py``, under ``srun`` or
``mpirun`` (the launcher's variables are read as ``scidl train`` reads them), or with
plain ``python`` (one process). :func:`setup` initialises the default process group
from the environment when none exists yet (one process: a one-member gloo group), moves
the model to this process's device and wraps it in ``DistributedDataParallel`` over all
ranks with the chosen communication strategy installed as its hook (the same
``apply_ddp`` the trainer uses), and rebuilds the loader over a ``DistributedSampler``
with the same batch size (per rank), collate function and workers. The optimizer is
returned as it is: its parameters are the model's, moved in place.

Call ``torch.distributed.destroy_process_group()`` at the end of the script (or let the
process exit).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler

from scidl.comm.config import CommConfig

__all__ = ["Prepared", "ShardedLoader", "setup"]


class Prepared(NamedTuple):
    """What :func:`setup` returns: unpack it as ``model, optimizer, loader``."""

    model: DistributedDataParallel
    optimizer: torch.optim.Optimizer | None
    loader: DataLoader | None


class ShardedLoader(DataLoader):
    """A DataLoader over a ``DistributedSampler`` that calls ``set_epoch`` by itself: every
    ``iter()`` starts the next epoch (a new shuffle, the same on every rank)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.epoch = 0
        super().__init__(*args, **kwargs)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return super().__iter__()


def _strategy(comm: str | CommConfig | Any) -> Any:
    from scidl.comm import build_strategy
    from scidl.comm.base import CommStrategy

    if isinstance(comm, CommStrategy):
        return comm
    cfg = comm if isinstance(comm, CommConfig) else CommConfig(strategy=str(comm))
    return build_strategy(cfg)


def shard_loader(loader: DataLoader, rank: int, world: int, seed: int = 0) -> ShardedLoader:
    """``loader`` rebuilt over a ``DistributedSampler`` (same batch size per rank, collate
    function, workers; shuffled iff ``loader`` shuffles)."""
    if isinstance(loader.dataset, IterableDataset):
        raise TypeError("scidl.setup: an IterableDataset cannot be sharded by a sampler; "
                        "shard it yourself (torch.distributed.get_rank()) and pass loader=None")
    if loader.batch_size is None:
        raise TypeError("scidl.setup: the loader has a custom batch_sampler; pass a "
                        "DataLoader built with batch_size (it is used per rank)")
    sampler: DistributedSampler[Any] = DistributedSampler(
        loader.dataset, num_replicas=world, rank=rank, seed=seed, drop_last=loader.drop_last,
        shuffle=isinstance(loader.sampler, RandomSampler))
    return ShardedLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler,
        collate_fn=loader.collate_fn, num_workers=loader.num_workers,
        pin_memory=loader.pin_memory, drop_last=loader.drop_last, timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn, multiprocessing_context=loader.multiprocessing_context,
        persistent_workers=loader.persistent_workers,
        prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
    )


def setup(model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
          loader: DataLoader | None = None, *, comm: str | CommConfig | Any = "dense",
          device: str = "auto", backend: str = "auto",
          find_unused_parameters: bool = False, seed: int = 0,
          timeout_s: float = 600.0) -> Prepared:
    """Make ``model``, ``optimizer`` and ``loader`` data-parallel for a loop of your own.

    Args:
        model: the network, built identically on every rank (seed before building it).
        optimizer: an optimizer over ``model``'s parameters (returned unchanged).
        loader: a map-style DataLoader; its ``batch_size`` is the batch of each rank.
        comm: gradient communication: a strategy name (``"dense"``, ``"powersgd"``,
            ``"topk"``, ... see ``scidl.comm.strategy_names()``), a
            :class:`~scidl.comm.config.CommConfig` with its settings, or a strategy object.
        device: ``auto`` (this process's GPU when there is one, else CPU), ``cpu``, ``cuda``.
        backend: ``auto`` (NCCL on CUDA, gloo on CPU), ``gloo`` or ``nccl``.
        find_unused_parameters: DDP's search for parameters that get no gradient in a
            step (needed when the forward pass skips trainable parameters; frozen
            ``requires_grad=False`` parameters need no search).
        seed: the sampler's shuffling seed (the same on every rank).
        timeout_s: collective timeout when :func:`setup` creates the process group.

    Returns:
        ``(model, optimizer, loader)``: the model inside ``DistributedDataParallel``
        (the strategy object is ``model.comm_strategy``, its counters in ``.report()``),
        the optimizer (each ``optimizer.step()`` now also ends the strategy's step; with
        ``optimizer=None`` call ``model.comm_strategy.end_step()`` after each update),
        and the sharded loader (None where None was passed).
    """
    from scidl.parallel.ddp import apply_ddp
    from scidl.parallel.plan import ParallelDims
    from scidl.runtime.dist import init_process_group, pick_backend, pick_device
    from scidl.runtime.env import detect_launch

    launch = detect_launch()
    dev = pick_device(device, launch.local_rank)
    if not dist.is_initialized():
        init_process_group(launch, pick_backend(backend, dev), timeout_s)
    rank, world = dist.get_rank(), dist.get_world_size()
    strategy = _strategy(comm)
    mesh = ParallelDims(world, 1).build_mesh(dev.type)
    ddp = apply_ddp(model.to(dev), mesh, strategy, device=dev, find_unused=find_unused_parameters)
    ddp.comm_strategy = strategy
    if optimizer is not None:  # each optimizer step closes the strategy's step (warm-up, lag)
        optimizer.register_step_post_hook(lambda *_: strategy.end_step())
    sharded = shard_loader(loader, rank, world, seed) if loader is not None else None
    return Prepared(ddp, optimizer, sharded)
