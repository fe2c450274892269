"""Sparse embedding gradients: dense for DDP and the optimizer, or sparse end to end.

``nn.Embedding(sparse=True)`` (and ``EmbeddingBag``) produce a sparse COO gradient: the
rows of the looked-up indices. Two paths:

* **native** (the ``dense`` strategy): DDP reduces the sparse tensor with the backend's
  sparse allreduce (an all-gather of indices and rows), exactly as DDP without a hook.
  Optimizers that cannot take sparse gradients get it densified afterwards
  (:func:`densify_grads`).
* **sparse-as-dense** (every compression strategy, as Horovod's ``sparse_as_dense``):
  right after autograd accumulates the sparse gradient, it is scattered into a dense
  buffer with one ``index_add_`` (:class:`SparseAsDense`), so DDP, the strategy and the
  optimizer all see an ordinary dense gradient. DDP decides at construction whether a
  parameter's gradient is sparse (from ``module.sparse``); :func:`ddp_sees_dense` makes
  it build dense buckets for the converted parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

_SPARSE_MODULES = (nn.Embedding, nn.EmbeddingBag)


def sparse_modules(module: nn.Module) -> list[nn.Embedding | nn.EmbeddingBag]:
    """The submodules whose weight gets a sparse gradient (``sparse=True`` embeddings)."""
    return [m for m in module.modules() if isinstance(m, _SPARSE_MODULES) and m.sparse]


def densify(grad: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Dense copy of a sparse COO ``grad``: one ``index_add_`` of its rows (duplicates
    summed, no coalescing needed) into ``out`` (zeroed first) or a new tensor."""
    if not grad.is_sparse:
        return grad
    out = torch.zeros(grad.shape, dtype=grad.dtype, device=grad.device) if out is None else out.zero_()
    if grad.sparse_dim() != 1:  # not an embedding's row gradient
        return out.copy_(grad.to_dense())
    return out.index_add_(0, grad._indices()[0], grad._values())


def densify_grads(params: Iterable[torch.Tensor],
                  buffers: dict[int, torch.Tensor] | None = None) -> None:
    """Replace every sparse ``.grad`` of ``params`` by its dense equivalent (written into
    ``buffers[id(param)]``, kept from call to call, when a dict is given)."""
    for p in params:
        g = p.grad
        if g is None or not g.is_sparse:
            continue
        out = None
        if buffers is not None:
            out = buffers.get(id(p))
            if out is None or out.shape != g.shape or out.dtype != g.dtype:
                out = buffers[id(p)] = torch.empty(g.shape, dtype=g.dtype, device=g.device)
        p.grad = densify(g, out)


class SparseAsDense:
    """Turn the sparse gradients of ``module``'s sparse embeddings dense as they arrive.

    A post-accumulate-grad hook per weight scatters the sparse gradient into a dense
    buffer kept for that weight (allocated once, zeroed and filled each step). It runs
    inside autograd's accumulation, before DDP's own hook reads the gradient. With
    gradient accumulation the later micro-batches add into the dense gradient directly.
    """

    def __init__(self, module: nn.Module) -> None:
        self.modules = sparse_modules(module)
        self._buffers: dict[int, torch.Tensor] = {}
        self._handles = [m.weight.register_post_accumulate_grad_hook(self._densify)
                         for m in self.modules]

    def _densify(self, p: torch.Tensor) -> None:
        g = p.grad
        if g is None or not g.is_sparse:
            return
        buf = self._buffers.get(id(p))
        if buf is None or buf.shape != g.shape or buf.device != g.device:
            buf = self._buffers[id(p)] = torch.empty(g.shape, dtype=g.dtype, device=g.device)
        p.grad = densify(g, buf)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@contextlib.contextmanager
def ddp_sees_dense(sad: SparseAsDense | None) -> Iterator[None]:
    """While DDP is built, present the converted embeddings as dense (``sparse=False``)."""
    mods = sad.modules if sad is not None else []
    for m in mods:
        m.sparse = False
    try:
        yield
    finally:
        for m in mods:
            m.sparse = True


def optimizer_takes_sparse(opt: torch.optim.Optimizer, clip: float | None = None) -> bool:
    """Whether ``opt`` applies sparse gradients as they are (torch's sparse-capable
    optimizers without weight decay, no clipping); otherwise the trainer densifies."""
    if clip is not None:
        return False
    if isinstance(opt, torch.optim.SparseAdam):
        return True
    if not isinstance(opt, (torch.optim.SGD, torch.optim.Adagrad)):
        return False
    return all(not g.get("weight_decay") and not g.get("nesterov") and not g.get("foreach")
               for g in opt.param_groups)
