"""``topk_adam``: Adam with a frozen variance and an error-compensated top-k update.

The method of 1-bit Adam (Tang, Gan, Rajbhandari, Lian, Liu, Zhang & He, ICML 2021;
DeepSpeed's ``OnebitAdam``), with layer-wise top-k (and error feedback) as the compressor
instead of the sign: Adam's second moment v becomes stable early in training, so after
a short dense warm-up it is frozen, and the update m/(√v̂+ε) is then a *linear* function
of the momentum — error-compensated compression of a linear quantity keeps Adam's
convergence (their Theorem 1). 0/1 Adam (Lu, Li, Zhang, Yan, Xu & He, ICLR 2023) refines
the same idea (adaptive freezing, local steps); SciDL implements the 1-bit Adam schedule.

Per bucket, on every rank (β1, β2, ε = ``comm.adam_beta1/beta2/eps``; T =
``comm.adam_freeze_steps``):

* steps t ≤ T (dense warm-up): ḡ = (1/p)·Σ_r g_r by allreduce, then exactly Adam:
  m ← β1·m + (1−β1)·ḡ, v ← β2·v + (1−β2)·ḡ², result = m̂/(√v̂ + ε) with the usual bias
  corrections;
* steps t > T (compressed): v̂ = v/(1−β2^T) frozen, D = √v̂ + ε;
  a_r = e_r + (β1·m + (1−β1)·g_r)/D (this rank's Adam update plus its residual),
  S = top-k(|a_r|) per parameter — selected by *update* magnitude, which is what Adam's
  per-coordinate scaling makes comparable across coordinates;
  e_r ← a_r − a_S; result = (1/p)·Σ_r a_S^(r) (the ``topk`` protocol, any
  ``sparse_collective``); m ← result·D (the momentum every rank shares, as in 1-bit Adam).

Composition with the optimizer: the strategy returns the Adam update direction, so the
optimizer must be plain SGD (``optim.name=sgd optim.momentum=0``) with the Adam learning
rate: ``w ← w − lr·(result + wd·w)`` — ``optim.weight_decay`` is then AdamW's decoupled
decay. Other optimizers, SGD momentum and ``train.clip_grad_norm`` are rejected at
load time (``scidl.config``). m and v are optimizer state: a skipped step (non-finite
gradients) leaves them as they were (updates are committed in ``end_step``) and only
clears the residuals; ``state_dict`` carries m, v, e and the step count.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from scidl.comm.buckets import Bucket, FlatStore
from scidl.comm.topk import TopK


class TopKAdam(TopK):
    """Frozen-variance Adam whose update is sent as error-compensated top-k."""

    name = "topk_adam"
    description = ("Adam with variance frozen after a dense warm-up and its update sent as "
                   "error-compensated top-k (1-bit Adam's method with a top-k compressor)")
    owns_optimizer_state: ClassVar[str | None] = "adam"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.m = FlatStore()
        self.v = FlatStore()
        self.adam_steps = 0  # dense Adam steps applied (bias correction, freeze point)
        self._pending: dict[int, tuple[Bucket, torch.Tensor, torch.Tensor | None]] = {}
        self._skipped = False

    def _dense_steps(self) -> int:
        return max(self.cfg.adam_freeze_steps, self.cfg.warmup_steps)

    def _keeps_residual(self) -> bool:
        return True

    def _denominator(self, bucket: Bucket) -> torch.Tensor:
        """√v̂ + ε with v̂ the bias-corrected second moment frozen at the warm-up's end."""
        t = max(self.adam_steps, 1)
        v = self.v.get(bucket)
        return v.div(1 - self.cfg.adam_beta2 ** t).sqrt_().add_(self.cfg.adam_eps)

    def _accumulate(self, bucket: Bucket) -> torch.Tensor:
        b1 = self.cfg.adam_beta1
        local = self.m.get(bucket).mul(b1).add_(bucket.buffer, alpha=1 - b1)
        local.div_(self._denominator(bucket))
        return self.residuals.get(bucket).add_(local)

    def _finish(self, bucket: Bucket, out: torch.Tensor) -> torch.Tensor:
        if not bool(torch.isfinite(out.sum())):  # the step is skipped on every rank
            return out
        b1, b2 = self.cfg.adam_beta1, self.cfg.adam_beta2
        if self.modes.get(bucket.index) == "warmup":  # dense Adam, bias-corrected
            t = self.adam_steps + 1
            m = self.m.get(bucket).mul(b1).add_(out, alpha=1 - b1)
            v = self.v.get(bucket).mul(b2).addcmul_(out, out, value=1 - b2)
            self._pending[bucket.index] = (bucket, m, v)
            denom = v.div(1 - b2 ** t).sqrt_().add_(self.cfg.adam_eps)
            return out.copy_(m).div_(1 - b1 ** t).div_(denom)
        self._pending[bucket.index] = (bucket, out.mul(self._denominator(bucket)), None)
        return out

    def end_step(self) -> dict[str, float]:
        self.drain()
        if not self._skipped:
            warm = False
            for bucket, m, v in self._pending.values():
                self.m.get(bucket).copy_(m)
                if v is not None:
                    self.v.get(bucket).copy_(v)
                    warm = True
            self.adam_steps += int(warm)
        self._pending.clear()
        self._skipped = False
        return super().end_step()

    def on_skipped_step(self) -> None:
        self._skipped = True
        super().on_skipped_step()

    def reset_state(self) -> None:
        """Residuals only: m and v are the optimizer's state, untouched by a skipped step."""
        self.residuals.clear()
        self._pending.clear()

    def _nonfinite(self, bucket: Bucket) -> None:
        self.residuals.get(bucket).zero_()

    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out.update(m=self._by_position(self.m.pieces()), v=self._by_position(self.v.pieces()),
                   adam_steps=self.adam_steps)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.m.load_pieces(self._by_id(state.get("m", {})))
        self.v.load_pieces(self._by_id(state.get("v", {})))
        self.adam_steps = int(state.get("adam_steps", 0))

    def report(self) -> dict[str, Any]:
        out = super().report()
        out.update(adam_freeze_steps=self.cfg.adam_freeze_steps, adam_steps=self.adam_steps)
        return out

