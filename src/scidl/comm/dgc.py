"""``dgc``: Deep Gradient Compression (Lin, Han, Mao, Wang & Dally, ICLR 2018).

Top-k sparsification (the ``topk`` protocol: per-parameter selection, the (count,
finite) agreement, all-gather / rsag / dense switch) with the four pieces that keep
accuracy at 0.1–1 % density:

* **momentum correction** — the strategy applies the momentum, per rank, *before*
  sparsifying, and accumulates the momentum-corrected update rather than the gradient
  (DGC eq. 5)::

      g ← clip(g)                        (local gradient clipping, below)
      u ← m·u + g                        (this rank's momentum, m = comm.momentum)
      v ← v + u                          (the accumulator: what is not sent waits here)
      S = top-k(|v|) per parameter;  send v_S;  v ← v − v_S
      result = (1/p)·Σ_r v_S^(r)         (the update the optimizer applies as-is)

* **momentum factor masking** — u ← u with u_S = 0: an entry that was just sent does
  not keep pushing in the old direction from the stale momentum (DGC §3.2);
* **local gradient clipping** — before it is accumulated, each parameter's local gradient
  norm is clipped to ``comm.clip_norm/√p`` (DGC §3.2: clipping the sum of p gradients to
  c is clipping each to c·p^(−1/2)); applied per parameter, as the reference
  implementation does, since a hook sees one bucket at a time;
* **warm-up** — ``comm.warmup_steps`` dense steps (momentum applied by the strategy),
  then ``comm.density_warmup_steps`` steps at each of 25 %, 6.25 %, 1.5625 %, … of the
  entries until ``comm.density`` (DGC §3.3).

Composition with the optimizer: the strategy owns the momentum, so the optimizer must be
plain SGD (``optim.name=sgd optim.momentum=0``); the result is the momentum-corrected
update, which SGD applies as ``w ← w − lr·(result + wd·w)``. A run config with any
other optimizer, with SGD momentum, or with ``train.clip_grad_norm`` (which would clip
the update rather than the gradient) is rejected at load time with the key to change
(``scidl.config``). Where a bucket goes dense (density > 1/p, the warm-up) everything in
v is sent and u is kept unmasked: the update is then exactly SGD with momentum m.

Mass is conserved per rank: sent + v_new = v_old + m·u_old + clip(g). Non-finite
gradients take ``topk``'s path (every rank returns NaN, the step is skipped) and
``on_skipped_step`` clears u and v.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from scidl.comm.buckets import Bucket, FlatStore
from scidl.comm.topk import TopK


def clip_segments(g: torch.Tensor, segments: list[tuple[int, int]], max_norm: float) -> None:
    """Scale each ``(start, n)`` slice of ``g`` in place so its norm is ≤ ``max_norm``."""
    for start, n in segments:
        seg = g[start : start + n]
        norm = float(seg.norm())
        if norm > max_norm and math.isfinite(norm):
            seg.mul_(max_norm / norm)


class DGC(TopK):
    """Top-k with DGC's momentum correction, factor masking, local clipping and warm-up."""

    name = "dgc"
    description = ("top-k with DGC momentum correction, momentum factor masking, local "
                   "gradient clipping and exponential density warm-up")
    #: the optimizer state this strategy applies itself (the optimizer must not)
    owns_optimizer_state: ClassVar[str | None] = "momentum"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.momenta = FlatStore()

    def _keeps_residual(self) -> bool:
        return True  # the accumulator v is the method

    def _clip(self, bucket: Bucket) -> torch.Tensor:
        g = bucket.buffer
        if self.cfg.clip_norm is not None:
            segments = [(s, m) for _, s, m in bucket.offsets()] or [(0, g.numel())]
            clip_segments(g, segments, self.cfg.clip_norm / math.sqrt(self.world))
        return g

    def _accumulate(self, bucket: Bucket) -> torch.Tensor:
        g = self._clip(bucket)
        u = self.momenta.get(bucket).mul_(self.cfg.momentum).add_(g)
        return self.residuals.get(bucket).add_(u)

    def _sent(self, bucket: Bucket, idx: torch.Tensor | None) -> None:
        if idx is not None:  # momentum factor masking (dense: plain momentum, no mask)
            self.momenta.get(bucket).index_fill_(0, idx, 0.0)

    def _nonfinite(self, bucket: Bucket) -> None:
        super()._nonfinite(bucket)
        self.momenta.get(bucket).zero_()

    def _dense_warmup(self, bucket: Bucket):  # noqa: ANN202 - Future[Tensor]
        """Dense steps: u ← m·u + clip(g), allreduce u/p (SGD with momentum, exactly)."""
        g = self._clip(bucket)
        u = self.momenta.get(bucket).mul_(self.cfg.momentum).add_(g)
        bucket.buffer.copy_(u)
        return self._dense(bucket, bucket.buffer, residual=None, mode="warmup")

    def reset_state(self) -> None:
        super().reset_state()
        self.momenta.clear()

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["momenta"] = self._by_position(self.momenta.pieces())
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.momenta.load_pieces(self._by_id(state.get("momenta", {})))

    def report(self) -> dict[str, Any]:
        out = super().report()
        out.update(momentum=self.cfg.momentum, clip_norm=self.cfg.clip_norm)
        return out
