"""Rank-aware runner for ``cgan_per_label``: one G/D pair per label, labels spread over ranks.

A workload never sees ranks, so the per-label layout of Lupo Pasini et al. (arXiv 2102.10485)
lives here. :func:`assign_labels` maps every label to the ranks that train it:

* ``world ≤ #labels``: label ℓ → rank ℓ mod world (a rank trains its pairs interleaved,
  one step of each in turn, so all progress concurrently);
* ``world > #labels``: the ranks split into one group per label (rank r → label r mod L) and
  each group trains its pair data-parallel (DDP over that group's process group).

Every rank creates every label's process group in the same order (``new_group`` is a
collective over the default group); afterwards the leader of each group sends its generator
to rank 0 with ``gather_object``. ``scidl study cgan_per_label`` compares it with one
conditional GAN.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field

from scidl.runtime.ddp import DDPModule
from scidl.runtime.dist import unwrap_model
from scidl.workloads.cgan_per_label.data import N_LABELS, load_images
from scidl.workloads.cgan_per_label.nets import GANPair, Generator
from scidl.workloads.cgan_per_label.workload import CGANConfig


class PerLabelRunConfig(BaseModel):
    """Budget of a per-label run (and of the conditional baseline it is compared with)."""

    model_config = ConfigDict(extra="forbid")

    model: CGANConfig = Field(default_factory=CGANConfig, description="models and data")
    steps: int = Field(300, ge=1, description="optimizer steps per label pair")
    batch_size: int = Field(64, ge=1, description="per-rank batch size")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas")
    seed: int = Field(0, description="data split, initialisation and sampling seed")


def assign_labels(labels: Sequence[int], world: int) -> dict[int, list[int]]:
    """``{label: [ranks training it]}`` (see the module docstring)."""
    labels = list(labels)
    if world <= len(labels):
        return {lab: [i % world] for i, lab in enumerate(labels)}
    return {lab: [r for r in range(world) if r % len(labels) == i] for i, lab in enumerate(labels)}


def _init_pair(spec: PerLabelRunConfig, label: int) -> GANPair:
    with torch.random.fork_rng():  # identical on every rank of the label's group
        torch.manual_seed(spec.seed * 1000 + label)
        return GANPair(spec.model.z_dim, spec.model.hidden)


def per_label_worker(rank: int, world: int, spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Train this rank's label pairs; call on all ranks of an initialised default group.

    Returns ``train_s`` (this rank's training-loop seconds), its labels, a parameter
    checksum per label, and on rank 0 the generators of all labels as state dicts.
    """
    spec = PerLabelRunConfig.model_validate(spec_dict)
    m = spec.model
    Xtr, ytr, _, _ = load_images(spec.seed, m.test_fraction, m.labels)
    layout = assign_labels(m.labels, world)
    groups = {lab: dist.new_group(ranks) for lab, ranks in layout.items()}  # all ranks, in order
    mine = [lab for lab, ranks in layout.items() if rank in ranks]
    pairs: dict[int, torch.nn.Module] = {}
    index: dict[int, torch.Tensor] = {}
    for lab in mine:
        pair = _init_pair(spec, lab)
        ranks = layout[lab]
        pairs[lab] = DDPModule(pair, process_group=groups[lab]) if len(ranks) > 1 else pair
        idx = torch.nonzero(ytr == lab).squeeze(1)
        index[lab] = idx[ranks.index(rank) :: len(ranks)]  # shard within the group
    opts = {
        lab: torch.optim.Adam(p.parameters(), lr=spec.lr, betas=spec.betas)
        for lab, p in pairs.items()
    }
    gen = torch.Generator().manual_seed(spec.seed * 7919 + rank)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(spec.steps):
        for lab in mine:  # one step of each pair in turn
            idx = index[lab]
            b = idx[torch.randint(len(idx), (spec.batch_size,), generator=gen)]
            z = torch.randn(spec.batch_size, m.z_dim, generator=gen)
            ld, lg = pairs[lab](Xtr[b], ytr[b], z)
            opts[lab].zero_grad()
            (ld + lg).backward()
            opts[lab].step()
    train_s = time.perf_counter() - t0
    payload = {
        lab: _plain(pairs[lab]).G.state_dict() for lab in mine if layout[lab][0] == rank
    }
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(payload, gathered, dst=0)
    gens: dict[int, Any] | None = None
    if gathered is not None:  # numpy: tensors through a multiprocessing queue share fds
        gens = {lab: {k: v.numpy().copy() for k, v in sd.items()}
                for part in gathered for lab, sd in part.items()}
    checks = {lab: float(sum(p.detach().double().sum() for p in _plain(pairs[lab]).parameters()))
              for lab in mine}
    return {"rank": rank, "labels": mine, "train_s": train_s, "checksums": checks,
            "generators": gens}


def _plain(m: torch.nn.Module) -> GANPair:
    inner = unwrap_model(m)
    assert isinstance(inner, GANPair)
    return inner


@dataclass
class PerLabelResult:
    """Outcome of :func:`run_per_label`."""

    generators: dict[int, Generator]
    train_s: float  # slowest rank's training loop
    wall_s: float  # including process start-up
    per_rank: list[dict[str, Any]]


def run_per_label(spec: PerLabelRunConfig, nproc: int, timeout: float = 600.0) -> PerLabelResult:
    """Spawn ``nproc`` gloo processes running :func:`per_label_worker`; collect generators."""
    from scidl.runtime.launch import run_distributed

    t0 = time.perf_counter()
    out = run_distributed(per_label_worker, nproc, spec.model_dump(mode="json"), timeout=timeout)
    wall = time.perf_counter() - t0
    gens = {}
    for lab, sd in out[0]["generators"].items():
        g = Generator(spec.model.z_dim, spec.model.hidden)
        g.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
        gens[int(lab)] = g.eval()
    return PerLabelResult(gens, max(r["train_s"] for r in out), wall, out)


def train_conditional(spec: PerLabelRunConfig) -> tuple[GANPair, float]:
    """One conditional pair with the same total budget: #labels × steps steps of the same
    batch size over all labels' data. Returns the pair and its training seconds."""
    m = spec.model
    Xtr, ytr, _, _ = load_images(spec.seed, m.test_fraction, m.labels)
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        pair = GANPair(m.z_dim, m.hidden, n_cond=N_LABELS)
    opt = torch.optim.Adam(pair.parameters(), lr=spec.lr, betas=spec.betas)
    gen = torch.Generator().manual_seed(spec.seed * 7919)
    t0 = time.perf_counter()
    for _ in range(spec.steps * len(m.labels)):
        b = torch.randint(len(Xtr), (spec.batch_size,), generator=gen)
        z = torch.randn(spec.batch_size, m.z_dim, generator=gen)
        ld, lg = pair(Xtr[b], ytr[b], z)
        opt.zero_grad()
        (ld + lg).backward()
        opt.step()
    return pair.eval(), time.perf_counter() - t0
